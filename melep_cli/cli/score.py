"""`melep score OUTPUTS LABELS`."""

from __future__ import annotations

from typing import Annotated

import typer

from melep_cli import report
from melep_cli.cli.app import (
    READS,
    ActivationName,
    DebugOption,
    FormatOption,
    OutputFileOption,
    OutputFormat,
    QuietOption,
    WeightingName,
    WeightingOption,
    app,
    cli_errors,
    configure_logging,
    emit,
    parse_floats,
    split_names,
)
from melep_cli.scoring import score


@app.command("score")
def score_command(
    outputs: Annotated[
        str, typer.Argument(help="Model outputs, n x Z: .npy, .csv or FILE.h5:DATASET.", show_default=False), READS
    ],
    labels: Annotated[
        str,
        typer.Argument(help="Target labels, n x Y of 0/1: .npy, .csv or FILE.h5:DATASET.", show_default=False),
        READS,
    ],
    activation: Annotated[
        ActivationName,
        typer.Option("--activation", "-a", help="How outputs become probabilities.", case_sensitive=False),
    ] = ActivationName.logits,
    weighting: WeightingOption = WeightingName.prevalence,
    label_names: Annotated[
        str | None, typer.Option("--label-names", metavar="LIST", help="Comma-separated target label names.")
    ] = None,
    source_names: Annotated[
        str | None, typer.Option("--source-names", metavar="LIST", help="Comma-separated source label names.")
    ] = None,
    source_weights: Annotated[
        str | None,
        typer.Option(
            "--source-weights", metavar="LIST", help="Comma-separated Z weights replacing the plain mean over z."
        ),
    ] = None,
    per_label: Annotated[bool, typer.Option("--per-label", help="Show m(y) for every target label.")] = False,
    pairs: Annotated[bool, typer.Option("--pairs", help="Show the phi(y, z) matrix.")] = False,
    output_format: FormatOption = OutputFormat.table,
    output: OutputFileOption = None,
    quiet: QuietOption = False,
    debug: DebugOption = False,
) -> None:
    """Score model outputs you already have against target labels (no checkpoint runs).

    MELEP of OUTPUTS (n x Z: a model's source-label scores on n target records, logits unless --activation
    says otherwise) against LABELS (n x Y: the same records' 0/1 target labels, in the same order). Lower
    is better.

    Example:
        melep score outputs.npy labels.npy
        melep score run.h5:logits target.h5:labels --per-label --format json
    """
    configure_logging(quiet=quiet)
    with cli_errors(debug):
        result = score(
            outputs,
            labels,
            activation=activation.value,  # type: ignore[arg-type]
            weighting=weighting.value,  # type: ignore[arg-type]
            label_names=split_names(label_names),
            source_names=split_names(source_names),
            source_weights=parse_floats(source_weights, "--source-weights"),
        )
        text = None
        if output_format is OutputFormat.json:
            text = report.to_json(report.score_to_dict(result, activation=activation.value, pairs=pairs))
        elif output_format is OutputFormat.csv:
            text = report.score_to_csv(result, activation=activation.value, per_label=per_label, pairs=pairs)
        tables = [report.score_table(result, activation=activation.value, source=f"{outputs} vs {labels}")]
        if per_label:
            tables.append(report.per_label_table(result))
        if pairs:
            tables.append(report.phi_table(result))
        emit(text, tables, output)
