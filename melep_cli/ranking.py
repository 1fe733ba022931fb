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
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from melep_cli.adaptive import AdaptiveSettings, AdaptiveSummary, CheckpointStop
from melep_cli.bootstrap import DEFAULT_BOOTSTRAP, BootstrapSettings, Estimate, Uncertainty, paired_bootstrap
from melep_cli.errors import InputError, MelepError, TargetError, UsageError
from melep_cli.executors import RayOptions
from melep_cli.forward_pass import (
    DEFAULT_CACHE,
    ForwardResult,
    ForwardSession,
    ProgressCallback,
    forward,
)
from melep_cli.metric import MelepResult, Weighting, probabilities_declared_as
from melep_cli.racing import Race
from melep_cli.scores import SCORES, Direction, MelepScore, ModelOutputs, Score, ScoreValue
from melep_cli.targets import Target, TargetOptions, target_of
from melep_cli.targets.base import count_noun

log = logging.getLogger("melep")

#: Fewer records than this, or a target label with fewer positives than SMALL_LABEL, gets a warning: the
#: scores rest on few examples (the intervals say how much that matters).
SMALL_TARGET = 100
SMALL_LABEL = 10
#: A target label of which no checkpoint removes more than this share of H(y) is named in a warning.
UNINFORMED_SHARE = 0.05


#: The scores `rank` computes unless told otherwise.
DEFAULT_SCORES: tuple[str, ...] = ("melep",)


@dataclass
class ScoreOutcome:
    """One score of one checkpoint: its value and the bootstrap's verdict on it, or the error that stopped it."""

    name: str
    direction: Direction
    value: ScoreValue | None = None
    error: str | None = None
    uncertainty: Uncertainty | None = None
    target_problem: str | None = None  # the error is the target's (the same for every checkpoint): told once


@dataclass
class CheckpointOutcome:
    """What ranking produced for one checkpoint: its scores (MELEP's full result in `result`), or the error
    that stopped it. `uncertainty` is the bootstrap's verdict on the score it is ranked by."""

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
    scores: dict[str, ScoreOutcome] = field(default_factory=dict)  # every score asked for, in that order
    rank_by: str = "melep"
    records: int | None = None  # records scored
    source_labels: int | None = None  # Z, the width of the scores output
    stop: CheckpointStop | None = None  # adaptive ranks: when and why it stopped receiving records
    stopped_early: bool = False  # adaptive ranks: its scores are on fewer records than the target's

    @property
    def melep(self) -> float | None:
        return self.result.score if self.result is not None else None

    @property
    def value(self) -> float | None:
        """The value of the score the ranking is by."""
        ranked_by = self.scores.get(self.rank_by)
        if ranked_by is not None and ranked_by.value is not None:
            return ranked_by.value.value
        return self.melep if self.rank_by == "melep" else None

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
    name: str = ""  # what the target is called in reports (default: the stem of its path)

    @property
    def prevalence(self) -> np.ndarray:
        return self.positives / max(self.records, 1)


