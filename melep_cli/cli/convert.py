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
    stderr_console,
)
from melep_cli.cli.target_options import TARGET_PANEL, TargetArgument, takes_target_options
from melep_cli.errors import UsageError
from melep_cli.targets import TargetOptions
from melep_cli.targets.convert import ConvertResult, convert


def _summary_table(result: ConvertResult) -> list[Table]:
    """The table output: what was written (rates read and written included), then the labels' prevalence."""
    summary = Table(title=f"Wrote {result.output}", show_header=False, title_justify="left")
    summary.add_column("what", style="bold")
    summary.add_column("value")
    summary.add_row("source", str(result.source))
    summary.add_row("records", f"{result.records:,}")
    summary.add_row("skipped", f"{len(result.skipped):,}")
    summary.add_row("signals", f"{result.records} x {result.samples} x {len(result.leads)} float32 mV")
    if result.resampled:
        read = ", ".join(f"{rate:g}" for rate in result.source_sampling_rates)
        summary.add_row("sampling rate", f"{result.sampling_rate:g} Hz (resampled from {read} Hz)")
    else:
        summary.add_row("sampling rate", f"{result.sampling_rate:g} Hz (as read)")
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
@takes_target_options
def convert_command(
    source: TargetArgument,
    output: Annotated[
        Path, typer.Argument(metavar="OUTPUT", help="HDF5 file to write (replaced atomically).", show_default=False)
    ],
    resample: Annotated[
        float | None,
        typer.Option(
            "--resample",
            metavar="HZ",
            help="Write every record resampled to this rate (Hz). Default: the rate the records are read at.",
            show_default=False,
        ),
    ] = None,
    seconds: Annotated[
        float | None,
        typer.Option(
            "--seconds",
            metavar="S",
            help="Crop (first S seconds) or zero-pad every record to S seconds. Default: keep lengths; records of "
            "different lengths are padded to the longest and their lengths stored in 'lengths'.",
        ),
    ] = None,
    source_rate: Annotated[
        float | None,
        typer.Option("--source-rate", hidden=True, rich_help_panel=TARGET_PANEL),  # an error naming the two options
    ] = None,
    target_options: TargetOptions | None = None,
    batch_size: Annotated[int, typer.Option("--batch-size", metavar="N", min=1, help="Records decoded per step.")] = 64,
    output_format: FormatOption = OutputFormat.table,
    quiet: QuietOption = False,
    debug: DebugOption = False,
) -> None:
    """Decode a target once into one HDF5 file, to rank it many times.

    SOURCE (HDF5, WFDB/Challenge or PTB-XL) is written to OUTPUT in melep's HDF5 layout, optionally
    resampled and cut. --sampling-rate is the rate the records are read at, as in every command (PTB-XL:
    the 100 or 500 Hz files); --resample HZ is the rate they are written at. Both rates are reported on
    stderr.

    Example:
        melep convert ptbxl/ ptbxl.h5 --ptbxl-labels subclass
        melep convert challenge/ challenge.h5 --resample 500 --seconds 10
    """
    configure_logging(quiet=quiet)
    with cli_errors(debug):
        if source_rate is not None:
            raise UsageError(
                "--source-rate is not an option: --sampling-rate gives the rate the records are read at (PTB-XL's 100 "
                "or 500 Hz files) and --resample HZ the rate they are written at"
            )
        # OUTPUT is an argument, not the shared --output: checked here, before the long decode.
        check_output_path(output, [source, target_options and target_options.labels_csv], option="OUTPUT")
        with progress_bar("converting", quiet=quiet) as advance:
            result = convert(
                source,
                output,
                resample=resample,
                seconds=seconds,
                batch_size=batch_size,
                progress=advance,
                target_options=target_options,
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
        if not quiet:
            line = f"melep: wrote {output}: {result.records} records {result.rates_text()}"
            stderr_console.print(line, markup=False, highlight=False)
        emit(text, _summary_table(result), None)
