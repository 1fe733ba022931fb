"""`melep forward --checkpoints DIR|FILES --target PATH`: stage 1 alone, for batch jobs that score later."""

from __future__ import annotations

import typer

from melep_cli import report
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
    progress_bar,
)
from melep_cli.cli.cache import CacheOption, cache_choice
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
from melep_cli.forward_pass import forward
from melep_cli.targets import TargetOptions


@app.command("forward")
@takes_target_options
def forward_command(
    checkpoints: CheckpointsOption,
    target: TargetOption,
    cache: CacheOption = None,
    recursive: RecursiveOption = False,
    device: DeviceOption = "auto",
    strict_device: StrictDeviceOption = False,
    batch_size: BatchSizeOption = None,
    threads: ThreadsOption = None,
    precision: PrecisionOption = PrecisionName.float32,
    executor: ExecutorOption = ExecutorName.local,
    ray_address: RayAddressOption = None,
    gpus_per_checkpoint: GpusPerCheckpointOption = None,
    cpus_per_checkpoint: CpusPerCheckpointOption = None,
    shard_records: ShardRecordsOption = None,
    target_options: TargetOptions | None = None,
    output_format: FormatOption = OutputFormat.table,
    output: OutputFileOption = None,
    quiet: QuietOption = False,
    debug: DebugOption = False,
) -> None:
    """Run the forward passes and store their outputs, for a later `melep rank`.

    For batch jobs: run the forward passes where the models run fast (a GPU), then `melep rank` the same
    checkpoints and target with the same --cache, with any labels or weighting, without running one.

    Example:
        melep forward -c ckpts/ -t data.h5 --cache /scratch/melep
        melep rank -c ckpts/ -t data.h5 --cache /scratch/melep --labels NORM,MI

    Exit codes: 0 every checkpoint's outputs are stored; 1 at least one checkpoint failed (the others are
    stored); 2 usage or target error; 3 internal error; 130 interrupted.
    """
    configure_logging(quiet=quiet)
    with cli_errors(debug):
        choice = cache_choice(cache, no_cache=False)
        if choice is None:
            raise UsageError("melep forward stores outputs: it needs a cache")
        with progress_bar("forward", quiet=quiet) as update:
            result = forward(
                checkpoints,
                target,
                cache=choice,
                recursive=recursive,
                device=device,
                strict_device=strict_device,
                batch_size=batch_size,
                threads=threads,
                precision=precision.value,
                progress=update,
                target_options=target_options,
                executor=executor.value,
                ray_options=ray_options_of(
                    executor, ray_address, gpus_per_checkpoint, cpus_per_checkpoint, shard_records
                ),
            )
        text = None
        if output_format is OutputFormat.json:
            text = report.to_json(report.forward_to_dict(result))
        elif output_format is OutputFormat.csv:
            raise UsageError("melep forward writes a table or JSON (--format table|json)")
        emit(text, [report.forward_table(result)], output)
    if any(item.status != "ok" for item in result.results):
        raise typer.Exit(EXIT_CHECKPOINT_FAILED)
