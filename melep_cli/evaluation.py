"""Which score predicted fine-tuning: scores of past rankings against fine-tuning results, the pure core.

Dicts in, numbers out, no files and no logging (`melep_cli.evaluation_io` reads the files). For each score
and each target with at least `min_checkpoints` checkpoints that have both a score and a result, it gives
the statistics the transferability literature reports:

- Pearson r, Spearman rho, Kendall tau (tau-b) and weighted tau (`scipy.stats.weightedtau`, its default
  additive hyperbolic weigher: agreement at the top counts most, as in LogME, You et al. 2021) between
  the score and the fine-tuned result, over the target's checkpoints;
- Rel@1 and Rel@3: the best result among the score's top 1 / top 3 picks over the best result of all
  (for a lower-is-better metric, best of all over best among the picks; both need positive results);
- the top-1 hit (the pick is a best checkpoint), its regret (best result minus the pick's, in the metric's
  units, >= 0) and the regret of a random pick (best minus the mean: expected over a uniform pick);

then each statistic's mean over targets with a percentile bootstrap interval over targets (targets drawn
with replacement; the same draws for every statistic, and for every score evaluated on the same targets),
and, across targets, per checkpoint, Pearson r between score and result (Table 2 of the MELEP paper).

Everything is oriented so that higher means "the score agrees with fine-tuning": a score whose direction
is "lower" (MELEP) is negated before correlating and picking, and with `lower_is_better` the results are
too. Ties in a score are broken by checkpoint name. The statistics are scipy.stats'.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from melep_cli.bootstrap import DEFAULT_CONFIDENCE, DEFAULT_RESAMPLES, DEFAULT_SEED  # rank's: the same defaults
from melep_cli.errors import UsageError

Direction = Literal["lower", "higher"]

#: A target needs this many checkpoints with both a score and a result to be evaluated.
MIN_CHECKPOINTS = 3
#: The k of Rel@k.
REL_KS = (1, 3)

#: Each per-target statistic: key, what it is called in tables, and whether higher is better (None: a
#: baseline, the same for every score).
METRICS: tuple[tuple[str, str, bool | None], ...] = (
    ("pearson", "Pearson r", True),
    ("spearman", "Spearman rho", True),
    ("kendall", "Kendall tau", True),
    ("weighted_tau", "weighted tau", True),
    ("rel_at_1", "Rel@1", True),
    ("rel_at_3", "Rel@3", True),
    ("top1_hit", "top-1 hit rate", True),
    ("regret", "regret", False),
    ("random_regret", "random-pick regret", None),
)
METRIC_KEYS = tuple(key for key, _, _ in METRICS)
METRIC_LABELS = {key: label for key, label, _ in METRICS}
_CORRELATIONS = ("pearson", "spearman", "kendall", "weighted_tau")
#: Why a statistic can be undefined on a target, for the warnings.
_UNDEFINED_BECAUSE = {
    **{key: "the scores or the results are all equal" for key in _CORRELATIONS},
    "rel_at_1": "Rel@k needs results > 0",
    "rel_at_3": "Rel@k needs results > 0",
}
#: At most this many names in one warning.
_NAMED = 10


@dataclass(frozen=True)
class Ranking:
    """One target's scores, as one rank result gives them.

    `scores`: score name -> checkpoint -> value (a checkpoint without a value for that score is absent);
    `directions`: score name -> "lower" or "higher" (which is better); `checkpoints`: every checkpoint the
    ranking lists, failed ones too; `failed`: checkpoint -> its error; `source`: where it came from (a file
    name), for messages.
    """

    target: str
    scores: Mapping[str, Mapping[str, float]]
    directions: Mapping[str, Direction]
    checkpoints: tuple[str, ...]
    failed: Mapping[str, str] = field(default_factory=dict)
    source: str = ""


@dataclass(frozen=True)
class Finetuned:
    """A (target, checkpoint) pair's fine-tuning result: the mean of its `runs` values, as given."""

    mean: float
    runs: int


