"""`melep rank`: score every candidate checkpoint on one target, best (lowest MELEP) first.

Orchestration only: stage 1 (`forward`: the forward passes, or their outputs read from the store), then
stage 2 (a score from each checkpoint's stored outputs and the target's labels of the same records), then
the paired bootstrap over target records (`melep_cli.bootstrap`): each score's interval, P(best) and
whether it can be told apart from the best. One checkpoint that fails becomes an error row; the others are
ranked.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from melep_cli.bootstrap import DEFAULT_BOOTSTRAP, BootstrapSettings, Estimate, Uncertainty, paired_bootstrap
from melep_cli.errors import MelepError, TargetError
from melep_cli.forward_pass import DEFAULT_CACHE, ForwardResult, ProgressCallback, forward
from melep_cli.metric import MelepResult, Weighting, probabilities_declared_as
from melep_cli.scores import MelepScore, ScoreValue
from melep_cli.targets import Target, TargetOptions, target_of
from melep_cli.targets.base import count_noun

log = logging.getLogger("melep")

#: Fewer records than this, or a target label with fewer positives than SMALL_LABEL, gets a warning: the
#: scores rest on few examples (the intervals say how much that matters).
SMALL_TARGET = 100
SMALL_LABEL = 10
#: A target label of which no checkpoint removes more than this share of H(y) is named in a warning.
UNINFORMED_SHARE = 0.05


@dataclass
class CheckpointOutcome:
    """What ranking produced for one checkpoint: a MELEP result, or the error that stopped it."""

    name: str
    path: Path
    format: str | None
    status: str = "ok"
    result: MelepResult | None = None
    error: str | None = None
    seconds: float = 0.0
    device: str | None = None
    precision: str | None = None  # what the forward pass computed in (float32 unless --precision took effect)
    rank: int | None = None
    cached: bool = False  # the outputs came from the store: no forward pass was run
    entry: Path | None = None  # the store entry holding the outputs
    uncertainty: Uncertainty | None = None  # the bootstrap's verdict, when it ran

    @property
    def melep(self) -> float | None:
        return self.result.score if self.result is not None else None

    @property
    def removed_share(self) -> np.ndarray | None:
        """1 - m(y) / H(y) per target label: the share of the no-information value the checkpoint removes."""
        if self.result is None:
            return None
        entropy = self.result.entropy
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(entropy > 0, 1.0 - self.result.per_label / entropy, np.nan)


@dataclass
class TargetSummary:
    """The target as ranked: the records actually scored and their label prevalence."""

    path: str
    format: str
    records: int
    labels: tuple[str, ...]
    positives: np.ndarray
    skipped: list[tuple[str, str]] = field(default_factory=list)
    excluded_labels: list[tuple[str, str]] = field(default_factory=list)  # left out by the default selection

    @property
    def prevalence(self) -> np.ndarray:
        return self.positives / max(self.records, 1)


@dataclass
class RankReport:
    """The ranking: successful checkpoints by ascending MELEP, then failed ones."""

    target: TargetSummary
    weighting: str
    outcomes: list[CheckpointOutcome]
    seconds: float
    cache: Path | None = None  # the outputs store used, None without one
    forward_passes: int = 0  # checkpoints whose forward pass ran (the others came from the store)
    bootstrap: BootstrapSettings | None = None  # how the intervals were drawn; None when they were not

    @property
    def tied_ranks(self) -> list[int]:
        """The ranks that cannot be told apart from the best (the best's own included); [] without a bootstrap."""
        return [
            outcome.rank
            for outcome in self.ok
            if outcome.rank is not None and outcome.uncertainty is not None and outcome.uncertainty.tied_with_best
        ]

    @property
    def ok(self) -> list[CheckpointOutcome]:
        return [outcome for outcome in self.outcomes if outcome.status == "ok"]

    @property
    def failed(self) -> list[CheckpointOutcome]:
        return [outcome for outcome in self.outcomes if outcome.status != "ok"]

    def top(self, count: int) -> RankReport:
        """The same report with only the `count` best checkpoints (failures kept: they need attention)."""
        return replace(self, outcomes=self.ok[:count] + self.failed)


def rank(
    checkpoints: Sequence[str | Path],
    target: str | Path | Target,
    *,
    cache: str | Path | None = DEFAULT_CACHE,
    recursive: bool = False,
    device: str = "auto",
    strict_device: bool = False,
    batch_size: int | None = None,
    weighting: Weighting = "prevalence",
    source_weighted: bool = False,
    progress: ProgressCallback | None = None,
    threads: int | None = None,
    precision: str = "float32",
    target_options: TargetOptions | None = None,
    bootstrap: BootstrapSettings = DEFAULT_BOOTSTRAP,
) -> RankReport:
    """Rank the checkpoints found in `checkpoints` by MELEP on `target` (lower is better).

    Stage 1 is `forward(checkpoints, target, cache=..., ...)` (see there for `cache`, `device`,
    `batch_size`, `threads` and `precision`): outputs already in the store are read, not recomputed, so
    ranking the same target again with other labels or `weighting` runs no forward pass. Stage 2 scores
    each checkpoint's outputs with `MelepScore(weighting, source_weighted)`; `bootstrap` then resamples the
    target records (BootstrapSettings(resamples=0): no intervals).
    `target` is a path opened with `open_target(path, target_options)`, or an open Target (then
    `target_options` must be None).
    Raises UsageError/TargetError for problems that stop the whole run; a checkpoint's own
    problems become its error row.
    """
    started = time.perf_counter()
    opened = target_of(target, target_options)
    _check_labels_informative(opened, opened.labels, len(opened), when="among its records")
    if opened.excluded_labels:
        listed = "; ".join(f"{name}: {reason}" for name, reason in opened.excluded_labels[:10])
        more = len(opened.excluded_labels) - 10
        log.warning(
            f"{opened.path}: {count_noun(len(opened.excluded_labels), 'label')} left out of the ranking: {listed}"
            + (f"; and {more} more" if more > 0 else "")
            + " (name them to rank on them anyway, or lower min_positives)"
        )
    stage1 = forward(
        checkpoints,
        opened,
        cache=cache,
        recursive=recursive,
        device=device,
        strict_device=strict_device,
        batch_size=batch_size,
        threads=threads,
        precision=precision,
        progress=progress,
    )
    score = MelepScore(weighting=weighting, source_weighted=source_weighted)
    skipped_ids = {record for record, _ in stage1.skipped}
    kept = np.array([record not in skipped_ids for record in opened.record_ids], dtype=bool)
    records = int(kept.sum())
    positives = opened.labels[kept].sum(axis=0, dtype=np.int64)
    if records < len(opened):
        _check_labels_informative(opened, positives, records, when="among the records left after skipping")
    row_of = {record: row for row, record in enumerate(opened.record_ids)}
    scored = [_score(result, score, opened, row_of, influence=bootstrap.enabled) for result in stage1.results]
    outcomes = [outcome for outcome, _, _ in scored]
    _assign_ranks(outcomes)
    if bootstrap.enabled:
        _attach_uncertainty(outcomes, {id(outcome): (value, rows) for outcome, value, rows in scored}, bootstrap)
    _warn_small(opened, records, positives)
    _warn_uninformed(opened, outcomes)
    summary = TargetSummary(
        path=str(opened.path),
        format=opened.format,
        records=records,
        labels=tuple(opened.label_names),
        positives=positives,
        skipped=[*opened.excluded, *stage1.skipped],
        excluded_labels=list(opened.excluded_labels),
    )
    return RankReport(
        target=summary,
        weighting=weighting,
        outcomes=outcomes,
        seconds=time.perf_counter() - started,
        cache=stage1.cache,
        forward_passes=stage1.forward_passes,
        bootstrap=bootstrap if bootstrap.enabled else None,
    )


def _score(
    result: ForwardResult, score: MelepScore, target: Target, row_of: dict[str, int], *, influence: bool
) -> tuple[CheckpointOutcome, ScoreValue | None, np.ndarray | None]:
    """Stage 2 for one checkpoint: its score from its outputs and the target labels of the same records.

    Also returns the score's value (with the records' influences when `influence`) and the target rows of
    the records, for the bootstrap; (outcome, None, None) when it failed.
    """
    outcome = CheckpointOutcome(
        name=result.name,
        path=result.path,
        format=result.format,
        status=result.status,
        error=result.error,
        seconds=result.seconds,
        device=result.device,
        precision=result.precision,
        cached=result.cached,
        entry=result.entry,
    )
    if result.status != "ok":
        return outcome, None, None
    started = time.perf_counter()
    value = rows = None
    try:
        outputs = result.model_outputs()
        suspicion = probabilities_declared_as(outputs.scores, outputs.activation)
        if suspicion:
            log.warning(
                f"{result.name}: {suspicion}; if they are probabilities, set its metadata 'output' to probabilities"
                f" (melep annotate {result.path} --activation probabilities)"
            )
        if score.source_weighted and outputs.source_prevalence is None:
            log.warning(f"{result.name}: no source_prevalence in its metadata; using the plain mean over z")
        rows = np.fromiter((row_of[record] for record in result.record_ids), dtype=np.int64)
        value = score.compute(outputs, target.labels[rows], target.label_names, influence=influence)
        outcome.result = value.detail
    except MelepError as error:
        message = str(error) if str(error).startswith(result.name) else f"{result.name}: {error}"
        outcome.status, outcome.error = "error", message
        log.warning(message)
        value = rows = None
    finally:
        outcome.seconds += time.perf_counter() - started
    return outcome, value, rows


def _attach_uncertainty(
    outcomes: list[CheckpointOutcome],
    scored: dict[int, tuple[ScoreValue | None, np.ndarray | None]],
    settings: BootstrapSettings,
) -> None:
    """The paired bootstrap of the ranked checkpoints, its verdicts set on their outcomes.

    Every checkpoint is resampled over the same target rows: those any checkpoint scored. A checkpoint that
    scored fewer of them (a record it alone could not use) has its influences scaled to its own count and 0
    elsewhere, so its resampled value is its own records' resampled mean.
    """
    ranked = [outcome for outcome in outcomes if outcome.status == "ok"]
    if not ranked:
        return
    union = np.unique(np.concatenate([scored[id(outcome)][1] for outcome in ranked]))  # type: ignore[misc]
    position = np.searchsorted(union, np.arange(union.max() + 1))
    estimates = []
    for outcome in ranked:
        value, rows = scored[id(outcome)]
        assert value is not None and rows is not None and value.influence is not None
        scale = union.size / rows.size
        influence = np.zeros(union.size)
        influence[position[rows]] = value.influence * scale
        per_label = np.zeros((union.size, value.per_label.size))
        if value.per_label_influence is not None:
            per_label[position[rows]] = value.per_label_influence * scale
        estimates.append(Estimate(value.value, influence, value.per_label, per_label))
    started = time.perf_counter()
    for outcome, uncertainty in zip(ranked, paired_bootstrap(estimates, settings=settings)):
        outcome.uncertainty = uncertainty
    log.debug(
        f"bootstrap: {settings.resamples} resamples of {union.size} records in {time.perf_counter() - started:.3f} s"
    )


def _warn_small(target: Target, records: int, positives: np.ndarray) -> None:
    """A warning when the scores rest on few records or few positives of a label."""
    if records < SMALL_TARGET:
        log.warning(
            f"{target.path}: only {count_noun(records, 'record')} (fewer than {SMALL_TARGET}): the scores are"
            " uncertain; read their intervals"
        )
    few = [(name, int(count)) for name, count in zip(target.label_names, positives) if 0 < count < SMALL_LABEL]
    if few:
        listed = ", ".join(f"{name} ({count})" for name, count in few)
        log.warning(
            f"{target.path}: fewer than {SMALL_LABEL} positives for {listed}: m(y) of "
            + ("this label rests" if len(few) == 1 else "these labels rest")
            + " on few records"
        )


def _warn_uninformed(target: Target, outcomes: list[CheckpointOutcome]) -> None:
    """A warning naming the target labels of which no ranked checkpoint removes more than UNINFORMED_SHARE of H(y)."""
    shares = [share for outcome in outcomes if (share := outcome.removed_share) is not None]
    if not shares:
        return
    stacked = np.vstack(shares)
    informative = np.isfinite(stacked).any(axis=0)
    best = np.max(np.where(np.isfinite(stacked), stacked, -np.inf), axis=0)
    weak = [
        (name, share)
        for name, share, known in zip(target.label_names, best, informative)
        if known and share <= UNINFORMED_SHARE
    ]
    if weak:
        listed = ", ".join(f"{name} (at most {share:.1%})" for name, share in weak)
        log.warning(
            f"{target.path}: no checkpoint removes more than {UNINFORMED_SHARE:.0%} of the no-information value H(y)"
            f" of {listed}: no candidate predicts " + ("this label" if len(weak) == 1 else "these labels")
        )


def _check_labels_informative(target: Target, labels: np.ndarray, records: int, *, when: str) -> None:
    """TargetError when every target label is all 0 or all 1: MELEP has no score for any checkpoint.

    `labels` is the (n, Y) label matrix, or the (Y,) positive counts over `records` records.
    """
    positives = np.asarray(labels).sum(axis=0) if np.ndim(labels) == 2 else np.asarray(labels)
    if records == 0 or positives.size == 0:
        return
    if ((positives == 0) | (positives == records)).all():
        counts = ", ".join(f"{name} {int(count)}" for name, count in zip(target.label_names, positives))
        raise TargetError(
            f"{target.path}: every target label is all 0 or all 1 {when} ({records} records; positives: {counts}); "
            "MELEP has no score: choose other labels"
        )


def _assign_ranks(outcomes: list[CheckpointOutcome]) -> None:
    """Sort in place: ok results by ascending MELEP (ties by name), then failures by name."""
    outcomes.sort(key=lambda o: (o.status != "ok", o.melep if o.melep is not None else 0.0, o.name))
    for position, outcome in enumerate(outcomes, start=1):
        outcome.rank = position if outcome.status == "ok" else None
