"""How sure a ranking is: a paired bootstrap over target records, the pure core (arrays in, numbers out).

Every checkpoint is scored on the same resampled record sets (Efron & Tibshirani, An Introduction to the
Bootstrap, 1993, ch. 13: percentile intervals), so differences between checkpoints are judged on the same
records. A resample does not recompute the score: it is the linear (influence-function) bootstrap, the
score on all records plus the resample's mean of each record's influence,

    score*(w) = score + (1/n) * sum_i (w_i - 1) * influence_i,     w ~ Multinomial(n, 1/n each),

where influence_i is n times the derivative of the score in record i's weight (`melep(..., influence=True)`).
It agrees with the resampled exact score to first order (tests/test_bootstrap.py checks it against a
recomputing bootstrap on real data) and costs one matrix product per block of resamples instead of one
metric per resample. Record weights are drawn a block at a time: memory stays O(n * (Y + checkpoints)),
never n x B.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from melep_cli.errors import UsageError

#: The defaults of `melep rank`: 1000 resamples, 95% intervals, a fixed seed so runs are reproducible.
DEFAULT_RESAMPLES = 1000
DEFAULT_CONFIDENCE = 0.95
DEFAULT_SEED = 0
#: Resamples x records drawn by one call of the generator, 8 MiB of int64: fixed by n alone, so the
#: resamples depend on (n, seed) only, whichever checkpoints are ranked.
_DRAW_ELEMENTS = 1 << 20


@dataclass(frozen=True)
class BootstrapSettings:
    """How the bootstrap runs: `resamples` (0 turns it off), the `confidence` of the intervals, the `seed`."""

    resamples: int = DEFAULT_RESAMPLES
    confidence: float = DEFAULT_CONFIDENCE
    seed: int = DEFAULT_SEED

    def __post_init__(self) -> None:
        if isinstance(self.resamples, bool) or not isinstance(self.resamples, int) or self.resamples < 0:
            raise UsageError(f"expected a whole number >= 0, got {self.resamples!r}", parameter="resamples")
        if not 0.0 < self.confidence < 1.0:
            raise UsageError(
                f"expected a number between 0 and 1 (e.g. 0.95), got {self.confidence!r}", parameter="confidence"
            )
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise UsageError(f"expected a whole number >= 0, got {self.seed!r}", parameter="seed")

    @property
    def enabled(self) -> bool:
        return self.resamples > 0


#: The settings `melep rank` uses unless told otherwise.
DEFAULT_BOOTSTRAP = BootstrapSettings()


@dataclass(frozen=True)
class Estimate:
    """One checkpoint's score on all records and each record's influence on it (rows aligned across checkpoints).

    `per_label` (Y,) and `per_label_influence` (n, Y) are the same for each target label's value.
    """

    value: float
    influence: np.ndarray
    per_label: np.ndarray | None = None
    per_label_influence: np.ndarray | None = None


@dataclass(frozen=True)
class Uncertainty:
    """What the bootstrap says of one checkpoint.

    `ci`: the interval of its score; `p_best`: the share of resamples in which it scores best (ties split,
    so the shares sum to 1); `diff_ci`: the interval of its score minus the best checkpoint's, on the same
    resamples; `tied_with_best`: that interval contains 0 (always true of the best itself and of a
    checkpoint whose outputs equal the best's); `per_label_ci`: (Y, 2), NaN for labels without a value.
    """

    ci: tuple[float, float]
    p_best: float
    diff_ci: tuple[float, float]
    tied_with_best: bool
    per_label_ci: np.ndarray | None = None


def paired_bootstrap(
    estimates: Sequence[Estimate],
    *,
    lower_is_better: bool = True,
    settings: BootstrapSettings = DEFAULT_BOOTSTRAP,
) -> list[Uncertainty]:
    """The uncertainty of each of `estimates` (one per checkpoint, same records in the same rows) against the best.

    The best is the estimate with the best `value` (the first of equal ones), as the ranking orders them.
    """
    if not settings.enabled:
        raise UsageError("the bootstrap needs at least 1 resample", parameter="resamples")
    if not estimates:
        return []
    n = _records(estimates)
    values = np.array([estimate.value for estimate in estimates], dtype=np.float64)
    resampled, labels_resampled = _resample(estimates, n, settings)
    tail = (1.0 - settings.confidence) / 2.0
    quantiles = [tail, 1.0 - tail]
    best = int(np.argmin(values) if lower_is_better else np.argmax(values))
    winning = resampled.min(axis=1) if lower_is_better else resampled.max(axis=1)
    wins = resampled == winning[:, None]
    p_best = (wins / wins.sum(axis=1, keepdims=True)).mean(axis=0)
    differences = resampled - resampled[:, [best]]
    results = []
    for k in range(len(estimates)):
        low, high = np.quantile(resampled[:, k], quantiles)
        diff_low, diff_high = np.quantile(differences[:, k], quantiles)
        per_label_ci = None
        if labels_resampled is not None:
            per_label_ci = _column_quantiles(labels_resampled[k], quantiles)
        results.append(
            Uncertainty(
                ci=(float(low), float(high)),
                p_best=float(p_best[k]),
                diff_ci=(float(diff_low), float(diff_high)),
                tied_with_best=bool(diff_low <= 0.0 <= diff_high),
                per_label_ci=per_label_ci,
            )
        )
    return results


def _resample(
    estimates: Sequence[Estimate], n: int, settings: BootstrapSettings
) -> tuple[np.ndarray, list[np.ndarray] | None]:
    """The resampled totals (B x checkpoints) and, when every estimate has them, per-label values (B x Y each).

    Estimates with equal values and influences (checkpoints with identical outputs) are resampled once and
    share the result, so they are tied in every resample; the others are stacked into one matrix product per
    block of resamples.
    """
    with_labels = all(estimate.per_label_influence is not None for estimate in estimates)
    unique: list[int] = []  # the estimates resampled, each the first of its equals
    distinct: list[int] = []  # for each estimate, the position in `unique` of its first equal
    for k, estimate in enumerate(estimates):
        same = next((i for i, j in enumerate(unique) if _equal(estimates[j], estimate, with_labels)), None)
        if same is None:
            same = len(unique)
            unique.append(k)
        distinct.append(same)
    columns = []
    for j in unique:
        columns.append(estimates[j].influence[None, :])
        if with_labels:
            columns.append(np.asarray(estimates[j].per_label_influence).T)
    stacked = np.ascontiguousarray(np.concatenate(columns, axis=0))  # (columns, n)
    offsets = np.array([estimates[j].value for j in unique])
    sums = np.empty((settings.resamples, stacked.shape[0]))
    # Blocks of resamples as large as the influences themselves (at least one draw): each block is one pass
    # over `stacked`, and memory stays O(n x columns).
    for rows, shifts in _weight_blocks(n, settings, max(_DRAW_ELEMENTS, stacked.size) // n):
        sums[rows] = (stacked @ shifts.T).T
    sums /= n
    width = stacked.shape[0] // len(unique)
    resampled = np.empty((settings.resamples, len(estimates)))
    labels_resampled: list[np.ndarray] | None = [] if with_labels else None
    for k, position in enumerate(distinct):
        start = position * width
        resampled[:, k] = offsets[position] + sums[:, start]
        if labels_resampled is not None:
            labels_resampled.append(np.asarray(estimates[k].per_label) + sums[:, start + 1 : start + width])
    return resampled, labels_resampled


def _equal(a: Estimate, b: Estimate, with_labels: bool) -> bool:
    if a.value != b.value or not np.array_equal(a.influence, b.influence):
        return False
    return not with_labels or np.array_equal(a.per_label_influence, b.per_label_influence, equal_nan=True)  # type: ignore[arg-type]


def _records(estimates: Sequence[Estimate]) -> int:
    n = estimates[0].influence.shape[0]
    for estimate in estimates:
        if estimate.influence.shape != (n,):
            raise UsageError(f"estimates: influences of {n} records expected, got shape {estimate.influence.shape}")
        if estimate.per_label_influence is not None and estimate.per_label_influence.shape[0] != n:
            raise UsageError(f"estimates: per-label influences of {n} records expected")
    if n == 0:
        raise UsageError("estimates: no records to resample")
    return n


def _weight_blocks(n: int, settings: BootstrapSettings, block_rows: int) -> Iterator[tuple[slice, np.ndarray]]:
    """(rows, w - 1) for blocks of about `block_rows` resamples: w the multiplicities of the n records in each."""
    rng = np.random.default_rng(settings.seed)
    draw_rows = max(1, _DRAW_ELEMENTS // n)
    per_block = max(1, min(settings.resamples, block_rows)) // draw_rows * draw_rows or draw_rows
    for start in range(0, settings.resamples, per_block):
        count = min(per_block, settings.resamples - start)
        shifts = np.empty((count, n))
        for first in range(0, count, draw_rows):
            rows = min(draw_rows, count - first)
            draws = rng.integers(0, n, size=(rows, n), dtype=np.int64)
            draws += np.arange(rows)[:, None] * n
            shifts[first : first + rows] = np.bincount(draws.ravel(), minlength=rows * n).reshape(rows, n)
        shifts -= 1.0
        yield slice(start, start + count), shifts


def _column_quantiles(samples: np.ndarray, quantiles: list[float]) -> np.ndarray:
    """(columns, 2) quantiles of each column; NaN for a column of NaN (a label without a value)."""
    result = np.full((samples.shape[1], 2), np.nan)
    finite = np.isfinite(samples).all(axis=0)
    if finite.any():
        result[finite] = np.quantile(samples[:, finite], quantiles, axis=0).T
    return result
