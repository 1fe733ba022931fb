"""Rendering results: Rich tables for people, JSON and CSV for scripts, atomic file writes."""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from rich.table import Table
from rich.text import Text

from melep_cli.metric import MelepResult

if TYPE_CHECKING:
    from melep_cli.forward import ForwardReport
    from melep_cli.rank import CheckpointOutcome, RankReport


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


def score_table(result: MelepResult, *, activation: str, source: str | None = None) -> Table:
    """The headline of `melep score`: the score and what it was computed from."""
    table = Table(title="MELEP (lower is better)", show_header=True, header_style="bold")
    for column in ("MELEP", "weighting", "activation", "records", "target labels", "source labels"):
        table.add_column(column, justify="right" if column in ("MELEP", "records") else "left")
    used = len(result.label_names) - len(result.degenerate)
    table.add_row(
        format_score(result.score),
        result.weighting,
        activation,
        str(result.records),
        f"{used} of {len(result.label_names)}",
        str(len(result.source_names)),
    )
    if source:
        table.caption = source
    return table


def per_label_table(result: MelepResult) -> Table:
    """Per target label: prevalence, weight, m(y), and H(y), the value of an uninformative model."""
    table = Table(title="Per target label", header_style="bold")
    table.add_column("label")
    for column in ("positives", "prevalence", "weight", "m(y)", "H(y) (no information)"):
        table.add_column(column, justify="right")
    entropy = result.entropy
    for index, name in enumerate(result.label_names):
        degenerate = name in result.degenerate
        table.add_row(
            name,
            str(int(result.positives[index])),
            f"{result.prevalence[index]:.3f}",
            "degenerate" if degenerate else f"{result.label_weights[index]:.3f}",
            format_score(result.per_label[index]),
            format_score(entropy[index]),
        )
    return table


def phi_table(result: MelepResult, title: str = "phi(y, z): target label x source label") -> Table:
    """The Y x Z pair scores; the most informative source label of each row in bold."""
    table = Table(title=title, header_style="bold")
    table.add_column("target \\ source")
    for name in result.source_names:
        table.add_column(name, justify="right")
    for name, row in zip(result.label_names, result.phi):
        best = int(np.nanargmin(row)) if np.isfinite(row).any() else -1
        cells = [
            f"[bold]{format_score(value)}[/bold]" if index == best else format_score(value)
            for index, value in enumerate(row)
        ]
        table.add_row(name, *cells)
    return table


# melep rank ------------------------------------------------------------------------------------


def rank_to_dict(report: RankReport, *, per_label: bool = True, pairs: bool = False) -> dict[str, Any]:
    """The JSON document of `melep rank`, as shared/spec/FORMATS.md fixes it (plus extra keys)."""
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
        if outcome.result is not None:
            result = outcome.result
            entry["melep"] = result.score
            entry["per_label"] = per_label_dict(result)
            entry["source_labels"] = list(result.source_names)
            entry["degenerate"] = list(result.degenerate)
            entry["records"] = result.records
            if pairs:
                entry["phi"] = phi_lists(result)
        else:
            entry["error"] = outcome.error
        entry["device"] = outcome.device
        entry["precision"] = outcome.precision
        entry["seconds"] = round(outcome.seconds, 6)
        entry["cached"] = outcome.cached
        entry["entry"] = str(outcome.entry) if outcome.entry is not None else None
        results.append(entry)
    document: dict[str, Any] = {
        "target": {
            "path": target.path,
            "format": target.format,
            "records": target.records,
            "labels": list(target.labels),
            "prevalence": [float(p) for p in target.prevalence],
            "skipped": [{"record": record, "reason": reason} for record, reason in target.skipped],
        },
        "weighting": report.weighting,
        "results": results,
        "seconds": round(report.seconds, 6),
        "cache": str(report.cache) if report.cache is not None else None,
        "forward_passes": report.forward_passes,
    }
    if not per_label:
        for entry in results:
            entry.pop("per_label", None)
    return document


def rank_to_csv(report: RankReport, *, per_label: bool = False) -> str:
    """One row per checkpoint: rank, name, path, format, status, melep, ..., error."""
    header = ["rank", "checkpoint", "path", "format", "status", "melep", "source_labels", "records", "seconds", "error"]
    labels = list(report.target.labels)
    if per_label:
        header += [f"per_label.{label}" for label in labels]
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
            len(result.source_names) if result is not None else "",
            result.records if result is not None else "",
            f"{outcome.seconds:.3f}",
            outcome.error or "",
        ]
        if per_label:
            values = dict(zip(result.label_names, result.per_label)) if result is not None else {}
            row += [_csv_number(values[label]) if label in values else "" for label in labels]
        rows.append(row)
    return rows_to_csv(rows)


