"""`melep convert SOURCE OUT.h5`: decode a target once into one HDF5 file, then rank it many times."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from melep_cli import report
from melep_cli.cli.app import (
    DebugOption,
    FormatOption,
    OutputFormat,
    QuietOption,
    app,
    check_output_path,
    cli_errors,
    configure_logging,
    emit,
    progress_bar,
)
from melep_cli.cli.target_options import (
    TARGET_PANEL,
    FoldsOption,
    LabelsCsvOption,
    LabelsOption,
    MinPositivesOption,
    PtbxlLabels,
    PtbxlLabelsOption,
    StrictOption,
    TargetArgument,
    TargetFormatOption,
    target_kwargs,
)
from melep_cli.targets.convert import ConvertResult, convert


def _summary_table(result: ConvertResult) -> list[Table]:
    summary = Table(title=f"Wrote {result.output}", show_header=False, title_justify="left")
    summary.add_column("what", style="bold")
    summary.add_column("value")
    summary.add_row("source", str(result.source))
    summary.add_row("records", f"{result.records:,}")
    summary.add_row("skipped", f"{len(result.skipped):,}")
    summary.add_row("signals", f"{result.records} x {result.samples} x {len(result.leads)} float32 mV")
    summary.add_row("sampling rate", f"{result.sampling_rate:g} Hz")
    summary.add_row("leads", " ".join(result.leads))
    if result.padded:
        summary.add_row("lengths", "differ: zero-padded to the longest, true lengths in 'lengths'")
    labels = Table(title=f"Labels ({len(result.label_names)})", title_justify="left")
    labels.add_column("label", style="bold")
    labels.add_column("prevalence", justify="right")
    for name, prevalence in zip(result.label_names, result.prevalence):
        labels.add_row(name, f"{prevalence:.3f}")
    return [summary, labels]


@app.command("convert")
def convert_command(
    source: TargetArgument,
    output: Annotated[Path, typer.Argument(help="HDF5 file to write (replaced atomically).", show_default=False)],
    sampling_rate: Annotated[
        float | None,
        typer.Option("--sampling-rate", help="Resample every record to this rate (Hz). Default: keep the rate."),
    ] = None,
    seconds: Annotated[
        float | None,
        typer.Option(
            "--seconds",
            help="Crop (first S seconds) or zero-pad every record to S seconds. Default: keep lengths; records of "
            "different lengths are padded to the longest and their lengths stored in 'lengths'.",
        ),
    ] = None,
    source_rate: Annotated[
        float | None,
        typer.Option(
            "--source-rate", help="PTB-XL: read the 100 or 500 Hz records (default 100).", rich_help_panel=TARGET_PANEL
        ),
    ] = None,
    target_format: TargetFormatOption = None,
    labels: LabelsOption = None,
    labels_csv: LabelsCsvOption = None,
    min_positives: MinPositivesOption = 10,
    ptbxl_labels: PtbxlLabelsOption = PtbxlLabels.superclass,
    folds: FoldsOption = None,
    strict: StrictOption = False,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Records decoded per step.")] = 64,
    output_format: FormatOption = OutputFormat.table,
    quiet: QuietOption = False,
    debug: DebugOption = False,
) -> None:
    """Write SOURCE (HDF5, WFDB/Challenge or PTB-XL) to OUTPUT in melep's HDF5 layout, optionally resampled and cut."""
    configure_logging(quiet=quiet)
    with cli_errors(debug):
        # OUTPUT is an argument, not the shared --output: checked here, before the long decode.
        check_output_path(output, [source, labels_csv], option="OUTPUT")
        options = target_kwargs(
            target_format=target_format,
            labels=labels,
            labels_csv=labels_csv,
            min_positives=min_positives,
            ptbxl_labels=ptbxl_labels,
            folds=folds,
            sampling_rate=source_rate,
            strict=strict,
        )
        options["source_rate"] = options.pop("sampling_rate")
        with progress_bar("converting", quiet=quiet) as advance:
            result = convert(
                source,
                output,
                sampling_rate=sampling_rate,
                seconds=seconds,
                batch_size=batch_size,
                progress=advance,
                **options,
            )
        text = None
        if output_format is OutputFormat.json:
            text = report.to_json(result.to_dict())
        elif output_format is OutputFormat.csv:
            rows = [
                ["label", "prevalence"],
                *([name, repr(p)] for name, p in zip(result.label_names, result.prevalence)),
            ]
            text = report.rows_to_csv(rows)
        emit(text, _summary_table(result), None)
