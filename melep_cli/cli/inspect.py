"""`melep inspect PATH...`: what a checkpoint is, expects and produces, or what a target holds."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from melep_cli import report
from melep_cli.checkpoints import parse_device
from melep_cli.cli.app import (
    EXIT_CHECKPOINT_FAILED,
    DebugOption,
    FormatOption,
    OutputFileOption,
    OutputFormat,
    QuietOption,
    app,
    cli_errors,
    configure_logging,
    emit,
    stderr_console,
)
from melep_cli.cli.checkpoint_options import DeviceOption, StrictDeviceOption
from melep_cli.cli.target_options import takes_target_options
from melep_cli.errors import CheckpointError, UsageError
from melep_cli.inspecting import inspect_path, match_checkpoint_leads
from melep_cli.targets import TargetOptions


@app.command("inspect")
@takes_target_options
def inspect_command(
    paths: Annotated[
        list[Path],
        typer.Argument(
            help="Checkpoint files (.onnx, .pt, .pth, .ts, .torchscript) or targets (HDF5, WFDB or PTB-XL directory).",
            show_default=False,
        ),
    ],
    device: DeviceOption = "auto",
    strict_device: StrictDeviceOption = False,
    target_options: TargetOptions | None = None,
    output_format: FormatOption = OutputFormat.table,
    output: OutputFileOption = None,
    quiet: QuietOption = False,
    debug: DebugOption = False,
) -> None:
    """Show what a checkpoint is, expects and produces, or what a target holds.

    A checkpoint: its format, input, outputs (which holds the scores, which the features), metadata
    (defaults marked) and device; metadata the model contradicts is exit 1. A target: its records, rates,
    durations, leads, every label's count and prevalence, and the records that would be skipped.

    Example:
        melep inspect ckpts/model.onnx
        melep inspect data.h5 --labels NORM,MI --format json
    """
    configure_logging(quiet=quiet)
    failed = False
    with cli_errors(debug):
        parse_device(device)
        documents: list[dict[str, Any]] = []
        for path in paths:
            try:
                documents.append(
                    inspect_path(path, device=device, strict_device=strict_device, target_options=target_options)
                )
            except CheckpointError as error:
                if len(paths) == 1:
                    raise
                # Several paths: report this one, describe the others, exit 1 at the end.
                stderr_console.print(f"melep: error: {error}", markup=False, highlight=False)
                documents.append({"kind": "checkpoint", "path": str(path), "status": "error", "error": str(error)})
                failed = True
        targets = [document for document in documents if document["kind"] == "target"]
        for document in documents:
            if document["kind"] == "checkpoint" and "error" not in document and targets:
                document["leads_in_targets"] = [match_checkpoint_leads(document, target) for target in targets]
        text = None
        if output_format is OutputFormat.json:
            text = report.to_json(documents[0] if len(documents) == 1 else documents)
        elif output_format is OutputFormat.csv:
            kinds = {document["kind"] for document in documents}
            if len(kinds) > 1:
                raise UsageError("--format csv holds one kind of row: inspect checkpoints and targets separately")
            rows = _target_csv_rows(documents) if kinds == {"target"} else _csv_rows(documents)
            text = report.rows_to_csv(rows)
        tables: list[Any] = []
        for document in documents:
            if document["kind"] == "target":
                tables.extend(report.target_inspection_tables(document))
                tables.append(_lead_names_table(document))
            elif "error" not in document:
                tables.append(_table(document))
        emit(text, tables, output)
    if failed:
        raise typer.Exit(EXIT_CHECKPOINT_FAILED)


def _value_text(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, list):
        return ", ".join(str(item) for item in value)
    return str(value)


def _output_text(described: dict[str, Any]) -> str:
    """One model output as "name  shape [...]  dtype ...  (scores)" for the table."""
    shape = "unknown" if described["shape"] is None else f"[{', '.join(map(str, described['shape']))}]"
    role = f"  ({described['role']})" if described["role"] else ""
    return f"{described['name']}  shape {shape}  dtype {described['dtype'] or 'unknown'}{role}"


def _table(document: dict[str, Any]) -> Table:
    """One checkpoint as a two-column table; every cell and the title are Text: paths like model[v2].onnx,
    label names and shapes like [batch, 5] print as they are, never as Rich markup."""
    table = Table(title=Text(f"{document['name']} ({document['format']})"), show_header=False, title_justify="left")
    table.add_column("field", style="bold")
    table.add_column("value")
    declared = document["input"]
    shape = "unknown until it runs" if declared["shape"] is None else f"[{', '.join(map(str, declared['shape']))}]"
    table.add_row(Text("path"), Text(document["path"]))
    table.add_row(Text("input"), Text(f"{declared['name']}  shape {shape}  dtype {declared['dtype']}"))
    outputs = document["outputs"]
    if not outputs:
        table.add_row(Text("outputs"), Text("unknown until it runs"))
    for index, described in enumerate(outputs):
        table.add_row(Text("outputs" if index == 0 else ""), Text(_output_text(described)))
    table.add_row(Text("device"), Text(f"{document['device']} ({document['provider']})"))
    table.add_row(Text("metadata from"), Text(document["metadata_origin"]))
    defaulted = document["defaulted"]
    for key, value in document["metadata"].items():
        if key in defaulted:
            table.add_row(Text(key), Text(f"{defaulted[key]}  (default)", style="yellow"))
        elif value is not None:
            table.add_row(Text(key), Text(_value_text(value)))
    for index, step in enumerate(document["preprocessing"]):
        table.add_row(Text("preprocessing" if index == 0 else ""), Text(f"{index + 1}. {step['step']}: {step['what']}"))
    for matching in document.get("leads_in_targets", []):
        for lead_set in matching["lead_sets"]:
            table.add_row(Text(f"leads in {matching['target']}"), Text(_matching_text(lead_set)))
    for key in document["unknown_keys"]:
        table.add_row(Text(str(key)), Text("unknown key, ignored", style="yellow"))
    for note in document["notes"]:
        table.add_row(Text("note"), Text(note))
    return table


def _matching_text(lead_set: list[dict[str, Any]]) -> str:
    """'I <- DI, II <- DII, V6: missing (zeros)': each lead the model needs and what it is fed."""
    parts = []
    for entry in lead_set:
        if entry["target_lead"] is None:
            parts.append(f"{entry['lead']}: missing ({entry['fed']})")
        elif entry["target_lead"] == entry["lead"]:
            parts.append(entry["lead"])
        else:
            parts.append(f"{entry['lead']} <- {entry['target_lead']}")
    return ", ".join(parts)


def _lead_names_table(document: dict[str, Any]) -> Table:
    """How each of the target's lead names was matched to a standard lead (by name or alias)."""
    table = Table(title=Text("Lead names"), title_justify="left")
    table.add_column("target lead")
    table.add_column("standard lead")
    for entry in document.get("lead_matching", []):
        standard = entry["standard"]
        shown = Text("not a standard lead", style="yellow") if standard is None else Text(standard)
        table.add_row(Text(entry["lead"]), shown)
    return table