def _format_text(outcome: CheckpointOutcome) -> str:
    """The checkpoint format, with the precision when it is not the exact float32 (e.g. 'torchscript bfloat16')."""
    text = outcome.format or ""
    if outcome.precision not in (None, "float32"):
        text = f"{text} {outcome.precision}"
    return text


def rank_table(report: RankReport, *, top: int | None = None) -> Table:
    """Ranked best first: rank, checkpoint, format, MELEP, difference from the best, Z, records, seconds."""
    target = report.target
    table = Table(
        title=f"MELEP ranking on {target.path} ({report.weighting} weighting; lower is better)",
        header_style="bold",
    )
    for column, justify in (
        ("rank", "right"),
        ("checkpoint", "left"),
        ("format", "left"),
        ("MELEP", "right"),
        ("Δ best", "right"),
        ("source labels", "right"),
        ("records", "right"),
        ("seconds", "right"),
    ):
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    ok = report.ok
    best = ok[0].melep if ok else None
    shown = ok if top is None else ok[:top]
    for outcome in shown:
        result = outcome.result
        assert result is not None and best is not None
        style = "bold green" if outcome.rank == 1 else None
        table.add_row(
            str(outcome.rank),
            outcome.name,
            _format_text(outcome),
            format_score(result.score),
            "—" if outcome.rank == 1 else f"+{result.score - best:.4f}",
            str(len(result.source_names)),
            str(result.records),
            f"{outcome.seconds:.2f}",
            style=style,
        )
    for outcome in report.failed:
        seconds = f"{outcome.seconds:.2f}"
        table.add_row("—", outcome.name, _format_text(outcome), "[red]error[/red]", "", "", "", seconds)
    labels = ", ".join(f"{name} {p:.1%}" for name, p in zip(target.labels, target.prevalence))
    caption = f"{target.records} records; target labels (prevalence): {labels}"
    cached = sum(1 for outcome in report.outcomes if outcome.cached)
    if cached:
        caption += f"; outputs of {cached} of {len(report.outcomes)} checkpoints read from the cache {report.cache}"
    table.caption = caption
    return table


def rank_errors_table(report: RankReport) -> Table | None:
    """The message of each failed checkpoint, or None when all were ranked."""
    if not report.failed:
        return None
    table = Table(title="Checkpoints that failed", header_style="bold red")
    table.add_column("checkpoint")
    table.add_column("error", overflow="fold")
    for outcome in report.failed:
        table.add_row(outcome.name, outcome.error or "")
    return table


def rank_per_label_table(report: RankReport, *, top: int | None = None) -> Table:
    """Target labels x checkpoints of m(y); the best (lowest) checkpoint per label in bold."""
    ok = report.ok if top is None else report.ok[:top]
    table = Table(title="Per target label m(y) (lower is better; best per label in bold)", header_style="bold")
    table.add_column("label")
    table.add_column("prevalence", justify="right")
    for outcome in ok:
        table.add_column(outcome.name, justify="right")
    for index, label in enumerate(report.target.labels):
        values = [outcome.result.per_label[index] for outcome in ok if outcome.result is not None]
        finite = [value for value in values if math.isfinite(value)]
        best = min(finite) if finite else None
        cells = [
            f"[bold]{format_score(value)}[/bold]" if best is not None and value == best else format_score(value)
            for value in values
        ]
        table.add_row(label, f"{report.target.prevalence[index]:.3f}", *cells)
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
    table = Table(title=Text(f"Forward passes on {report.target.path}"), header_style="bold")
    for column, justify in (
        ("checkpoint", "left"),
        ("format", "left"),
        ("outputs", "left"),
        ("records", "right"),
        ("Z", "right"),
        ("seconds", "right"),
    ):
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    for result in report.results:
        if result.outputs is None:
            table.add_row(Text(result.name), result.format or "", Text("error", style="red"), "", "", "")
            continue
        table.add_row(
            Text(result.name),
            result.format or "",
            "from the cache" if result.cached else "computed",
            str(result.outputs.shape[0]),
            str(result.outputs.shape[1]),
            f"{result.seconds:.2f}",
        )
    where = f"stored in {report.cache}" if report.cache is not None else "not stored (no cache)"
    table.caption = Text(f"{report.forward_passes} forward pass(es) run; outputs {where}")
    return table