@dataclass(frozen=True)
class TargetEvaluation:
    """One score on one target: the pairs it was evaluated on and each statistic (NaN where undefined)."""

    target: str
    checkpoints: tuple[str, ...]  # sorted by name
    scores: tuple[float, ...]  # as in the ranking, not negated
    finetuned: tuple[float, ...]  # mean results, as given
    runs: tuple[int, ...]
    metrics: Mapping[str, float]
    pick: str  # the score's top checkpoint
    best: tuple[str, ...]  # the checkpoints with the best result


@dataclass(frozen=True)
class Summary:
    """A statistic's mean over the `targets` where it is defined, and its bootstrap interval (None without)."""

    mean: float
    ci: tuple[float, float] | None
    targets: int


@dataclass(frozen=True)
class CheckpointCorrelation:
    """Across targets, one checkpoint's Pearson r between score (oriented) and result, on `targets` targets."""

    checkpoint: str
    pearson: float
    p_value: float
    targets: int


@dataclass(frozen=True)
class ScoreEvaluation:
    """One score: per target, the means over targets, per checkpoint; `left_out`: (target, checkpoints) of
    the targets with too few checkpoints."""

    name: str
    direction: Direction
    targets: tuple[TargetEvaluation, ...]
    summary: Mapping[str, Summary]
    per_checkpoint: tuple[CheckpointCorrelation, ...]
    left_out: tuple[tuple[str, int], ...]


@dataclass(frozen=True)
class Missing:
    """What one side has and the other lacks; nothing is dropped without being listed here.

    `targets_without_ranking`: targets with results but no ranking; `targets_without_results`: (target,
    source) of rankings without results; `checkpoints_without_score`: (target, checkpoint, scores, reason)
    of pairs with results but no score (not in the ranking, failed there, or without that score's value);
    `checkpoints_without_results`: (target, checkpoint) in a ranking without results.
    """

    targets_without_ranking: tuple[str, ...] = ()
    targets_without_results: tuple[tuple[str, str], ...] = ()
    checkpoints_without_score: tuple[tuple[str, str, tuple[str, ...], str], ...] = ()
    checkpoints_without_results: tuple[tuple[str, str], ...] = ()

    def __bool__(self) -> bool:
        return any(
            (
                self.targets_without_ranking,
                self.targets_without_results,
                self.checkpoints_without_score,
                self.checkpoints_without_results,
            )
        )


@dataclass(frozen=True)
class Evaluation:
    """What `evaluate_rankings` found: one ScoreEvaluation per score, the results used, what is missing."""

    scores: tuple[ScoreEvaluation, ...]
    finetuned: Mapping[str, Mapping[str, Finetuned]]  # target -> checkpoint -> result
    missing: Missing
    lower_is_better: bool
    resamples: int
    confidence: float
    seed: int
    min_checkpoints: int
    runs: int  # result rows read
    results_source: str = "the results"
    rankings: tuple[tuple[str, str], ...] = ()  # (target, source) of every ranking given
    warnings: tuple[str, ...] = ()

    def score(self, name: str) -> ScoreEvaluation:
        for evaluation in self.scores:
            if evaluation.name == name:
                return evaluation
        raise KeyError(name)


def mean_results(runs: Mapping[str, Mapping[str, Sequence[float]]]) -> dict[str, dict[str, Finetuned]]:
    """target -> checkpoint -> the mean of its runs and how many there were."""
    return {
        target: {checkpoint: Finetuned(float(np.mean(values)), len(values)) for checkpoint, values in pairs.items()}
        for target, pairs in runs.items()
    }


