"""Rendering results: Rich tables for people, JSON and CSV for scripts, atomic file writes."""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from rich.console import Console, ConsoleOptions, Group, RenderableType, RenderResult
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

from melep_cli.metric import MelepResult, binary_entropy
from melep_cli.targets.base import count_noun

if TYPE_CHECKING:
    from melep_cli.bootstrap import Uncertainty
    from melep_cli.forward_pass import ForwardReport
    from melep_cli.ranking import CheckpointOutcome, RankReport, ScoreOutcome


def finite_or_none(value: float) -> float | None:
    """JSON has no NaN: degenerate per-label values become null."""
    value = float(value)
    return value if math.isfinite(value) else None


def per_label_dict(result: MelepResult) -> dict[str, float | None]:
    """Target label name -> m(y), None for degenerate labels."""
    return {name: finite_or_none(value) for name, value in zip(result.label_names, result.per_label)}


def phi_lists(result: MelepResult) -> list[list[float | None]]:
    """phi as Y lists of Z numbers (None for degenerate rows)."""
    return [[finite_or_none(value) for value in row] for row in result.phi]


def score_to_dict(result: MelepResult, *, activation: str, pairs: bool = False) -> dict[str, Any]:
    """The JSON document of `melep score`."""
    document: dict[str, Any] = {
        "melep": result.score,
        "weighting": result.weighting,
        "activation": activation,
        "records": result.records,
        "labels": list(result.label_names),
        "prevalence": [float(p) for p in result.prevalence],
        "per_label": per_label_dict(result),
        "label_weights": {name: float(w) for name, w in zip(result.label_names, result.label_weights)},
        "degenerate": list(result.degenerate),
        "source_labels": list(result.source_names),
    }
    if pairs:
        document["phi"] = phi_lists(result)
    return document


def to_json(document: Any) -> str:
    """Stable, readable JSON text with a final newline."""
    return json.dumps(document, indent=2, allow_nan=False) + "\n"


def score_to_csv(result: MelepResult, *, activation: str, per_label: bool, pairs: bool) -> str:
    """One header row and one data row: the score, then per-label and phi columns on request."""
    header = ["melep", "weighting", "activation", "records"]
    row: list[Any] = [repr(result.score), result.weighting, activation, result.records]
    if per_label:
        for name, value in zip(result.label_names, result.per_label):
            header.append(f"per_label.{name}")
            row.append(_csv_number(value))
    if pairs:
        for target, phi_row in zip(result.label_names, result.phi):
            for source, value in zip(result.source_names, phi_row):
                header.append(f"phi.{target}.{source}")
                row.append(_csv_number(value))
    return rows_to_csv([header, row])