@dataclass
class RankReport:
    """The ranking: successful checkpoints best first by `rank_by` (MELEP: ascending), then failed ones."""

    target: TargetSummary
    weighting: str
    outcomes: list[CheckpointOutcome]
    seconds: float
    cache: Path | None = None  # the outputs store used, None without one
    forward_passes: int = 0  # checkpoints whose forward pass ran (the others came from the store)
    bootstrap: BootstrapSettings | None = None  # how the intervals were drawn; None when they were not
    scores: tuple[str, ...] = DEFAULT_SCORES  # the scores computed, in the order asked for
    rank_by: str = "melep"
    created: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))
    adaptive: AdaptiveSummary | None = None  # what an adaptive rank spent; None for a full rank

    @property
    def direction(self) -> Direction:
        """Whether the score ranked by is better lower or higher."""
        return SCORES[self.rank_by].direction  # type: ignore[no-any-return]

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
    scores: Sequence[str] = DEFAULT_SCORES,
    rank_by: str | None = None,
    target_name: str | None = None,
    executor: str = "local",
    ray_options: RayOptions | None = None,
    adaptive: AdaptiveSettings | None = None,
) -> RankReport:
    """Rank the checkpoints found in `checkpoints` by MELEP (or `rank_by`) on `target`.

    Stage 1 is `forward(checkpoints, target, cache=..., ...)` (see there for `cache`, `device`,
    `batch_size`, `threads`, `precision`, `executor` and `ray_options`): outputs already in the store are
    read, not recomputed, so
    ranking the same target again with other labels or `weighting` runs no forward pass. Stage 2 scores
    each checkpoint's outputs with every score of `scores` (names of `SCORES`; `melep` is
    `MelepScore(weighting, source_weighted)`), ranked by `rank_by` (default: the first of `scores`);
    `bootstrap` then resamples the target records, the same resamples for every score
    (BootstrapSettings(resamples=0): no intervals). A score that fails for one checkpoint (e.g. one that
    needs features it does not declare) is an error of that score only, unless it is the one ranked by.
    `target_name` names the target in the report (default: the stem of its path), e.g. for `evaluate`.
    `target` is a path opened with `open_target(path, target_options)`, or an open Target (then
    `target_options` must be None).
    `adaptive`: stop feeding records to a checkpoint once the `rank_by` score shows it worse than the leader,
    and stop the ranking once one is left (`melep_cli.adaptive` states the rule and what it promises): each
    checkpoint's scores are then on the records it saw (`CheckpointOutcome.records`, `.stop`); checkpoints
    that ran to the end come first, then the others in the reverse order they were dropped.
    Raises UsageError/TargetError for problems that stop the whole run; a checkpoint's own
    problems become its error row.
    """
    started = time.perf_counter()
    instances = _score_instances(scores, weighting, source_weighted)
    ranked_by = rank_by if rank_by is not None else instances[0].name
    if ranked_by not in {score.name for score in instances}:
        raise UsageError(
            f"{ranked_by!r} is not one of the scores computed ({', '.join(score.name for score in instances)})",
            parameter="rank_by",
        )
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
    stage1_options = {
        "cache": cache,
        "recursive": recursive,
        "device": device,
        "strict_device": strict_device,
        "batch_size": batch_size,
        "threads": threads,
        "precision": precision,
        "executor": executor,
        "ray_options": ray_options,
    }
    race: Race | None = None
    if adaptive is None:
        stage1 = forward(checkpoints, opened, progress=progress, **stage1_options)  # type: ignore[arg-type]
    else:
        ranked_score = next(score for score in instances if score.name == ranked_by)
        race = Race(opened, adaptive, ranked_score, bootstrap)
        stage1 = race.run(ForwardSession(checkpoints, opened, **stage1_options), progress)  # type: ignore[arg-type]
    skipped_ids = {record for record, _ in stage1.skipped}
    kept = np.array([record not in skipped_ids for record in opened.record_ids], dtype=bool)
    records = int(kept.sum())
    positives = opened.labels[kept].sum(axis=0, dtype=np.int64)
    if records < len(opened):
        _check_labels_informative(opened, positives, records, when="among the records left after skipping")
    row_of = {record: row for row, record in enumerate(opened.record_ids)}
    scored = [_score(result, instances, ranked_by, opened, row_of, bootstrap.enabled) for result in stage1.results]
    outcomes = [outcome for outcome, _ in scored]
    rows_of = {id(outcome): rows for outcome, rows in scored}
    _report_target_problems(opened, outcomes, ranked_by)
    if race is not None:
        race.apply(stage1.results, outcomes, records)
    else:
        _assign_ranks(outcomes, lower_is_better=SCORES[ranked_by].direction == "lower")
    if bootstrap.enabled:
        for score in instances:
            if race is None or score.name != ranked_by:
                _attach_uncertainty(outcomes, score.name, rows_of, bootstrap)
        for outcome in outcomes:
            outcome.uncertainty = outcome.scores[ranked_by].uncertainty if ranked_by in outcome.scores else None
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
        name=target_name if target_name is not None else Path(opened.path).stem,
    )
    return RankReport(
        target=summary,
        weighting=weighting,
        outcomes=outcomes,
        seconds=time.perf_counter() - started,
        cache=stage1.cache,
        forward_passes=stage1.forward_passes,
        bootstrap=bootstrap if bootstrap.enabled else None,
        scores=tuple(score.name for score in instances),
        rank_by=ranked_by,
        adaptive=race.summary(stage1, outcomes, records) if race is not None else None,
    )