def evaluate_rankings(
    runs: Mapping[str, Mapping[str, Sequence[float]]],
    rankings: Sequence[Ranking],
    *,
    scores: Sequence[str] | None = None,
    lower_is_better: bool = False,
    resamples: int = DEFAULT_RESAMPLES,
    confidence: float = DEFAULT_CONFIDENCE,
    seed: int = DEFAULT_SEED,
    min_checkpoints: int = MIN_CHECKPOINTS,
    results_source: str = "the results",
) -> Evaluation:
    """Evaluate each score of `rankings` against the fine-tuning `runs` (target -> checkpoint -> values).

    Each value is one fine-tuning run's metric, higher is better (`lower_is_better` flips it); a pair's
    runs are averaged. `scores`: the scores to evaluate (default: every score of the rankings, in the order
    they first appear). The bootstrap draws `resamples` target sets with numpy's default_rng(`seed`)
    (0: no intervals); intervals are central at `confidence`. Raises UsageError for settings or names that
    cannot be used, and for two rankings of the same target or no target left to evaluate.
    """
    _check_settings(resamples, confidence, seed, min_checkpoints)
    _check_unique_targets(rankings)
    names = _score_names(rankings, scores)
    directions = _directions(rankings, names)
    finetuned = mean_results(runs)
    missing = _missing(finetuned, rankings, names)
    notes = _missing_messages(missing, results_source)
    matched = [ranking for ranking in rankings if ranking.target in finetuned]
    evaluations = []
    for name in names:
        evaluation = _evaluate_score(
            name,
            directions[name],
            finetuned,
            matched,
            lower_is_better=lower_is_better,
            resamples=resamples,
            confidence=confidence,
            seed=seed,
            min_checkpoints=min_checkpoints,
        )
        notes.extend(_score_messages(evaluation, min_checkpoints))
        evaluations.append(evaluation)
    if not any(evaluation.targets for evaluation in evaluations):
        raise UsageError(_nothing_to_evaluate(finetuned, rankings, matched, min_checkpoints, results_source))
    return Evaluation(
        scores=tuple(evaluations),
        finetuned=finetuned,
        missing=missing,
        lower_is_better=lower_is_better,
        resamples=resamples,
        confidence=confidence,
        seed=seed,
        min_checkpoints=min_checkpoints,
        runs=sum(len(values) for pairs in runs.values() for values in pairs.values()),
        results_source=results_source,
        rankings=tuple((ranking.target, ranking.source) for ranking in rankings),
        warnings=tuple(notes),
    )


def target_metrics(
    scores: Sequence[float], finetuned: Sequence[float], *, direction: Direction, lower_is_better: bool
) -> tuple[dict[str, float], int]:
    """The statistics of one target (checkpoints in the order given, ties broken by that order) and the pick.

    `scores` as the ranking gives them, `finetuned` the mean results as given; both are oriented here.
    """
    x = np.asarray(scores, dtype=np.float64) * (-1.0 if direction == "lower" else 1.0)
    raw = np.asarray(finetuned, dtype=np.float64)
    y = -raw if lower_is_better else raw
    order = np.lexsort((np.arange(len(x)), -x))  # highest score first; ties: the earlier checkpoint
    pick = int(order[0])
    best = float(y.max())
    metrics: dict[str, float] = {}
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        metrics.update(dict.fromkeys(_CORRELATIONS, math.nan))
    else:
        from scipy import stats  # imported when evaluating only: 0.5 s of every start-up otherwise

        metrics["pearson"] = float(stats.pearsonr(x, y)[0])
        metrics["spearman"] = float(stats.spearmanr(x, y)[0])
        metrics["kendall"] = float(stats.kendalltau(x, y)[0])
        metrics["weighted_tau"] = float(stats.weightedtau(x, y)[0])
    for k in REL_KS:
        metrics[f"rel_at_{k}"] = _relative(raw, order[:k], lower_is_better=lower_is_better)
    metrics["top1_hit"] = float(y[pick] == best)
    metrics["regret"] = best - float(y[pick])
    metrics["random_regret"] = best - float(y.mean())
    return metrics, pick