def _csv_rows(documents: list[dict[str, Any]]) -> list[list[Any]]:
    keys = ["labels", "sampling_rate", "samples", "leads", "layout", "output", "normalization", "dtype"]
    header = ["name", "path", "status", "format", "input_name", "input_shape", "output_width"]
    header += ["scores_output", "features_output", "outputs", "device", *keys]
    header += ["defaulted", "error"]
    rows: list[list[Any]] = [header]
    for document in documents:
        if "error" in document:
            rows.append(["", document["path"], "error", *[""] * (len(header) - 5), "", document["error"]])
            continue
        metadata = document["metadata"]
        shape = document["input"]["shape"]
        rows.append(
            [
                document["name"],
                document["path"],
                "ok",
                document["format"],
                document["input"]["name"],
                json.dumps(shape) if shape is not None else "",
                document["output"]["width"] if document["output"]["width"] is not None else "",
                document["scores_output"],
                document["features_output"],
                " ".join(described["name"] for described in document["outputs"]),
                document["device"],
                *[
                    " ".join(map(str, metadata[key])) if isinstance(metadata[key], list) else metadata[key]
                    for key in keys
                ],
                " ".join(document["defaulted"]),
                "",
            ]
        )
    return [["" if cell is None else cell for cell in row] for row in rows]


def _target_csv_rows(documents: list[dict[str, Any]]) -> list[list[Any]]:
    """One row per target label: path, format, records, label, positives, prevalence."""
    rows: list[list[Any]] = [["path", "format", "records", "label", "positives", "prevalence"]]
    for document in documents:
        for label in document["labels"]:
            rows.append(
                [
                    document["path"],
                    document["format"],
                    document["records"],
                    label["name"],
                    label["positives"],
                    repr(float(label["prevalence"])),
                ]
            )
    return rows
