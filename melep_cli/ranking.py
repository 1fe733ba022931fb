"""`melep rank`: score every candidate checkpoint on one target, best (lowest MELEP) first.

Orchestration only: stage 1 (`forward`: the forward passes, or their outputs read from the store), then
stage 2 (a score from each checkpoint's stored outputs and the target's labels of the same records). One
checkpoint that fails becomes an error row; the others are ranked.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from melep_cli.errors import MelepError, TargetError
from melep_cli.forward_pass import DEFAULT_CACHE, ForwardResult, ProgressCallback, forward
from melep_cli.metric import MelepResult, Weighting, probabilities_declared_as
from melep_cli.scores import MelepScore
from melep_cli.targets import Target, TargetOptions, target_of
from melep_cli.targets.base import count_noun

log = logging.getLogger("melep")


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

    @property
    def melep(self) -> float | None:
        return self.result.score if self.result is not None else None


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
) -> RankReport:
    """Rank the checkpoints found in `checkpoints` by MELEP on `target` (lower is better).

    Stage 1 is `forward(checkpoints, target, cache=..., ...)` (see there for `cache`, `device`,
    `batch_size`, `threads` and `precision`): outputs already in the store are read, not recomputed, so
    ranking the same target again with other labels or `weighting` runs no forward pass. Stage 2 scores
    each checkpoint's outputs with `MelepScore(weighting, source_weighted)`.
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
    outcomes = [_score(result, score, opened, row_of) for result in stage1.results]
    _assign_ranks(outcomes)
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
    )


def _score(result: ForwardResult, score: MelepScore, target: Target, row_of: dict[str, int]) -> CheckpointOutcome:
    """Stage 2 for one checkpoint: its score from its outputs and the target labels of the same records."""
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
        return outcome
    started = time.perf_counter()
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
        value = score.compute(outputs, target.labels[rows], target.label_names)
        outcome.result = value.detail
    except MelepError as error:
        message = str(error) if str(error).startswith(result.name) else f"{result.name}: {error}"
        outcome.status, outcome.error = "error", message
        log.warning(message)
    finally:
        outcome.seconds += time.perf_counter() - started
    return outcome


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