def _relative(raw: np.ndarray, picks: np.ndarray, *, lower_is_better: bool) -> float:
    """Rel@k: the best result among `picks` as a share of the best of all (NaN unless the results are > 0;
    higher-is-better results may be 0)."""
    if lower_is_better:
        if not (raw > 0).all():
            return math.nan
        return float(raw.min() / raw[picks].min())
    if not (raw >= 0).all() or raw.max() <= 0:
        return math.nan
    return float(raw[picks].max() / raw.max())


def summarise(values: np.ndarray, draws: np.ndarray | None, confidence: float) -> Summary:
    """The mean of `values` (one per target; NaN: undefined there) over the targets where it is defined,
    and the percentile interval of that mean over the bootstrap `draws` (resamples x targets indices)."""
    finite = np.isfinite(values)
    count = int(finite.sum())
    mean = float(values[finite].mean()) if count else math.nan
    if draws is None or count < 2:
        return Summary(mean, None, count)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a resample of only undefined targets: NaN, left out
        means = np.nanmean(values[draws], axis=1)
    means = means[np.isfinite(means)]
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(means, [tail, 1.0 - tail])
    return Summary(mean, (float(low), float(high)), count)


def bootstrap_draws(targets: int, resamples: int, seed: int) -> np.ndarray | None:
    """`resamples` x `targets` indices of targets drawn with replacement, as scipy.stats.bootstrap draws them
    from default_rng(seed); None without resamples or with fewer than 2 targets."""
    if resamples == 0 or targets < 2:
        return None
    return np.random.default_rng(seed).integers(0, targets, size=(resamples, targets))


def _evaluate_score(
    name: str,
    direction: Direction,
    finetuned: Mapping[str, Mapping[str, Finetuned]],
    rankings: Sequence[Ranking],
    *,
    lower_is_better: bool,
    resamples: int,
    confidence: float,
    seed: int,
    min_checkpoints: int,
) -> ScoreEvaluation:
    targets: list[TargetEvaluation] = []
    left_out: list[tuple[str, int]] = []
    for ranking in rankings:
        values = ranking.scores.get(name, {})
        results = finetuned[ranking.target]
        checkpoints = tuple(sorted(checkpoint for checkpoint in results if checkpoint in values))
        if len(checkpoints) < min_checkpoints:
            left_out.append((ranking.target, len(checkpoints)))
            continue
        score_values = tuple(float(values[checkpoint]) for checkpoint in checkpoints)
        means = tuple(results[checkpoint].mean for checkpoint in checkpoints)
        metrics, pick = target_metrics(score_values, means, direction=direction, lower_is_better=lower_is_better)
        oriented = [-mean for mean in means] if lower_is_better else list(means)
        top = max(oriented)
        targets.append(
            TargetEvaluation(
                target=ranking.target,
                checkpoints=checkpoints,
                scores=score_values,
                finetuned=means,
                runs=tuple(results[checkpoint].runs for checkpoint in checkpoints),
                metrics=metrics,
                pick=checkpoints[pick],
                best=tuple(c for c, value in zip(checkpoints, oriented) if value == top),
            )
        )
    draws = bootstrap_draws(len(targets), resamples, seed)
    summary = {
        key: summarise(np.array([target.metrics[key] for target in targets], dtype=np.float64), draws, confidence)
        for key in METRIC_KEYS
    }
    return ScoreEvaluation(
        name=name,
        direction=direction,
        targets=tuple(targets),
        summary=summary,
        per_checkpoint=_per_checkpoint(targets, direction, lower_is_better, min_checkpoints),
        left_out=tuple(left_out),
    )