def rows_to_csv(rows: Iterable[Sequence[Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerows(rows)
    return buffer.getvalue()


def _csv_number(value: float) -> str:
    return repr(float(value)) if math.isfinite(value) else ""


def format_score(value: float | None, digits: int = 4) -> str:
    return "—" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


# Rich helpers: user strings are never markup, titles and captions wrap at words ---------------------


def literal(value: object, style: str = "") -> Text:
    """`value` as Rich Text, shown as is: a name like `model[v2]` is never read as markup (and never lost)."""
    return Text(str(value), style=style)


def annotation(value: str, style: str) -> Text:
    """A table title or caption, shown literally and wrapped at word boundaries within the table.

    no_wrap=False and overflow="fold" are explicit because the stdout console soft-wraps: without them
    Rich prints a title as one line and the terminal cuts it mid-word.
    """
    return Text(value, style=style, no_wrap=False, overflow="fold")


def set_annotations(table: Table, title: str | None = None, caption: str | None = None) -> Table:
    """Give `table` a literal title and caption, and at least the width of their longest word (up to the
    console's), so that only a word longer than the terminal is ever split."""
    if title is not None:
        table.title = annotation(title, "table.title")
    if caption is not None:
        table.caption = annotation(caption, "table.caption")
    words = f"{title or ''} {caption or ''}".split()
    if words:
        table.min_width = max(table.min_width or 0, max(Text(word).cell_len for word in words))
    return table


def natural_width(renderable: RenderableType) -> int:
    """The columns `renderable` takes when nothing has to be wrapped or cut."""
    console = Console(width=100_000, file=io.StringIO(), color_system=None)
    return Measurement.get(console, console.options, renderable).maximum


class FittedTable(Table):
    """A Table that, printed on a console narrower than it, prints `refit(width)` instead.

    So one table object serves both outputs of `emit`: a pipe or a file (PLAIN_TEXT_WIDTH wide, where it
    fits and prints as built) and a terminal of any width, without the command passing the width in.
    """

    def __init__(self, *args: Any, refit: Callable[[int], RenderableType] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.refit = refit

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        if self.refit is not None and natural_width(self) > options.max_width:
            yield self.refit(options.max_width)
        else:
            yield from super().__rich_console__(console, options)


def score_table(result: MelepResult, *, activation: str, source: str | None = None) -> Table:
    """The headline of `melep score`: the score and what it was computed from (`source`, the input paths)."""
    table = Table(header_style="bold")
    for column in ("MELEP", "weighting", "activation", "records", "target labels", "source labels"):
        table.add_column(column, justify="right" if column in ("MELEP", "records") else "left")
    used = len(result.label_names) - len(result.degenerate)
    table.add_row(
        format_score(result.score),
        literal(result.weighting),
        literal(activation),
        str(result.records),
        f"{used} of {len(result.label_names)}",
        str(len(result.source_names)),
    )
    return set_annotations(table, "MELEP (lower is better)", source or None)


def per_label_table(result: MelepResult) -> Table:
    """Per target label: prevalence, weight, m(y), and H(y), the value of an uninformative model."""
    table = Table(header_style="bold")
    table.add_column("label", overflow="fold")
    for column in ("positives", "prevalence", "weight", "m(y)", "H(y) (no information)"):
        table.add_column(column, justify="right")
    entropy = result.entropy
    for index, name in enumerate(result.label_names):
        degenerate = name in result.degenerate
        table.add_row(
            literal(name),
            str(int(result.positives[index])),
            f"{result.prevalence[index]:.3f}",
            "degenerate" if degenerate else f"{result.label_weights[index]:.3f}",
            format_score(result.per_label[index]),
            format_score(entropy[index]),
        )
    return set_annotations(table, "Per target label")


def phi_table(result: MelepResult, title: str = "phi(y, z): target label x source label") -> Table:
    """The Y x Z pair scores; the most informative source label of each row in bold. `title` is literal text."""
    table = Table(header_style="bold")
    table.add_column("target \\ source", overflow="fold")
    for name in result.source_names:
        table.add_column(literal(name), justify="right")
    for name, row in zip(result.label_names, result.phi):
        best = int(np.nanargmin(row)) if np.isfinite(row).any() else -1
        cells = [literal(format_score(value), "bold" if index == best else "") for index, value in enumerate(row)]
        table.add_row(literal(name), *cells)
    return set_annotations(table, title)


# melep rank ------------------------------------------------------------------------------------


def rank_to_dict(
    report: RankReport, *, per_label: bool = True, pairs: bool = False, command: str | None = None
) -> dict[str, Any]:
    """The JSON document of `melep rank`, as shared/spec/FORMATS.md fixes it (plus extra keys).

    `command`: the command line that produced it (the CLI's), recorded for reports."""
    from melep_cli import __version__  # the package's, defined after its modules are imported

    target = report.target
    results = []
    for outcome in report.outcomes:
        entry: dict[str, Any] = {
            "rank": outcome.rank,
            "checkpoint": outcome.name,
            "path": str(outcome.path),
            "format": outcome.format,
            "status": outcome.status,
        }
        result = outcome.result
        if result is not None:
            entry["melep"] = result.score
        if outcome.status == "ok":
            entry.update(_uncertainty_dict(outcome.uncertainty))
        if result is not None:
            entry["per_label"] = per_label_dict(result)
            entry["removed_share"] = _removed_share_dict(outcome)
            melep_verdict = outcome.scores["melep"].uncertainty if "melep" in outcome.scores else None
            if melep_verdict is not None and melep_verdict.per_label_ci is not None:
                entry["per_label_ci"] = _per_label_intervals(result.label_names, melep_verdict.per_label_ci)
            entry["source_labels"] = list(result.source_names)
            entry["degenerate"] = list(result.degenerate)
        if outcome.records is not None:
            entry["records"] = outcome.records
        if outcome.scores:
            entry["scores"] = {name: _score_dict(score, per_label=per_label) for name, score in outcome.scores.items()}
        if result is not None and pairs:
            entry["phi"] = phi_lists(result)
        if outcome.status != "ok":
            entry["error"] = outcome.error
        entry["device"] = outcome.device
        entry["precision"] = outcome.precision
        entry["seconds"] = round(outcome.seconds, 6)
        entry["cached"] = outcome.cached
        entry["entry"] = str(outcome.entry) if outcome.entry is not None else None
        if report.adaptive is not None:
            entry.update(_stop_dict(outcome))
        results.append(entry)
    document: dict[str, Any] = {
        "target": {
            "path": target.path,
            "format": target.format,
            "records": target.records,
            "labels": list(target.labels),
            "prevalence": [float(p) for p in target.prevalence],
            "no_information": [float(h) for h in binary_entropy(target.prevalence)],
            "skipped": [{"record": record, "reason": reason} for record, reason in target.skipped],
            "excluded_labels": [{"label": label, "reason": reason} for label, reason in target.excluded_labels],
            "name": target.name,
        },
        "weighting": report.weighting,
        "scores": list(report.scores),
        "rank_by": report.rank_by,
        "bootstrap": _bootstrap_dict(report),
        "results": results,
        "seconds": round(report.seconds, 6),
        "cache": str(report.cache) if report.cache is not None else None,
        "forward_passes": report.forward_passes,
        "melep_version": __version__,
        "created": report.created,
        "command": command,
        "adaptive": _adaptive_dict(report),
    }
    if not per_label:
        for entry in results:
            for key in ("per_label", "per_label_ci", "removed_share"):
                entry.pop(key, None)
    return document


def _stop_dict(outcome: CheckpointOutcome) -> dict[str, Any]:
    """An adaptive rank's keys of one result: whether and why it stopped early, and the look that decided."""
    stop = outcome.stop
    if stop is None:
        return {"stopped_early": None, "stop_reason": None, "stop": None}
    return {
        "stopped_early": outcome.stopped_early,
        "stop_reason": stop.reason,
        "stop": {
            "look": stop.look,
            "records": stop.records,
            "leader": stop.leader,
            "p_not_worse": stop.p_not_worse,
            "threshold": stop.threshold,
        },
    }


def _adaptive_dict(report: RankReport) -> dict[str, Any] | None:
    summary = report.adaptive
    if summary is None:
        return None
    return {
        "confidence": summary.settings.confidence,
        "seed": summary.settings.seed,
        "first_look": summary.settings.first_look,
        "looks": list(summary.looks),
        "records_forwarded": summary.records_forwarded,
        "records_full": summary.records_full,
        "records_used": summary.records_used,
    }


def _interval(bounds: Sequence[float]) -> list[float | None]:
    return [finite_or_none(bounds[0]), finite_or_none(bounds[1])]


def _per_label_intervals(names: Sequence[str], bounds: np.ndarray) -> dict[str, list[float | None]]:
    return {name: _interval(pair) for name, pair in zip(names, bounds)}


def _score_dict(score: ScoreOutcome, *, per_label: bool) -> dict[str, Any]:
    """One score of one result: value, direction, per label, and the bootstrap's keys; or its error."""
    if score.value is None:
        return {"direction": score.direction, "error": score.error}
    value = score.value
    document: dict[str, Any] = {"value": value.value, "direction": score.direction}
    document.update(_uncertainty_dict(score.uncertainty))
    if per_label:
        document["per_label"] = {name: finite_or_none(v) for name, v in zip(value.label_names, value.per_label)}
        if score.uncertainty is not None and score.uncertainty.per_label_ci is not None:
            document["per_label_ci"] = _per_label_intervals(value.label_names, score.uncertainty.per_label_ci)
    return document


def _uncertainty_dict(uncertainty: Uncertainty | None) -> dict[str, Any]:
    """The bootstrap's keys of one result (FORMATS.md): all null when it did not run."""
    if uncertainty is None:
        return {"ci": None, "p_best": None, "diff_ci": None, "tied_with_best": None}
    return {
        "ci": _interval(uncertainty.ci),
        "p_best": uncertainty.p_best,
        "diff_ci": _interval(uncertainty.diff_ci),
        "tied_with_best": uncertainty.tied_with_best,
    }


def _removed_share_dict(outcome: CheckpointOutcome) -> dict[str, float | None]:
    """Target label -> 1 - m(y) / H(y), None for degenerate labels."""
    assert outcome.result is not None and outcome.removed_share is not None
    return {name: finite_or_none(share) for name, share in zip(outcome.result.label_names, outcome.removed_share)}


def _bootstrap_dict(report: RankReport) -> dict[str, Any] | None:
    settings = report.bootstrap
    if settings is None:
        return None
    return {"resamples": settings.resamples, "confidence": settings.confidence, "seed": settings.seed}


def rank_to_csv(report: RankReport, *, per_label: bool = False) -> str:
    """One row per checkpoint: rank, name, path, format, status, melep, the bootstrap's columns (of the score
    ranked by), the other scores' values, ..., error."""
    others = [name for name in report.scores if name != "melep"]
    header = ["rank", "checkpoint", "path", "format", "status", "melep", *_CSV_UNCERTAINTY]
    header += [f"score.{name}" for name in others] + ["source_labels", "records", "seconds", "error"]
    labels = list(report.target.labels)
    if per_label:
        header += [f"per_label.{label}" for label in labels]
    if report.adaptive is not None:
        header += ["stopped_early", "stop_reason", "stop_look"]
    rows: list[list[Any]] = [header]
    for outcome in report.outcomes:
        result = outcome.result
        row: list[Any] = [
            outcome.rank if outcome.rank is not None else "",
            outcome.name,
            str(outcome.path),
            outcome.format or "",
            outcome.status,
            repr(result.score) if result is not None else "",
            *_uncertainty_cells(outcome),
            *(_score_cell(outcome, name) for name in others),
            outcome.source_labels if outcome.source_labels is not None else "",
            outcome.records if outcome.records is not None else "",
            f"{outcome.seconds:.3f}",
            outcome.error or "",
        ]
        if per_label:
            values = dict(zip(result.label_names, result.per_label)) if result is not None else {}
            row += [_csv_number(values[label]) if label in values else "" for label in labels]
        if report.adaptive is not None:
            stop = outcome.stop
            row += ["true" if outcome.stopped_early else "false", stop.reason, stop.look] if stop else ["", "", ""]
        rows.append(row)
    return rows_to_csv(rows)


#: The bootstrap's CSV columns, empty when it did not run (or for a failed checkpoint).
_CSV_UNCERTAINTY = ("ci_low", "ci_high", "p_best", "diff_ci_low", "diff_ci_high", "tied_with_best")


def _score_cell(outcome: CheckpointOutcome, name: str) -> str:
    score = outcome.scores.get(name)
    return repr(score.value.value) if score is not None and score.value is not None else ""


def _uncertainty_cells(outcome: CheckpointOutcome) -> list[str]:
    uncertainty = outcome.uncertainty
    if uncertainty is None:
        return [""] * len(_CSV_UNCERTAINTY)
    numbers = (*uncertainty.ci, uncertainty.p_best, *uncertainty.diff_ci)
    return [*(_csv_number(value) for value in numbers), "true" if uncertainty.tied_with_best else "false"]


#: Short forms of the format column when the terminal is narrow (the caption says what they stand for).
_SHORT_FORMATS = {"torchscript": "ts", "bfloat16": "bf16", "float16": "f16"}
#: The rank table's columns: name and justification. `interval` and `P(best)` need the bootstrap.
RANK_COLUMNS: tuple[tuple[str, str], ...] = (
    ("rank", "right"),
    ("checkpoint", "left"),
    ("format", "left"),
    ("score", "right"),
    ("interval", "right"),
    ("P(best)", "right"),
    ("Δ best", "right"),
    ("source labels", "right"),
    ("records", "right"),
    ("seconds", "right"),
)
_ALL = tuple(name for name, _ in RANK_COLUMNS)
_BOOTSTRAP_COLUMNS = ("interval", "P(best)")
#: The order in which RANK_LAYOUTS leave columns out.
_DROP_ORDER = ("records", "seconds", "source labels", "format", "Δ best", "interval")


def _layouts(extra: Sequence[str] = ()) -> tuple[tuple[tuple[str, ...], bool], ...]:
    """(columns, short format) from all columns down, one more of the drop order left out each time; the format is
    abbreviated before it goes. `extra`: the columns of the other scores computed, after Δ best; they go after
    the source labels."""
    everything = list(_ALL)
    everything[everything.index("Δ best") + 1 : everything.index("Δ best") + 1] = extra
    drop = [*_DROP_ORDER[:3], *reversed(extra), *_DROP_ORDER[3:]]
    layouts = [(tuple(everything), False)]
    shown, short = list(everything), False
    for name in drop:
        if name == "format":
            short = True
            layouts.append((tuple(shown), short))
        shown.remove(name)
        layouts.append((tuple(shown), short))
    return tuple(layouts)


#: The layouts tried for a width, widest first: (columns, short format). The first that fits is used;
#: the checkpoint name is never cut, so records, seconds and source labels go first (the JSON and CSV have
#: them), then the other scores' columns, then the format is abbreviated and goes, then Δ best and the
#: interval. Rank, checkpoint, the score and P(best) stay.
RANK_LAYOUTS: tuple[tuple[tuple[str, ...], bool], ...] = _layouts()
#: The column of another score computed beside the one ranked by: "score:NAME".
_EXTRA = "score:"
#: How a score's name reads as a column header and in titles.
SCORE_TITLES = {"melep": "MELEP", "logme": "LogME", "leep": "LEEP", "nce": "NCE"}


def score_title(name: str) -> str:
    return SCORE_TITLES.get(name, name)


def _format_text(outcome: CheckpointOutcome, *, short: bool = False) -> str:
    """The checkpoint format, with the precision when it is not the exact float32 (e.g. 'torchscript bfloat16');
    with `short`, abbreviated ('ts bf16')."""
    parts = [outcome.format or ""]
    if outcome.precision not in (None, "float32"):
        parts.append(outcome.precision)
    if short:
        parts = [_SHORT_FORMATS.get(part, part) for part in parts]
    return " ".join(parts)


def rank_table_columns(report: RankReport, width: int | None, *, top: int | None = None) -> tuple[str, ...]:
    """The columns `rank_table` shows at `width` (None: all of them): the first of RANK_LAYOUTS that fits."""
    return _rank_layout(report, width, top)[0]


def _rank_layout(report: RankReport, width: int | None, top: int | None) -> tuple[tuple[str, ...], bool]:
    extra = [f"{_EXTRA}{name}" for name in report.scores if name != report.rank_by]
    layouts = [
        (tuple(name for name in columns if report.bootstrap is not None or name not in _BOOTSTRAP_COLUMNS), short)
        for columns, short in _layouts(extra)
    ]
    if width is None:
        return layouts[0]
    for columns, short in layouts:
        if natural_width(_rank_grid(report, columns, short=short, top=top)) <= width:
            return columns, short
    return layouts[-1]  # a name wider than the terminal: it is folded onto several lines, never cut


def _rank_grid(report: RankReport, columns: Sequence[str], *, short: bool, top: int | None) -> FittedTable:
    """The rank table's columns and rows, without title or caption."""
    table = FittedTable(header_style="bold")
    justify = dict(RANK_COLUMNS)
    confidence = report.bootstrap.confidence if report.bootstrap is not None else None
    headers = {"score": score_title(report.rank_by)}
    if confidence is not None:
        headers["interval"] = f"{confidence:.0%} interval"
    for column in columns:
        # Numbers and ranks are short and never wrapped; a name too wide for the terminal folds, never "…".
        table.add_column(
            headers.get(column, score_title(column.removeprefix(_EXTRA))),
            justify=justify.get(column, "right"),  # type: ignore[arg-type]
            no_wrap=column not in ("checkpoint", "format"),
            overflow="fold",
        )
    ok = report.ok
    best = ok[0].value if ok else None
    for outcome in ok if top is None else ok[:top]:
        value = outcome.value
        assert value is not None and best is not None
        uncertainty = outcome.uncertainty
        tied = uncertainty is not None and uncertainty.tied_with_best
        cells = {
            "rank": str(outcome.rank),
            "checkpoint": literal(outcome.name),
            "format": literal(_format_text(outcome, short=short)),
            "score": format_score(value) + (STOPPED_MARK if outcome.stopped_early else ""),
            "interval": f"{uncertainty.ci[0]:.4f}–{uncertainty.ci[1]:.4f}" if uncertainty else "",
            "P(best)": _format_share(uncertainty.p_best) if uncertainty else "",
            "Δ best": "—" if outcome.rank == 1 else f"{value - best:+.4f}" + (" tied" if tied else ""),
            **({"Δ best": "stopped"} if outcome.stopped_early and outcome.rank != 1 else {}),
            "source labels": str(outcome.source_labels) if outcome.source_labels is not None else "",
            "records": str(outcome.records) if outcome.records is not None else "",
            "seconds": f"{outcome.seconds:.2f}",
        }
        for name, score in outcome.scores.items():
            shown = literal("error", "red") if score.value is None else format_score(score.value.value)
            cells[f"{_EXTRA}{name}"] = shown
        style = "bold green" if outcome.rank == 1 else "green" if tied else None
        table.add_row(*(cells.get(column, "") for column in columns), style=style)
    for outcome in report.failed:
        cells = {
            "rank": "—",
            "checkpoint": literal(outcome.name),
            "format": literal(_format_text(outcome, short=short)),
            "score": literal("error", "red"),
            "seconds": f"{outcome.seconds:.2f}",
        }
        table.add_row(*(cells.get(column, "") for column in columns))
    return table


def rank_table(report: RankReport, *, top: int | None = None, width: int | None = None) -> Table:
    """Ranked best first: rank, checkpoint, format, MELEP, difference from the best, Z, records, seconds.

    With `width` (a terminal's columns), only the columns that fit, by RANK_LAYOUTS: a checkpoint name is
    never cut, and the caption says which columns were left out. Without it every column, as before, and
    the table refits itself when printed on a console too narrow for them (a terminal; not a pipe or file).
    """
    columns, short = _rank_layout(report, width, top)
    table = _rank_grid(report, columns, short=short, top=top)
    if width is None:
        table.refit = lambda fitted: rank_table(report, top=top, width=fitted)
    target = report.target
    labels = ", ".join(f"{name} {p:.1%}" for name, p in zip(target.labels, target.prevalence))
    caption = f"{target.records} records; target labels (prevalence): {labels}"
    cached = sum(1 for outcome in report.outcomes if outcome.cached)
    if cached:
        caption += f"; outputs of {cached} of {len(report.outcomes)} checkpoints read from the cache {report.cache}"
    extra = [f"{_EXTRA}{name}" for name in report.scores if name != report.rank_by]
    drop = [*_DROP_ORDER[:3], *extra, *_DROP_ORDER[3:]]
    applies = [name for name in drop if report.bootstrap is not None or name not in _BOOTSTRAP_COLUMNS]
    left_out = [score_title(name.removeprefix(_EXTRA)) for name in applies if name not in columns]
    if left_out:
        caption += f"; not shown at this width: {', '.join(left_out)} (see --format json)"
    if short and "format" in columns and any(outcome.format == "torchscript" for outcome in report.outcomes):
        caption += "; ts = torchscript"
    if report.bootstrap is not None and report.ok:
        caption += (
            "; intervals and P(best) (the share of resamples in which it scores best) from"
            f" {report.bootstrap.resamples} paired bootstrap resamples of the records;"
            " tied: its difference from rank 1 is within the noise"
        )
    if any(outcome.stopped_early for outcome in report.ok):
        caption += (
            f"; {STOPPED_MARK} stopped early (--adaptive): scored on the records it saw (see records), not"
            " comparable with a full-target score (no Δ best)"
        )
    direction = f"{report.direction} is better"
    if report.rank_by == "melep":
        title = f"MELEP ranking on {target.path} ({report.weighting} weighting; {direction})"
    else:
        title = f"Ranking by {score_title(report.rank_by)} on {target.path} ({direction})"
    return set_annotations(table, title, caption)


#: The mark after the score of a checkpoint an adaptive rank stopped before the end of the target.
STOPPED_MARK = "*"


def rank_adaptive_note(report: RankReport) -> Table | None:
    """Under an adaptive ranking: the forward passes run against a full rank's, and how many records each
    checkpoint used and why it stopped; None for a full rank."""
    summary = report.adaptive
    if summary is None:
        return None
    settings = summary.settings
    share = summary.records_used / summary.records_full if summary.records_full else 0.0
    lines = [
        f"adaptive ({settings.confidence:.0%} confidence that rank 1 is the full-target best, seed {settings.seed},"
        f" looks at {', '.join(f'{size:,}' for size in summary.looks)} records): scores used"
        f" {summary.records_used:,} of the {summary.records_full:,} records x checkpoints of a full rank"
        f" ({share:.0%})"
        + (
            f"; {summary.records_forwarded:,} ran through a model now, the others' outputs came from the cache"
            if summary.records_forwarded < summary.records_used
            else ""
        )
    ]
    for outcome in report.ok:
        stop = outcome.stop
        if stop is None:
            continue
        records = count_noun(outcome.records or 0, "record")
        if stop.reason == "worse_than_leader":
            why = (
                f"dropped at {stop.records:,} records: worse than {stop.leader} (P(not worse) "
                f"{_format_tiny(stop.p_not_worse)} < {_format_tiny(stop.threshold)})"
            )
        elif stop.reason == "winner":
            why = f"won at {stop.records:,} records: every other checkpoint was dropped"
        else:
            why = "ran to the end of the target: not told apart from the leader before the records ran out"
        lines.append(f"{outcome.rank}. {outcome.name}: {records}, {why}")
    grid = Table.grid()
    grid.add_column(overflow="fold")
    for line in lines:
        grid.add_row(Text(line))
    return grid


def _format_tiny(value: float | None) -> str:
    return "—" if value is None else f"{value:.2g}"


def _format_share(share: float) -> str:
    """A probability in two decimals, never rounded to a false certainty ('<0.01', '>0.99')."""
    if 0.0 < share < 0.005:
        return "<0.01"
    if 0.995 <= share < 1.0:
        return ">0.99"
    return f"{share:.2f}"


def rank_noise_note(report: RankReport) -> Table | None:
    """A line under the ranking saying whether its best can be told apart from the others, or None (no
    bootstrap, or fewer than two ranked checkpoints); wrapped at words to the console, as a one-cell grid."""
    sentence = _noise_sentence(report)
    if sentence is None:
        return None
    grid = Table.grid()
    grid.add_column(overflow="fold")
    grid.add_row(Text(sentence))
    return grid


def _noise_sentence(report: RankReport) -> str | None:
    if report.bootstrap is None or len(report.ok) < 2:
        return None
    records = count_noun(report.target.records, "record")
    tied = report.tied_ranks
    if len(tied) > 1:
        return (
            f"{_ranks_phrase(tied)} are within the noise of this target: {records} (the"
            f" {report.bootstrap.confidence:.0%} interval of each one's difference from rank 1 contains 0)"
        )
    best = report.ok[0].uncertainty
    assert best is not None
    share = _format_share(best.p_best)
    return f"rank 1 is ahead of the others beyond the noise of this target ({records}): P(best) {share}"


def _ranks_phrase(ranks: Sequence[int]) -> str:
    """'ranks 1-3' for consecutive ranks, else 'ranks 1, 2 and 4'."""
    if list(ranks) == list(range(ranks[0], ranks[0] + len(ranks))):
        return f"ranks {ranks[0]}-{ranks[-1]}"
    return "ranks " + ", ".join(str(rank) for rank in ranks[:-1]) + f" and {ranks[-1]}"


def rank_errors_table(report: RankReport) -> Table | None:
    """The message of each failed checkpoint, or None when all were ranked."""
    if not report.failed:
        return None
    table = Table(header_style="bold red")
    table.add_column("checkpoint", overflow="fold")
    table.add_column("error", overflow="fold")
    for outcome in report.failed:
        table.add_row(literal(outcome.name), literal(outcome.error or ""))
    return set_annotations(table, "Checkpoints that failed")


_PER_LABEL_TITLE = (
    "Per target label m(y) (lower is better; best per label in bold) and, in brackets, the share of H(y)"
    " it removes (H(y): what an output carrying nothing about y scores)"
)


def rank_per_label_table(report: RankReport, *, top: int | None = None, width: int | None = None) -> Table | Group:
    """Target labels x checkpoints of m(y); the best (lowest) checkpoint per label in bold.

    The columns are headed by the checkpoint names when they fit `width`; else by their ranks (#1, #2, ...)
    with the names in the caption, and, when even those do not fit, the checkpoints are split over several
    tables. Names and values are never cut. Without `width`: names, refitted when printed too narrow.
    """
    ok = [outcome for outcome in (report.ok if top is None else report.ok[:top]) if outcome.result is not None]
    best = []
    for index in range(len(report.target.labels)):
        finite = [value for value in _per_label_values(ok, index) if math.isfinite(value)]
        best.append(min(finite) if finite else None)
    table = _per_label_grid(report, ok, best, by_rank=False)
    if width is None:
        table.refit = lambda fitted: rank_per_label_table(report, top=top, width=fitted)
    if width is None or natural_width(table) <= width or not ok:
        return set_annotations(table, _PER_LABEL_TITLE)
    chunks: list[list[CheckpointOutcome]] = []
    remaining = list(ok)
    while remaining:
        count = len(remaining)
        while count > 1 and natural_width(_per_label_grid(report, remaining[:count], best, by_rank=True)) > width:
            count -= 1
        chunks.append(remaining[:count])
        remaining = remaining[count:]
    tables = []
    for number, chunk in enumerate(chunks):
        legend = "columns: " + ", ".join(f"#{outcome.rank}={outcome.name}" for outcome in chunk)
        title = _PER_LABEL_TITLE if number == 0 else "Per target label m(y), continued"
        tables.append(set_annotations(_per_label_grid(report, chunk, best, by_rank=True), title, legend))
    return tables[0] if len(tables) == 1 else Group(*tables)


def _per_label_values(outcomes: Sequence[CheckpointOutcome], index: int) -> list[float]:
    return [outcome.result.per_label[index] for outcome in outcomes if outcome.result is not None]


def _per_label_grid(
    report: RankReport, outcomes: Sequence[CheckpointOutcome], best: Sequence[float | None], *, by_rank: bool
) -> FittedTable:
    """Labels as rows, `outcomes` as columns headed by name or (`by_rank`) by rank."""
    table = FittedTable(header_style="bold")
    table.add_column("label", overflow="fold")
    table.add_column("prevalence", justify="right", no_wrap=True)
    table.add_column("H(y)", justify="right", no_wrap=True)
    for outcome in outcomes:
        header = f"#{outcome.rank}" if by_rank else outcome.name
        table.add_column(literal(header), justify="right", no_wrap=True)
    entropy = binary_entropy(report.target.prevalence)
    for index, label in enumerate(report.target.labels):
        cells = []
        for outcome in outcomes:
            value = outcome.result.per_label[index]  # type: ignore[union-attr]
            share = outcome.removed_share[index]  # type: ignore[index]
            text = format_score(value) + (f" ({share:.0%})" if math.isfinite(share) else "")
            cells.append(literal(text, "bold" if best[index] is not None and value == best[index] else ""))
        prevalence = report.target.prevalence[index]
        table.add_row(literal(label), f"{prevalence:.3f}", format_score(entropy[index]), *cells)
    return table


# melep forward ---------------------------------------------------------------------------------


def forward_to_dict(report: ForwardReport) -> dict[str, Any]:
    """The JSON document of `melep forward`: per checkpoint, where its outputs are stored and what they are."""
    target = report.target
    results = []
    for result in report.results:
        entry: dict[str, Any] = {
            "checkpoint": result.name,
            "path": str(result.path),
            "format": result.format,
            "status": result.status,
        }
        if result.outputs is not None:
            entry.update(
                records=int(result.outputs.shape[0]),
                outputs=int(result.outputs.shape[1]),
                features=int(result.features.shape[1]) if result.features is not None else None,
                source_labels=list(result.source_labels or ()),
                input_specs=result.input_specs,
            )
        else:
            entry["error"] = result.error
        entry.update(
            cached=result.cached,
            entry=str(result.entry) if result.entry is not None else None,
            device=result.device,
            precision=result.precision,
            seconds=round(result.seconds, 6),
        )
        results.append(entry)
    return {
        "target": {
            "path": str(target.path),
            "format": target.format,
            "records": len(target),
            "skipped": [{"record": record, "reason": reason} for record, reason in [*target.excluded, *report.skipped]],
        },
        "cache": str(report.cache) if report.cache is not None else None,
        "forward_passes": report.forward_passes,
        "results": results,
        "seconds": round(report.seconds, 6),
    }


def forward_table(report: ForwardReport) -> Table:
    """One row per checkpoint: whether its outputs were computed now or read from the store, and their shape."""
    table = Table(header_style="bold")
    for column, justify in (
        ("checkpoint", "left"),
        ("format", "left"),
        ("outputs", "left"),
        ("records", "right"),
        ("Z", "right"),
        ("seconds", "right"),
    ):
        table.add_column(column, justify=justify, overflow="fold" if column == "checkpoint" else "ellipsis")  # type: ignore[arg-type]
    for result in report.results:
        if result.outputs is None:
            table.add_row(literal(result.name), literal(result.format or ""), literal("error", "red"), "", "", "")
            continue
        table.add_row(
            literal(result.name),
            literal(result.format or ""),
            "from the cache" if result.cached else "computed",
            str(result.outputs.shape[0]),
            str(result.outputs.shape[1]),
            f"{result.seconds:.2f}",
        )
    where = f"stored in {report.cache}" if report.cache is not None else "not stored (no cache)"
    caption = f"{report.forward_passes} forward pass(es) run; outputs {where}"
    return set_annotations(table, f"Forward passes on {report.target.path}", caption)


# melep inspect TARGET --------------------------------------------------------------------------

#: How many skipped records the target inspection lists.
LISTED_SKIPS = 20


def target_summary_table(info: dict[str, Any]) -> Table:
    """What an `inspect_target` dict says of the target: format, records, rates, durations, leads, labels."""
    table = Table(title=literal(f"Target {info['path']}"), show_header=False, title_justify="left")
    table.add_column("what", style="bold")
    table.add_column("value")

    def row(what: str, value: object) -> None:
        table.add_row(literal(what), literal(value))

    row("format", info["format"])
    row("records", f"{info['records']:,}")
    if info.get("decoded"):
        row("records read", f"{info.get('records_read', 0):,}")
    row("skipped", f"{len(info.get('skipped', [])):,}")
    if info.get("sampling_rates"):
        row("sampling rates", ", ".join(f"{rate} Hz ({count:,})" for rate, count in info["sampling_rates"].items()))
    elif info.get("header_sampling_rates"):
        row("sampling rates", ", ".join(f"{rate:g} Hz" for rate in info["header_sampling_rates"]))
    elif info.get("sampling_rate"):
        row("sampling rate", f"{info['sampling_rate']:g} Hz")
    if info.get("seconds"):
        seconds = info["seconds"]
        common = ", ".join(f"{value} s ({count:,})" for value, count in seconds["common"].items())
        row(
            "duration",
            f"min {seconds['min']:g} s, median {seconds['median']:g} s, max {seconds['max']:g} s; most common {common}",
        )
    if info.get("leads"):
        leads = info["leads"]
        if isinstance(leads[0], dict):
            row("leads", "; ".join(f"{' '.join(entry['leads'])} ({entry['records']:,})" for entry in leads))
        else:
            row("leads", " ".join(leads))
    for key, title in (
        ("label_source", "labels from"),
        ("label_level", "PTB-XL labels"),
        ("label_selection", "selection"),
    ):
        if info.get(key):
            row(title, info[key])
    if info.get("folds") is not None:
        row("folds", ", ".join(str(fold) for fold in info["folds"]))
    return table


def target_labels_table(info: dict[str, Any]) -> Table:
    """Every label of an `inspect_target` dict: positives, prevalence, code, description, whether selected."""
    entries = info.get("all_labels", info["labels"])
    left_out = [entry for entry in entries if not entry.get("selected", True)]
    title = f"Labels ({len(entries)}" + (f"; {len(entries) - len(left_out)} selected)" if left_out else ")")
    table = Table(title=literal(title), title_justify="left")
    table.add_column("label", style="bold")
    table.add_column("positives", justify="right")
    table.add_column("prevalence", justify="right")
    with_code = any("snomed_code" in entry for entry in entries)
    with_description = any(entry.get("description") for entry in entries)
    if with_code:
        table.add_column("SNOMED CT")
    if with_description:
        table.add_column("description")
    if left_out:
        table.add_column("selected")
    for entry in entries:
        row = [entry["name"], f"{entry['positives']:,}", f"{entry['prevalence']:.3f}"]
        if with_code:
            row.append(entry.get("snomed_code", ""))
        if with_description:
            row.append(entry.get("description", ""))
        if left_out:
            row.append("yes" if entry.get("selected", True) else f"no: {entry.get('note', '')}")
        table.add_row(*(literal(value) for value in row), style=None if entry.get("selected", True) else "dim")
    return table


def target_skips_table(info: dict[str, Any]) -> Table | None:
    """The first LISTED_SKIPS records an `inspect_target` dict says are skipped, with why; None when none is."""
    skipped = info.get("skipped", [])
    if not skipped:
        return None
    title = f"Skipped records ({len(skipped):,}" + (f", first {LISTED_SKIPS})" if len(skipped) > LISTED_SKIPS else ")")
    table = Table(title=literal(title), title_justify="left")
    table.add_column("record")
    table.add_column("reason")
    for entry in skipped[:LISTED_SKIPS]:
        table.add_row(literal(entry["id"]), literal(entry["reason"]))
    return table


def target_inspection_tables(info: dict[str, Any]) -> list[Table]:
    """The tables of `melep inspect TARGET` for an `inspect_target` dict: summary, labels, skipped records."""
    tables = [target_summary_table(info), target_labels_table(info)]
    skips = target_skips_table(info)
    if skips is not None:
        tables.append(skips)
    return tables
