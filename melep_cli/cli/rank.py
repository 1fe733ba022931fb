"""`melep rank --checkpoints DIR|FILES --target PATH`: the tool's main job."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from melep_cli import report
from melep_cli.adaptive import AdaptiveSettings
from melep_cli.bootstrap import DEFAULT_CONFIDENCE, DEFAULT_RESAMPLES, DEFAULT_SEED, BootstrapSettings
from melep_cli.checkpoints import parse_device
from melep_cli.cli.app import (
    EXIT_CHECKPOINT_FAILED,
    WRITES,
    DebugOption,
    MarkdownFormatOption,
    OutputFileOption,
    OutputFormat,
    QuietOption,
    WeightingName,
    WeightingOption,
    app,
    choice_enum,
    cli_errors,
    command_line,
    configure_logging,
    emit,
    progress_bar,
    split_names,
    stderr_console,
)
from melep_cli.cli.cache import CacheOption, NoCacheOption, cache_choice
from melep_cli.cli.checkpoint_options import (
    BatchSizeOption,
    CheckpointsOption,
    DeviceOption,
    PrecisionName,
    PrecisionOption,
    RecursiveOption,
    StrictDeviceOption,
    ThreadsOption,
)
from melep_cli.cli.executor_options import (
    CpusPerCheckpointOption,
    ExecutorName,
    ExecutorOption,
    GpusPerCheckpointOption,
    RayAddressOption,
    ShardRecordsOption,
    ray_options_of,
)
from melep_cli.cli.target_options import TargetOption, takes_target_options
from melep_cli.errors import UsageError
from melep_cli.ranking import DEFAULT_SCORES, RankReport, rank
from melep_cli.render import RankDocument, report_kind_for, write_report
from melep_cli.scores import SCORES
from melep_cli.targets import TargetOptions

#: The scores `--scores` and `--rank-by` name (`melep_cli.scores.SCORES`).
ScoreName = choice_enum("ScoreName", SCORES, "A transferability score.")


@app.command("rank")
@takes_target_options
def rank_command(
    checkpoints: CheckpointsOption,
    target: TargetOption,
    cache: CacheOption = None,
    no_cache: NoCacheOption = False,
    recursive: RecursiveOption = False,
    device: DeviceOption = "auto",
    strict_device: StrictDeviceOption = False,
    batch_size: BatchSizeOption = None,
    threads: ThreadsOption = None,
    precision: PrecisionOption = PrecisionName.float32,
    weighting: WeightingOption = WeightingName.prevalence,
    source_weighted: Annotated[
        bool,
        typer.Option(
            "--source-weighted",
            help="Average over source labels weighted by each checkpoint's metadata source_prevalence.",
        ),
    ] = False,
    per_label: Annotated[
        bool, typer.Option("--per-label", help="Add m(y) for every target label and checkpoint.")
    ] = False,
    pairs: Annotated[
        bool, typer.Option("--pairs", help="Add each checkpoint's phi(y, z) matrix (table and JSON).")
    ] = False,
    top: Annotated[
        int | None,
        typer.Option("--top", metavar="N", min=1, help="Show only the N best checkpoints (failures still listed)."),
    ] = None,
    scores: Annotated[
        str,
        typer.Option(
            "--scores",
            metavar="LIST",
            help=f"Scores to compute from the same forward passes, comma-separated: {', '.join(SCORES)}.",
        ),
    ] = ",".join(DEFAULT_SCORES),
    rank_by: Annotated[
        ScoreName | None,
        typer.Option("--rank-by", help="The score to rank by (default: the first of --scores).", show_default=False),
    ] = None,
    target_name: Annotated[
        str | None,
        typer.Option(
            "--target-name",
            metavar="NAME",
            help="What the target is called in the JSON (default: its file or directory name without suffix),"
            " e.g. to match a melep evaluate results file.",
            show_default=False,
        ),
    ] = None,
    resamples: Annotated[
        int,
        typer.Option(
            "--bootstrap",
            metavar="B",
            help="Paired bootstrap resamples of the target records for the intervals, P(best) and ties (0: none).",
        ),
    ] = DEFAULT_RESAMPLES,
    confidence: Annotated[
        float,
        typer.Option("--confidence", metavar="LEVEL", help="Confidence level of the intervals."),
    ] = DEFAULT_CONFIDENCE,
    seed: Annotated[
        int,
        typer.Option(
            "--seed",
            metavar="S",
            help="Seed of the bootstrap's resamples, and of the record order with --adaptive (the same seed, the"
            " same intervals and decisions).",
        ),
    ] = DEFAULT_SEED,
    report_file: Annotated[
        Path | None,
        typer.Option(
            "--report",
            metavar="FILE",
            help="Also write the ranking for people: FILE.html (a self-contained page with charts), FILE.md"
            " (Markdown for CI), or the ranking chart alone (.png, .svg, .pdf).",
            show_default=False,
        ),
        WRITES,
    ] = None,
    executor: ExecutorOption = ExecutorName.local,
    ray_address: RayAddressOption = None,
    gpus_per_checkpoint: GpusPerCheckpointOption = None,
    cpus_per_checkpoint: CpusPerCheckpointOption = None,
    shard_records: ShardRecordsOption = None,
    adaptive: Annotated[
        bool,
        typer.Option(
            "--adaptive",
            help="Stop feeding records to a checkpoint once it is shown worse than the leader, and stop once one"
            " is left: records in a seeded order (--seed), looks at 128, 256, 512, ... records; rank 1 is the"
            " full-target best with probability --confidence (README: what it promises).",
        ),
    ] = False,
    target_options: TargetOptions | None = None,
    output_format: MarkdownFormatOption = OutputFormat.table,
    output: OutputFileOption = None,
    quiet: QuietOption = False,
    debug: DebugOption = False,
) -> None:
    """Rank checkpoints by MELEP on a labelled target, best (lowest) first.

    Each checkpoint runs one forward pass over the target, and its outputs are stored (--cache): ranking
    the same target again, with other labels or weightings, runs none.

    Each score comes with its interval and P(best), from a paired bootstrap over the target records
    (--bootstrap); a checkpoint whose difference from the best is within that noise is marked tied.

    Example:
        melep rank -c ckpts/ -t data.h5
        melep rank -c ckpts/ -t data.h5 --labels NORM,MI --top 3 -o ranks.json
        melep rank -c ckpts/ -t data.h5 --report report.html

    Exit codes: 0 every checkpoint ranked; 1 at least one checkpoint failed (its error row is in
    the output, the others are ranked); 2 usage or target error; 3 internal error; 130 interrupted.
    """
    configure_logging(quiet=quiet)
    with cli_errors(debug):
        parse_device(device)
        if pairs and output_format is OutputFormat.csv:
            raise UsageError("--pairs needs --format json or table: a CSV row cannot hold the phi matrices")
        report_kind = report_kind_for(report_file, parameter="report_file") if report_file is not None else None
        choice = cache_choice(cache, no_cache)
        bootstrap = BootstrapSettings(resamples=resamples, confidence=confidence, seed=seed)
        with progress_bar("ranking", quiet=quiet) as update:
            result = rank(
                checkpoints,
                target,
                cache=choice,
                recursive=recursive,
                device=device,
                strict_device=strict_device,
                batch_size=batch_size,
                weighting=weighting.value,  # type: ignore[arg-type]
                source_weighted=source_weighted,
                progress=update,
                threads=threads,
                precision=precision.value,
                target_options=target_options,
                bootstrap=bootstrap,
                scores=split_names(scores) or [],
                rank_by=rank_by.value if rank_by is not None else None,
                target_name=target_name,
                executor=executor.value,
                ray_options=ray_options_of(
                    executor, ray_address, gpus_per_checkpoint, cpus_per_checkpoint, shard_records
                ),
                adaptive=AdaptiveSettings(confidence=confidence, seed=seed) if adaptive else None,
            )
        if top is not None:
            result = result.top(top)
        text = None
        if output_format is OutputFormat.json:
            text = report.to_json(report.rank_to_dict(result, pairs=pairs, command=command_line()))
        elif output_format is OutputFormat.csv:
            text = report.rank_to_csv(result, per_label=per_label)
        elif output_format is OutputFormat.markdown:
            from melep_cli.render.markdown import rank_markdown

            text = rank_markdown(_document(result))
        if report_file is not None and report_kind is not None:
            write_report(_document(result), report_file, report_kind)
            if not quiet:
                stderr_console.print(f"melep: wrote {report_file} ({report_kind})", markup=False, highlight=False)
        emit(text, _tables(result, per_label=per_label, pairs=pairs), output)
    if result.failed:
        raise typer.Exit(EXIT_CHECKPOINT_FAILED)


def _document(result: RankReport) -> RankDocument:
    """The run as the reports draw it: its JSON document with the phi matrices, as `melep report` reads one."""
    return RankDocument.from_rank(result, command=command_line())


def _tables(result: RankReport, *, per_label: bool, pairs: bool) -> list:
    tables: list = [report.rank_table(result)]
    note = report.rank_noise_note(result)
    if note is not None:
        tables.append(note)
    adaptive_note = report.rank_adaptive_note(result)
    if adaptive_note is not None:
        tables.append(adaptive_note)
    errors = report.rank_errors_table(result)
    if errors is not None:
        tables.append(errors)
    if per_label and any(outcome.result is not None for outcome in result.ok):
        tables.append(report.rank_per_label_table(result))
    if pairs:
        for outcome in result.ok:
            assert outcome.result is not None
            tables.append(report.phi_table(outcome.result, title=f"phi(y, z) of {outcome.name}"))
    return tables