def _per_checkpoint(
    targets: Sequence[TargetEvaluation], direction: Direction, lower_is_better: bool, min_targets: int
) -> tuple[CheckpointCorrelation, ...]:
    """Per checkpoint, across the targets it was evaluated on: Pearson r of oriented score and result."""
    pairs: dict[str, list[tuple[float, float]]] = {}
    for target in targets:
        for checkpoint, score, result in zip(target.checkpoints, target.scores, target.finetuned):
            pairs.setdefault(checkpoint, []).append((score, result))
    correlations = []
    for checkpoint in sorted(pairs):
        values = np.array(pairs[checkpoint], dtype=np.float64)
        x = values[:, 0] * (-1.0 if direction == "lower" else 1.0)
        y = values[:, 1] * (-1.0 if lower_is_better else 1.0)
        r = p = math.nan
        if len(values) >= min_targets and np.ptp(x) > 0 and np.ptp(y) > 0:
            from scipy import stats

            result = stats.pearsonr(x, y)
            r, p = float(result[0]), float(result[1])
        correlations.append(CheckpointCorrelation(checkpoint, r, p, len(values)))
    return tuple(correlations)


def _check_settings(resamples: int, confidence: float, seed: int, min_checkpoints: int) -> None:
    for parameter, value, least in (
        ("resamples", resamples, 0),
        ("seed", seed, 0),
        ("min_checkpoints", min_checkpoints, 3),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise UsageError(f"expected a whole number >= {least}, got {value!r}", parameter=parameter)
    if not 0.0 < confidence < 1.0:
        raise UsageError(f"expected a number between 0 and 1 (e.g. 0.95), got {confidence!r}", parameter="confidence")


def _check_unique_targets(rankings: Sequence[Ranking]) -> None:
    seen: dict[str, Ranking] = {}
    for ranking in rankings:
        earlier = seen.setdefault(ranking.target, ranking)
        if earlier is not ranking:
            raise UsageError(
                f"{ranking.source or ranking.target}: target {ranking.target!r} is also the target of "
                f"{earlier.source or 'another ranking'}; give each ranking its own target name "
                "(melep rank --target-name NAME)"
            )


def _score_names(rankings: Sequence[Ranking], requested: Sequence[str] | None) -> list[str]:
    available: list[str] = []
    for ranking in rankings:
        available.extend(name for name in ranking.scores if name not in available)
    if requested is None:
        if not available:
            raise UsageError("no ranking has a score to evaluate")
        return available
    if not requested:
        raise UsageError("name at least one score", parameter="scores")
    unknown = [name for name in requested if name not in available]
    if unknown:
        raise UsageError(
            f"no ranking has {_plural(len(unknown), 'the score', 'the scores')} {', '.join(unknown)} "
            f"(they have: {', '.join(available) or 'none'})",
            parameter="scores",
        )
    return list(dict.fromkeys(requested))


def _directions(rankings: Sequence[Ranking], names: Sequence[str]) -> dict[str, Direction]:
    directions: dict[str, tuple[Direction, Ranking]] = {}
    for ranking in rankings:
        for name in names:
            if name not in ranking.directions:
                continue
            direction = ranking.directions[name]
            if direction not in ("lower", "higher"):
                raise UsageError(
                    f"{ranking.source}: score {name!r} has direction {direction!r} (expected lower or higher)"
                )
            first = directions.setdefault(name, (direction, ranking))
            if first[0] != direction:
                raise UsageError(
                    f"{ranking.source}: score {name!r} is {direction} is better here but {first[0]} is better in "
                    f"{first[1].source}"
                )
    return {name: directions[name][0] for name in names}


def _missing(
    finetuned: Mapping[str, Mapping[str, Finetuned]], rankings: Sequence[Ranking], names: Sequence[str]
) -> Missing:
    ranked = {ranking.target for ranking in rankings}
    without_score: list[tuple[str, str, tuple[str, ...], str]] = []
    without_results: list[tuple[str, str]] = []
    for ranking in rankings:
        results = finetuned.get(ranking.target)
        if results is None:
            continue
        listed = set(ranking.checkpoints)
        for checkpoint in sorted(results):
            if checkpoint not in listed:
                without_score.append((ranking.target, checkpoint, tuple(names), "not in the ranking"))
            elif checkpoint in ranking.failed:
                reason = f"failed in the ranking: {ranking.failed[checkpoint]}"
                without_score.append((ranking.target, checkpoint, tuple(names), reason))
            else:
                lacking = tuple(name for name in names if checkpoint not in ranking.scores.get(name, {}))
                if lacking:
                    reason = f"no {', '.join(lacking)} value in the ranking"
                    without_score.append((ranking.target, checkpoint, lacking, reason))
        without_results.extend((ranking.target, c) for c in sorted(listed) if c not in results)
    return Missing(
        targets_without_ranking=tuple(sorted(target for target in finetuned if target not in ranked)),
        targets_without_results=tuple(
            (ranking.target, ranking.source) for ranking in rankings if ranking.target not in finetuned
        ),
        checkpoints_without_score=tuple(without_score),
        checkpoints_without_results=tuple(without_results),
    )


def _missing_messages(missing: Missing, results_source: str) -> list[str]:
    """One warning per kind of gap: how many, and which."""
    notes = []
    if missing.targets_without_ranking:
        names = missing.targets_without_ranking
        notes.append(
            f"{results_source}: {_count(len(names), 'target')} with results but no ranking, left out: {_listed(names)}"
        )
    if missing.targets_without_results:
        items = [f"{target} ({source})" if source else target for target, source in missing.targets_without_results]
        notes.append(
            f"{_count(len(items), 'ranked target')} without results in {results_source}, left out: {_listed(items)}"
        )
    if missing.checkpoints_without_score:
        items = [
            f"{target}/{checkpoint} ({reason})" for target, checkpoint, _, reason in missing.checkpoints_without_score
        ]
        notes.append(
            f"{_count(len(items), 'checkpoint')} with results but no score, left out of those scores: {_listed(items)}"
        )
    if missing.checkpoints_without_results:
        items = [f"{target}/{checkpoint}" for target, checkpoint in missing.checkpoints_without_results]
        notes.append(
            f"{_count(len(items), 'ranked checkpoint')} without results in {results_source}, left out: {_listed(items)}"
        )
    return notes


def _score_messages(evaluation: ScoreEvaluation, min_checkpoints: int) -> list[str]:
    notes = []
    if evaluation.left_out:
        items = [f"{target} ({count})" for target, count in evaluation.left_out]
        notes.append(
            f"{evaluation.name}: {_count(len(items), 'target')} with fewer than {min_checkpoints} checkpoints "
            f"having both a score and a result, left out: {_listed(items)}"
        )
    for key, reason in _UNDEFINED_BECAUSE.items():
        undefined = [target.target for target in evaluation.targets if not math.isfinite(target.metrics[key])]
        if undefined:
            notes.append(
                f"{evaluation.name}: {METRIC_LABELS[key]} undefined on {len(undefined)} of "
                f"{_count(len(evaluation.targets), 'target')} ({reason}), its mean is over the others: "
                f"{_listed(undefined)}"
            )
    return notes


def _nothing_to_evaluate(
    finetuned: Mapping[str, Mapping[str, Finetuned]],
    rankings: Sequence[Ranking],
    matched: Sequence[Ranking],
    min_checkpoints: int,
    results_source: str,
) -> str:
    if not matched:
        return (
            f"no ranked target has results in {results_source} (ranked: "
            f"{_listed([ranking.target for ranking in rankings])}; with results: {_listed(sorted(finetuned))}); "
            "the CSV's target column must be each ranking's target name"
        )
    return (
        f"no target has {min_checkpoints} checkpoints with both a score and a result in {results_source}; "
        "the CSV's checkpoint column must be the checkpoint names of the rankings"
    )


def _count(count: int, noun: str) -> str:
    return f"{count:,} {noun}" + ("" if count == 1 else "s")


def _plural(count: int, one: str, many: str) -> str:
    return one if count == 1 else many


def _listed(names: Sequence[str]) -> str:
    shown = ", ".join(names[:_NAMED])
    return f"{shown} and {len(names) - _NAMED} more" if len(names) > _NAMED else shown
