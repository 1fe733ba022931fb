"""`melep annotate CHECKPOINT --labels ...`: store melep metadata inside a checkpoint users already have."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from melep_cli import report
from melep_cli.checkpoints import annotate_checkpoint
from melep_cli.cli.app import (
    ActivationName,
    DebugOption,
    FormatOption,
    OutputFormat,
    QuietOption,
    app,
    choice_enum,
    cli_errors,
    configure_logging,
    emit,
    parse_floats,
    split_names,
)
from melep_cli.errors import UsageError
from melep_cli.preprocess import (
    AGGREGATES,
    CROPS,
    DEFAULT_FILTER_ORDER,
    DTYPES,
    LAYOUTS,
    MISSING_LEADS,
    NORMALIZATIONS,
    BandFilter,
    Windows,
)

#: Choices of --layout, --normalization and --dtype (`melep_cli.preprocess.LAYOUTS`, `NORMALIZATIONS`, `DTYPES`).
LayoutName = choice_enum("LayoutName", LAYOUTS, "Choices of --layout.")
NormalizationName = choice_enum("NormalizationName", NORMALIZATIONS, "Choices of --normalization.")
DtypeName = choice_enum("DtypeName", DTYPES, "Choices of --dtype.")
#: Choices of --crop, --aggregate and --missing-leads (`CROPS`, `AGGREGATES`, `MISSING_LEADS`).
CropName = choice_enum("CropName", CROPS, "Choices of --crop.")
AggregateName = choice_enum("AggregateName", AGGREGATES, "Choices of --aggregate.")
MissingLeadsName = choice_enum("MissingLeadsName", MISSING_LEADS, "Choices of --missing-leads.")


@app.command("annotate")
def annotate_command(
    checkpoint: Annotated[Path, typer.Argument(help="An ONNX or TorchScript checkpoint.")],
    labels: Annotated[str | None, typer.Option("--labels", "-l", help="Comma-separated source label names.")] = None,
    sampling_rate: Annotated[float | None, typer.Option("--sampling-rate", help="Hz the model was trained on.")] = None,
    samples: Annotated[int | None, typer.Option("--samples", min=1, help="Input length in samples.")] = None,
    leads: Annotated[str | None, typer.Option("--leads", help="Comma-separated lead names in input order.")] = None,
    layout: Annotated[
        LayoutName | None,
        typer.Option("--layout", help="NCT (batch, leads, time), NTC or NT (leads x time).", case_sensitive=False),
    ] = None,
    activation: Annotated[
        ActivationName | None,
        typer.Option(
            "--activation",
            "-a",
            help="What the outputs are (metadata key 'output'): logits, probabilities or softmax.",
            case_sensitive=False,
        ),
    ] = None,
    normalization: Annotated[
        NormalizationName | None,
        typer.Option(
            "--normalization",
            help="none, zscore or minmax (per record and lead), zscore-record (all leads at once); "
            "a fitted scaler: --scaler.",
            case_sensitive=False,
        ),
    ] = None,
    scaler: Annotated[
        Path | None,
        typer.Option(
            "--scaler",
            help="A JSON file with arrays mean and std (one per lead, in the model's lead order): a fitted scaler.",
        ),
    ] = None,
    crop: Annotated[
        CropName | None,
        typer.Option("--crop", help="Which samples of a longer record: start or center.", case_sensitive=False),
    ] = None,
    windows_stride: Annotated[
        int | None,
        typer.Option(
            "--windows-stride",
            min=1,
            help="Run every window of --samples samples starting every S samples; aggregate per record.",
        ),
    ] = None,
    aggregate: Annotated[
        AggregateName | None,
        typer.Option(
            "--aggregate", help="How windows' raw outputs become the record's: mean or max.", case_sensitive=False
        ),
    ] = None,
    band: Annotated[
        str | None,
        typer.Option(
            "--filter",
            help="Zero-phase Butterworth band HIGHPASS,LOWPASS in Hz (0.67,40); either may be empty (0.5, or ,40).",
        ),
    ] = None,
    filter_order: Annotated[
        int | None,
        typer.Option("--filter-order", min=1, max=16, help=f"Butterworth order [default: {DEFAULT_FILTER_ORDER}]."),
    ] = None,
    scale: Annotated[
        float | None,
        typer.Option("--scale", help="Factor the millivolt signal is multiplied by (1000: microvolts)."),
    ] = None,
    missing_leads: Annotated[
        MissingLeadsName | None,
        typer.Option(
            "--missing-leads", help="A lead the target lacks: error, or zero (with a warning).", case_sensitive=False
        ),
    ] = None,
    dtype: Annotated[DtypeName | None, typer.Option("--dtype", help="Input type.", case_sensitive=False)] = None,
    source_prevalence: Annotated[
        str | None, typer.Option("--source-prevalence", help="Comma-separated fractions of positives, per label.")
    ] = None,
    name: Annotated[str | None, typer.Option("--name", help="Name shown in reports.")] = None,
    description: Annotated[str | None, typer.Option("--description", help="Free text shown in reports.")] = None,
    scores_output: Annotated[
        str | None,
        typer.Option(
            "--scores-output",
            help="The model output holding the source-label scores, by the name 'melep inspect' lists "
            "(TorchScript tuple elements are 0, 1, ...; default: the only output, or the first).",
            show_default=False,
        ),
    ] = None,
    features_output: Annotated[
        str | None,
        typer.Option(
            "--features-output",
            help="The model output holding penultimate features (batch, D), by name as for --scores-output.",
            show_default=False,
        ),
    ] = None,
    from_json: Annotated[
        Path | None, typer.Option("--from-json", help="Merge a metadata JSON object from this file first.")
    ] = None,
    remove: Annotated[list[str] | None, typer.Option("--remove", help="Drop this metadata key (repeatable).")] = None,
    replace: Annotated[bool, typer.Option("--replace", help="Start from empty metadata, not the existing.")] = False,
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Write the annotated checkpoint here instead of replacing CHECKPOINT."),
    ] = None,
    output_format: FormatOption = OutputFormat.table,
    quiet: QuietOption = False,
    debug: DebugOption = False,
) -> None:
    """Write melep metadata (labels, sampling rate, leads, ...) into a checkpoint.

    ONNX files keep it in metadata_props, TorchScript files in melep.json. It is merged with what is
    there (--replace starts empty), checked against the model (exit 1, nothing written, when the model
    contradicts it), and CHECKPOINT is replaced unless --output is given.

    Example:
        melep annotate model.onnx --labels NORM,MI,STTC,CD,HYP --sampling-rate 100
        melep annotate model.ts --from-json model.json -o annotated.ts
        melep annotate st_mem.onnx --sampling-rate 250 --filter 0.67,40
        melep annotate xresnet.onnx --windows-stride 50 --aggregate max
    """
    configure_logging(quiet=quiet)
    with cli_errors(debug):
        document = _read_json(from_json, "--from-json") if from_json is not None else None
        fitted = _read_json(scaler, "--scaler") if scaler is not None else None
        if aggregate is not None and windows_stride is None:
            raise UsageError("--aggregate needs --windows-stride")
        if filter_order is not None and band is None:
            raise UsageError("--filter-order needs --filter")
        windows = None
        if windows_stride is not None:
            windows = Windows(windows_stride, aggregate.value if aggregate else "mean")
        result = annotate_checkpoint(
            checkpoint,
            output=output,
            labels=split_names(labels),
            sampling_rate=sampling_rate,
            samples=samples,
            leads=split_names(leads),
            layout=layout.value if layout else None,
            activation=activation.value if activation else None,
            normalization=normalization.value if normalization else None,
            dtype=dtype.value if dtype else None,
            source_prevalence=parse_floats(source_prevalence, "--source-prevalence"),
            name=name,
            description=description,
            scores_output=scores_output,
            features_output=features_output,
            crop=crop.value if crop else None,
            windows=windows,
            filter=_parse_band(band, filter_order),
            scale=scale,
            scaler=fitted,
            missing_leads=missing_leads.value if missing_leads else None,
            metadata=document,
            remove=remove or (),
            replace=replace,
        )
        text = None
        if output_format is OutputFormat.json:
            text = report.to_json({"path": str(result.path), "metadata": result.document})
        elif output_format is OutputFormat.csv:
            rows = [["key", "value"]] + [[key, json.dumps(value)] for key, value in result.document.items()]
            text = report.rows_to_csv(rows)
        # Text, not markup: paths like model[v2].onnx and label names print as they are.
        table = Table(title=Text(f"Metadata written to {result.path}"), show_header=False, title_justify="left")
        table.add_column("key", style="bold")
        table.add_column("value")
        for key, value in result.document.items():
            if isinstance(value, dict):
                shown = json.dumps(value)
            else:
                shown = ", ".join(map(str, value)) if isinstance(value, list) else str(value)
            table.add_row(Text(str(key)), Text(shown))
        emit(text, [table], None)


def _read_json(path: Path, option: str) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise UsageError(f"{option} {path}: cannot read ({error.strerror or error})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise UsageError(f"{option} {path}: not valid JSON ({error})") from None


def _parse_band(text: str | None, order: int | None) -> BandFilter | None:
    """'0.67,40' -> BandFilter(0.67, 40, order); an empty side leaves that bound out."""
    if text is None:
        return None
    parts = [part.strip() for part in text.split(",")]
    if len(parts) != 2:
        raise UsageError(f"--filter: expected HIGHPASS,LOWPASS in Hz (either may be empty), got {text!r}")
    try:
        highpass, lowpass = (float(part) if part else None for part in parts)
    except ValueError:
        raise UsageError(f"--filter: expected numbers of Hz, got {text!r}") from None
    return BandFilter(highpass, lowpass, order if order is not None else DEFAULT_FILTER_ORDER)
