"""Adaptive ranking's decision rule, the pure core: scores and record influences in, decisions out, no I/O.

Records are seen in a seeded random order (`seeded_order`: the target's storage blocks shuffled, so an HDF5
file is still read a chunk at a time). At looks of 128, 256, 512, ... records (`look_sizes`: doubling, then
the whole target), every checkpoint still in the race is scored on the same records seen so far and compared
with the current leader (`decide`).

The rule, and the error it controls. Let alpha = 1 - confidence. Look k (k = 0, 1, ...) may spend
alpha_k = alpha * 2^-(k+1), so that the looks together never spend more than alpha, however many there are
(sum_k alpha_k < alpha; a target of any size, known in advance or not). At look k with m checkpoints in the
race, a checkpoint is dropped (fed no further records) when the paired bootstrap of its score minus the
leader's, on the records seen, puts less than alpha_k / (m - 1) of its mass on "not worse than the leader".
The race ends when one checkpoint is left (the winner: every other one is worse at these levels, so its P(best)
among them is at least 1 - alpha_k) or when the records run out (the checkpoints left ran on every record;
they are ranked by their full-target scores, as a full rank would).

The full-target best is lost only if it is dropped at some look: at look k that needs its test against one of
at most m - 1 leaders to reject wrongly, probability at most (m - 1) * alpha_k / (m - 1) = alpha_k; over all
looks at most sum_k alpha_k < alpha. So the adaptive winner equals the full-pass winner with probability at
least the confidence. That holds to the accuracy of the bootstrap (first order, as the intervals do), for
records in a random order; seen records are a sample without replacement from the target, whose spread about
the full-target score is smaller than the bootstrap's (so the rule is conservative there). Not promised:
anything about the order of the checkpoints that were dropped (they stop on fewer records), nor a winner
between checkpoints whose full-target scores are equal (they never separate and run to the end).

Halving the spend at each look front-loads it: most of the saving is in the first looks, and a later look
costs little of the budget. The one-sided mass is read from the normal form of the paired linear bootstrap
(`melep_cli.bootstrap`): its resampled difference has mean `gap` and variance var(influence difference) / n
exactly, and its normal limit resolves levels (alpha_k / (m - 1) can be 10^-4 and below) that 1000 resamples
cannot.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from melep_cli.bootstrap import DEFAULT_CONFIDENCE, DEFAULT_SEED, Estimate
from melep_cli.errors import UsageError

#: Records seen at the first look; each later look doubles it.
FIRST_LOOK = 128

#: Why a checkpoint stopped receiving records (`CheckpointStop.reason`).
WORSE_THAN_LEADER = "worse_than_leader"
WINNER = "winner"
RECORDS_EXHAUSTED = "records_exhausted"
STOP_REASONS = (WORSE_THAN_LEADER, WINNER, RECORDS_EXHAUSTED)


@dataclass(frozen=True)
class AdaptiveSettings:
    """`rank(adaptive=...)`: the `confidence` that the winner is the full-pass winner, the `seed` of the record
    order, and the records of the first look."""

    confidence: float = DEFAULT_CONFIDENCE
    seed: int = DEFAULT_SEED
    first_look: int = FIRST_LOOK

    def __post_init__(self) -> None:
        if not 0.0 < self.confidence < 1.0:
            raise UsageError(
                f"expected a number between 0 and 1 (e.g. 0.95), got {self.confidence!r}", parameter="confidence"
            )
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise UsageError(f"expected a whole number >= 0, got {self.seed!r}", parameter="seed")
        if isinstance(self.first_look, bool) or not isinstance(self.first_look, int) or self.first_look < 2:
            raise UsageError(f"expected a whole number >= 2, got {self.first_look!r}", parameter="first_look")

    @property
    def alpha(self) -> float:
        """The error budget spent over the looks: 1 - confidence."""
        return 1.0 - self.confidence


@dataclass(frozen=True)
class CheckpointStop:
    """When and why one checkpoint stopped: at look `look` (0-based), after `records` records (`reason` one of
    STOP_REASONS). For a drop, the `leader` it was compared with, its one-sided bootstrap mass `p_not_worse` and
    the `threshold` it fell below; for a winner, the largest `p_not_worse` of the others dropped at that look."""

    reason: str
    look: int
    records: int
    leader: str | None = None  # the name of the leader it was compared with
    p_not_worse: float | None = None
    threshold: float | None = None


@dataclass(frozen=True)
class AdaptiveSummary:
    """What an adaptive rank did: its settings, the records seen at each look made, the records run through a
    model in this call (`records_forwarded`, 0 for outputs read from the store) against a full rank's
    (`records_full`: checkpoints x records), and the records the checkpoints' scores used in all
    (`records_used`, whatever the store held)."""

    settings: AdaptiveSettings
    looks: tuple[int, ...]
    records_forwarded: int
    records_full: int
    records_used: int


@dataclass(frozen=True)
class LookDecision:
    """What one look decided: the `leader` (a position in the estimates), the positions `dropped`, each one's
    one-sided mass of not being worse than the leader (`p_not_worse`, 1.0 for the leader), the level per
    comparison (`threshold` = alpha_k / (m - 1)) and whether the race is over (`finished`)."""

    look: int
    leader: int
    dropped: tuple[int, ...]
    p_not_worse: tuple[float, ...]
    threshold: float
    finished: bool


def look_sizes(total: int, first: int = FIRST_LOOK) -> list[int]:
    """Records seen at each look: first, 2 first, 4 first, ... below `total`, then `total` itself."""
    if total < 1:
        return []
    sizes = []
    size = first
    while size < total:
        sizes.append(size)
        size *= 2
    return [*sizes, total]


def look_alpha(alpha: float, look: int) -> float:
    """The error look `look` (0-based) may spend: alpha * 2^-(look+1); every look together spend less than alpha."""
    return alpha * 2.0 ** -(look + 1)


def seeded_order(blocks: Sequence[np.ndarray], seed: int) -> np.ndarray:
    """Record positions in a seeded random order: the storage blocks shuffled, each block's records in a
    seeded shuffle of their own (a chunk is still read whole, once). The same blocks and seed, the same order."""
    rng = np.random.default_rng(seed)
    if not blocks:
        return np.zeros(0, dtype=np.int64)
    order = rng.permutation(len(blocks))
    return np.concatenate([rng.permutation(np.asarray(blocks[i], dtype=np.int64)) for i in order])


def p_not_worse(candidate: Estimate, leader: Estimate, *, lower_is_better: bool) -> float:
    """The paired bootstrap's mass on `candidate` scoring at least as well as `leader` (same records, same rows),
    in its normal form: Phi(-gap / se), gap how much worse the candidate scores, se the resampled difference's
    standard deviation. Equal influences: 1.0 when the scores are equal, else 0.0 or 1.0 by the gap's sign."""
    gap = candidate.value - leader.value if lower_is_better else leader.value - candidate.value
    difference = np.asarray(candidate.influence, dtype=np.float64) - np.asarray(leader.influence, dtype=np.float64)
    n = difference.size
    se = float(np.std(difference)) / math.sqrt(n) if n else 0.0
    if se == 0.0 or not math.isfinite(se):
        return 1.0 if gap <= 0.0 else 0.0
    return 0.5 * math.erfc(gap / se / math.sqrt(2.0))


def decide(
    estimates: Sequence[Estimate],
    *,
    look: int,
    alpha: float,
    lower_is_better: bool = True,
    last: bool = False,
) -> LookDecision:
    """One look over the checkpoints still in the race (`estimates`: their scores on the same records seen so
    far, with influences): drop every one whose mass of not being worse than the leader is below
    alpha_k / (m - 1). The race is over when one is left or at the `last` look (the records ran out)."""
    if not estimates:
        raise UsageError("no estimates to decide on", parameter="estimates")
    values = np.array([estimate.value for estimate in estimates], dtype=np.float64)
    leader = int(np.argmin(values) if lower_is_better else np.argmax(values))
    m = len(estimates)
    threshold = look_alpha(alpha, look) / max(m - 1, 1)
    masses = tuple(
        1.0 if k == leader else p_not_worse(estimate, estimates[leader], lower_is_better=lower_is_better)
        for k, estimate in enumerate(estimates)
    )
    dropped = tuple(k for k, mass in enumerate(masses) if k != leader and mass < threshold)
    finished = last or len(dropped) == m - 1
    return LookDecision(look, leader, dropped, masses, threshold, finished)
