"""Rendering `melep evaluate`: Rich tables for people, JSON and CSV for scripts."""

from __future__ import annotations

import math
from typing import Any

from rich.table import Table

from melep_cli.evaluation import METRIC_KEYS, METRICS, Evaluation, ScoreEvaluation, Summary
from melep_cli.report import literal, rows_to_csv, set_annotations

#: Statistics in the metric's own units (shown with significant digits, not 3 decimals).
_IN_RESULT_UNITS = ("regret", "random_regret")


def _number(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def _summary_dict(summary: Summary) -> dict[str, Any]:
    ci = [_number(summary.ci[0]), _number(summary.ci[1])] if summary.ci is not None else None
    return {"mean": _number(summary.mean), "ci": ci, "targets": summary.targets}


def _score_dict(evaluation: ScoreEvaluation) -> dict[str, Any]:
    return {
        "name": evaluation.name,
        "direction": evaluation.direction,
        "negated": evaluation.direction == "lower",
        "targets": len(evaluation.targets),
        "summary": {key: _summary_dict(evaluation.summary[key]) for key in METRIC_KEYS},
        "per_target": [
            {
                "target": target.target,
                "checkpoints": len(target.checkpoints),
                "pick": target.pick,
                "best": list(target.best),
                **{key: _number(target.metrics[key]) for key in METRIC_KEYS},
                "pairs": [
                    {"checkpoint": checkpoint, "score": score, "finetuned": finetuned, "runs": runs}
                    for checkpoint, score, finetuned, runs in zip(
                        target.checkpoints, target.scores, target.finetuned, target.runs
                    )
                ],
            }
            for target in evaluation.targets
        ],
        "per_checkpoint": [
            {
                "checkpoint": item.checkpoint,
                "pearson": _number(item.pearson),
                "p_value": _number(item.p_value),
                "targets": item.targets,
            }
            for item in evaluation.per_checkpoint
        ],
        "left_out": [{"target": target, "checkpoints": count} for target, count in evaluation.left_out],
    }


def evaluation_to_dict(evaluation: Evaluation) -> dict[str, Any]:
    """The JSON document of `melep evaluate`: everything, per target and per checkpoint too."""
    missing = evaluation.missing
    pairs = sum(len(results) for results in evaluation.finetuned.values())
    return {
        "results": {
            "path": evaluation.results_source,
            "runs": evaluation.runs,
            "pairs": pairs,
            "targets": len(evaluation.finetuned),
            "lower_is_better": evaluation.lower_is_better,
        },
        "rankings": [{"target": target, "path": source} for target, source in evaluation.rankings],
        "bootstrap": (
            {"resamples": evaluation.resamples, "confidence": evaluation.confidence, "seed": evaluation.seed}
            if evaluation.resamples
            else None
        ),
        "min_checkpoints": evaluation.min_checkpoints,
        "scores": [_score_dict(score) for score in evaluation.scores],
        "missing": {
            "targets_without_ranking": list(missing.targets_without_ranking),
            "targets_without_results": [
                {"target": target, "path": source} for target, source in missing.targets_without_results
            ],
            "checkpoints_without_score": [
                {"target": target, "checkpoint": checkpoint, "scores": list(scores), "reason": reason}
                for target, checkpoint, scores, reason in missing.checkpoints_without_score
            ],
            "checkpoints_without_results": [
                {"target": target, "checkpoint": checkpoint}
                for target, checkpoint in missing.checkpoints_without_results
            ],
        },
        "finetuned": [
            {"target": target, "checkpoint": checkpoint, "mean": result.mean, "runs": result.runs}
            for target, results in evaluation.finetuned.items()
            for checkpoint, result in results.items()
        ],
        "warnings": list(evaluation.warnings),
    }


#: CSV columns after score, direction, targets: per statistic its mean, interval and the targets it is over.
CSV_COLUMNS = tuple(f"{key}{suffix}" for key in METRIC_KEYS for suffix in ("", "_ci_low", "_ci_high", "_targets"))


def evaluation_to_csv(evaluation: Evaluation) -> str:
    """One row per score: score, direction, targets, then each statistic's mean, ci_low, ci_high, targets."""
    rows: list[list[Any]] = [["score", "direction", "targets", *CSV_COLUMNS]]
    for score in evaluation.scores:
        row: list[Any] = [score.name, score.direction, len(score.targets)]
        for key in METRIC_KEYS:
            summary = score.summary[key]
            low, high = summary.ci if summary.ci is not None else (math.nan, math.nan)
            row += [_csv(summary.mean), _csv(low), _csv(high), summary.targets]
        rows.append(row)
    return rows_to_csv(rows)


def _csv(value: float) -> str:
    return repr(float(value)) if math.isfinite(value) else ""


def result_decimals(evaluation: Evaluation) -> int:
    """Decimals that show the results' scale to 4 significant digits (0.8134 -> 4, 81.34 -> 2), for regrets."""
    scale = max(
        (abs(result.mean) for results in evaluation.finetuned.values() for result in results.values()), default=1
    )
    if scale == 0 or not math.isfinite(scale):
        return 3
    return min(6, max(1, 3 - math.floor(math.log10(scale))))


def _format(value: float | None, decimals: int) -> str:
    return "—" if value is None or not math.isfinite(value) else f"{value:.{decimals}f}"


def _cell(summary: Summary, decimals: int) -> str:
    text = _format(summary.mean, decimals)
    if summary.ci is not None and math.isfinite(summary.mean):
        text += f" [{_format(summary.ci[0], decimals)}, {_format(summary.ci[1], decimals)}]"
    return text


def summary_table(evaluation: Evaluation) -> Table:
    """One row per statistic, one column per score: the mean over targets and its interval; the best in bold."""
    table = Table(header_style="bold")
    table.add_column("statistic", overflow="fold")
    for score in evaluation.scores:
        table.add_column(literal(score.name), justify="right")
    table.add_row("score is better when", *(score.direction for score in evaluation.scores))
    table.add_row("targets", *(str(len(score.targets)) for score in evaluation.scores))
    units = result_decimals(evaluation)
    for key, label, higher in METRICS:
        decimals = units if key in _IN_RESULT_UNITS else 3
        means = [score.summary[key].mean for score in evaluation.scores]
        finite = [mean for mean in means if math.isfinite(mean)]
        best = None
        if higher is not None and len(finite) > 1:
            best = max(finite) if higher else min(finite)
        cells = [
            literal(_cell(score.summary[key], decimals), "bold" if best is not None and mean == best else "")
            for score, mean in zip(evaluation.scores, means)
        ]
        table.add_row(label + ("" if higher is not False else " (lower is better)"), *cells)
    targets = len({target.target for score in evaluation.scores for target in score.targets})
    title = (
        f"How well each score predicted the fine-tuning results of {evaluation.results_source} "
        f"({_count(targets, 'target')}, {_count(evaluation.runs, 'run')}; "
        f"{'lower' if evaluation.lower_is_better else 'higher'} results are better)"
    )
    if not evaluation.resamples:
        interval = "(no intervals: --bootstrap 0)"
    elif not any(summary.ci is not None for score in evaluation.scores for summary in score.summary.values()):
        interval = "(no intervals: they need 2 targets or more)"
    else:
        interval = (
            f"[{evaluation.confidence * 100:g}% interval: percentile bootstrap over targets, "
            f"{evaluation.resamples} resamples]"
        )
    caption = (
        f"Mean over targets {interval}. Oriented so that higher agrees with fine-tuning: a lower-is-better "
        "score is negated. Rel@k: the best result among the score's top k over the best result; top-1 hit: "
        "its top pick is a best checkpoint; regret: the best result minus the pick's, in the results' units; "
        "random-pick regret: the same for a checkpoint picked at random. The best mean per statistic in bold "
        "(with overlapping intervals, not a clear winner)."
    )
    return set_annotations(table, title, caption)


def per_checkpoint_table(evaluation: Evaluation) -> Table:
    """One row per checkpoint, one column per score: Pearson r between score and result across targets."""
    table = Table(header_style="bold")
    table.add_column("checkpoint", overflow="fold")
    table.add_column("targets", justify="right")
    for score in evaluation.scores:
        table.add_column(literal(score.name), justify="right")
    correlations = {score.name: {item.checkpoint: item for item in score.per_checkpoint} for score in evaluation.scores}
    checkpoints = sorted({checkpoint for by_name in correlations.values() for checkpoint in by_name})
    for checkpoint in checkpoints:
        items = [correlations[score.name].get(checkpoint) for score in evaluation.scores]
        counts = {item.targets for item in items if item is not None}
        same = len(counts) == 1
        cells = []
        for item in items:
            if item is None:
                cells.append("—")
                continue
            text = f"{item.pearson:+.3f}" if math.isfinite(item.pearson) else "—"
            cells.append(text if same else f"{text} (n={item.targets})")
        table.add_row(literal(checkpoint), str(counts.pop()) if same else "varies", *cells)
    caption = (
        f"Per checkpoint, across the targets it was fine-tuned on (the MELEP paper's Table 2); a lower-is-better "
        f"score negated, so r > 0 means agreement; — with fewer than {evaluation.min_checkpoints} targets or "
        "constant values."
    )
    return set_annotations(table, "Pearson r between score and fine-tuning result, per checkpoint", caption)


def evaluation_tables(evaluation: Evaluation) -> list[Table]:
    return [summary_table(evaluation), per_checkpoint_table(evaluation)]


def _count(count: int, noun: str) -> str:
    return f"{count:,} {noun}" + ("" if count == 1 else "s")