def _score_instances(names: Sequence[str], weighting: Weighting, source_weighted: bool) -> list[Score]:
    """The scores named, each once, in order: `melep` with the weighting asked for, the others as defined."""
    if isinstance(names, str) or not names:
        raise UsageError(f"expected one or more of {', '.join(SCORES)}, got {names!r}", parameter="scores")
    unknown = [name for name in names if name not in SCORES]
    if unknown:
        raise UsageError(f"{', '.join(map(repr, unknown))}: not one of {', '.join(SCORES)}", parameter="scores")
    instances: list[Score] = []
    for name in dict.fromkeys(names):
        if name == MelepScore.name:
            instances.append(MelepScore(weighting=weighting, source_weighted=source_weighted))
        else:
            instances.append(SCORES[name]())
    return instances


def _score(
    result: ForwardResult,
    scores: Sequence[Score],
    rank_by: str,
    target: Target,
    row_of: dict[str, int],
    influence: bool,
) -> tuple[CheckpointOutcome, np.ndarray | None]:
    """Stage 2 for one checkpoint: every score from its outputs and the target labels of the same records.

    Also returns the target rows of the records, for the bootstrap (None when the checkpoint failed). A score
    that fails is that score's error; the checkpoint fails when the score it is ranked by does.
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
        rank_by=rank_by,
    )
    if result.status != "ok":
        return outcome, None
    started = time.perf_counter()
    try:
        outputs = result.model_outputs()
        suspicion = probabilities_declared_as(outputs.scores, outputs.activation)
        if suspicion:
            log.warning(
                f"{result.name}: {suspicion}; if they are probabilities, set its metadata 'output' to probabilities"
                f" (melep annotate {result.path} --activation probabilities)"
            )
        rows = np.fromiter((row_of[record] for record in result.record_ids), dtype=np.int64)
        labels = target.labels[rows]
        outcome.records, outcome.source_labels = len(rows), int(np.shape(outputs.scores)[1])
        for score in scores:
            if isinstance(score, MelepScore) and score.source_weighted and outputs.source_prevalence is None:
                log.warning(f"{result.name}: no source_prevalence in its metadata; using the plain mean over z")
            outcome.scores[score.name] = _one_score(result.name, score, outputs, labels, target.label_names, influence)
    finally:
        outcome.seconds += time.perf_counter() - started
    melep_value = outcome.scores.get(MelepScore.name)
    if melep_value is not None and melep_value.value is not None:
        outcome.result = melep_value.value.detail
    ranked = outcome.scores[rank_by]
    if ranked.error is not None:
        outcome.status, outcome.error = "error", ranked.error
        return outcome, None
    return outcome, rows


def _report_target_problems(target: Target, outcomes: list[CheckpointOutcome], rank_by: str) -> None:
    """One warning per score the target does not suit (not one per checkpoint); a TargetError when it is the
    score ranked by and no checkpoint has it."""
    problems: dict[str, str] = {}
    for outcome in outcomes:
        for name, score in outcome.scores.items():
            if score.target_problem is not None:
                problems.setdefault(name, score.target_problem)
    for name, problem in problems.items():
        if name == rank_by and not any(outcome.scores.get(name) and outcome.scores[name].value for outcome in outcomes):
            raise TargetError(f"{target.path}: {problem}")
        log.warning(f"{target.path}: {problem}")


def _one_score(
    checkpoint: str,
    score: Score,
    outputs: ModelOutputs,
    labels: np.ndarray,
    label_names: Sequence[str],
    influence: bool,
) -> ScoreOutcome:
    """One score of one checkpoint, or its error (logged as a warning, named after the checkpoint and score)."""
    try:
        if "features" in score.needs and outputs.features is None:
            raise InputError(
                f"{score.name} needs the checkpoint's penultimate features, and it declares no features output"
                " (metadata features_output; melep annotate --features-output NAME sets it)"
            )
        value = score.compute(outputs, labels, label_names, influence=influence)
        return ScoreOutcome(score.name, score.direction, value=value)
    except MelepError as error:
        text = str(error)
        message = text if text.startswith(checkpoint) else f"{checkpoint}: {text}"
        if score.name != MelepScore.name and not text.startswith(score.name):
            message = f"{checkpoint}: {score.name}: {text}"
        if error.scope == "target":
            return ScoreOutcome(score.name, score.direction, error=message, target_problem=error.reason or text)
        log.warning(message)
        return ScoreOutcome(score.name, score.direction, error=message)


def _attach_uncertainty(
    outcomes: list[CheckpointOutcome],
    name: str,
    rows_of: dict[int, np.ndarray | None],
    settings: BootstrapSettings,
) -> None:
    """The paired bootstrap of score `name` over the ranked checkpoints that have it, set on their outcomes.

    Every checkpoint is resampled over the same target rows: those any checkpoint scored. A checkpoint that
    scored fewer of them (a record it alone could not use) has its influences scaled to its own count and 0
    elsewhere, so its resampled value is its own records' resampled mean.
    """
    ranked = [
        outcome
        for outcome in outcomes
        if outcome.status == "ok" and rows_of.get(id(outcome)) is not None and outcome.scores[name].value is not None
    ]
    if not ranked:
        return
    union = np.unique(np.concatenate([rows_of[id(outcome)] for outcome in ranked]))  # type: ignore[misc]
    position = np.searchsorted(union, np.arange(union.max() + 1))
    estimates = []
    for outcome in ranked:
        value, rows = outcome.scores[name].value, rows_of[id(outcome)]
        assert value is not None and rows is not None and value.influence is not None
        scale = union.size / rows.size
        influence = np.zeros(union.size)
        influence[position[rows]] = value.influence * scale
        per_label = np.zeros((union.size, value.per_label.size))
        if value.per_label_influence is not None:
            per_label[position[rows]] = value.per_label_influence * scale
        estimates.append(Estimate(value.value, influence, value.per_label, per_label))
    order = np.argsort(
        [-estimate.value if SCORES[name].direction == "higher" else estimate.value for estimate in estimates],
        kind="stable",
    )
    started = time.perf_counter()
    verdicts = paired_bootstrap(
        [estimates[i] for i in order], lower_is_better=SCORES[name].direction == "lower", settings=settings
    )
    for i, uncertainty in zip(order, verdicts):
        ranked[i].scores[name].uncertainty = uncertainty
        ranked[i].scores[name].value = replace(ranked[i].scores[name].value, influence=None, per_label_influence=None)  # type: ignore[arg-type]
    seconds = time.perf_counter() - started
    log.debug(f"bootstrap of {name}: {settings.resamples} resamples of {union.size} records in {seconds:.3f} s")


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


def _assign_ranks(outcomes: list[CheckpointOutcome], *, lower_is_better: bool = True) -> None:
    """Sort in place: ok results best first by the score ranked by (ties by name), then failures by name."""
    sign = 1.0 if lower_is_better else -1.0
    outcomes.sort(key=lambda o: (o.status != "ok", sign * o.value if o.value is not None else 0.0, o.name))
    for position, outcome in enumerate(outcomes, start=1):
        outcome.rank = position if outcome.status == "ok" else None
