"""`melep evaluate RESULTS.csv RANK.json...`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from melep_cli import evaluation_report
from melep_cli.cli.app import (
    DebugOption,
    FormatOption,
    OutputFileOption,
    OutputFormat,
    QuietOption,
    app,
    cli_errors,
    configure_logging,
    emit,
    split_names,
)
from melep_cli.evaluation import DEFAULT_CONFIDENCE, DEFAULT_RESAMPLES, DEFAULT_SEED
from melep_cli.evaluation_io import evaluate
from melep_cli.report import to_json


@app.command("evaluate")
def evaluate_command(
    results: Annotated[
        Path,
        typer.Argument(
            help="Fine-tuning results: a CSV with columns target, checkpoint, finetuned (one row per run).",
            show_default=False,
        ),
    ],
    ranks: Annotated[
        list[Path],
        typer.Argument(help="Rank results (melep rank --format json), one per target.", show_default=False),
    ],
    scores: Annotated[
        str | None,
        typer.Option("--scores", "-s", metavar="LIST", help="Comma-separated scores to evaluate (default: all)."),
    ] = None,
    lower_is_better: Annotated[
        bool, typer.Option("--lower-is-better", help="The finetuned metric is lower-is-better (a loss, an error).")
    ] = False,
    resamples: Annotated[
        int,
        typer.Option(
            "--bootstrap", metavar="B", help="Bootstrap resamples of the targets for the intervals (0: none)."
        ),
    ] = DEFAULT_RESAMPLES,
    confidence: Annotated[
        float, typer.Option("--confidence", metavar="LEVEL", help="Confidence level of the intervals.")
    ] = DEFAULT_CONFIDENCE,
    seed: Annotated[int, typer.Option("--seed", metavar="S", help="Seed of the bootstrap's resamples.")] = DEFAULT_SEED,
    output_format: FormatOption = OutputFormat.table,
    output: OutputFileOption = None,
    quiet: QuietOption = False,
    debug: DebugOption = False,
) -> None:
    """Check which score predicted your own fine-tuning results best.

    RESULTS is a CSV of fine-tuning runs (columns target, checkpoint, finetuned: the metric after
    fine-tuning, higher is better unless --lower-is-better; repeated runs of a pair are averaged); each
    RANK is a `melep rank --format json` result whose target name matches the CSV's target column.

    Per score, the mean over targets of Pearson r, Spearman rho, Kendall tau and weighted tau between score
    and result, Rel@1, Rel@3, the top-1 hit rate and the regret of its pick (and of a random pick), each
    with a bootstrap interval over targets; then, per checkpoint, Pearson r across targets. Pairs found on
    only one side are named in a warning; a target with fewer than 3 checkpoints is left out.

    Example:
        melep evaluate finetuning.csv ranks/*.json
        melep evaluate runs.csv a.json b.json --scores melep -o eval.json
    """
    configure_logging(quiet=quiet)
    with cli_errors(debug):
        result = evaluate(
            results,
            ranks,
            scores=split_names(scores),
            lower_is_better=lower_is_better,
            resamples=resamples,
            confidence=confidence,
            seed=seed,
        )
        text = None
        if output_format is OutputFormat.json:
            text = to_json(evaluation_report.evaluation_to_dict(result))
        elif output_format is OutputFormat.csv:
            text = evaluation_report.evaluation_to_csv(result)
        emit(text, evaluation_report.evaluation_tables(result), output)
