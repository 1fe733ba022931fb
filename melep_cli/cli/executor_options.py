"""Options of the commands that run forward passes on an executor (`rank`, `forward`): `--executor` and Ray's."""

from __future__ import annotations

from typing import Annotated

import typer

from melep_cli.cli.app import choice_enum
from melep_cli.executors import DEFAULT_SHARD_RECORDS, EXECUTORS, LOCAL, RayOptions

#: Choices of --executor (`melep_cli.executors.EXECUTORS`).
ExecutorName = choice_enum("ExecutorName", EXECUTORS, "Choices of --executor.")
ExecutorOption = Annotated[
    ExecutorName,
    typer.Option(
        "--executor",
        help="Where the forward passes run: local (this process), or ray (a Ray cluster: pip install "
        "'melep-cli[ray]'; one actor per checkpoint, the target read by the workers in record shards). "
        "Outputs already cached never start Ray.",
    ),
]
RayAddressOption = Annotated[
    str | None,
    typer.Option(
        "--ray-address",
        metavar="auto|HOST:PORT",
        help="The Ray cluster (default: $RAY_ADDRESS, else auto: the one `ray start --head` started on this "
        "node; none running: a local Ray with this machine's CPUs).",
        show_default=False,
    ),
]
GpusPerCheckpointOption = Annotated[
    float | None,
    typer.Option(
        "--gpus-per-checkpoint",
        metavar="N",
        help="GPUs of each checkpoint's Ray actor (default 0: CPUs; 0.5: two checkpoints share a GPU).",
        show_default=False,
    ),
]
CpusPerCheckpointOption = Annotated[
    int | None,
    typer.Option(
        "--cpus-per-checkpoint",
        metavar="N",
        help="CPUs of each checkpoint's Ray actor, and its forward pass's threads unless --threads (default 1).",
        show_default=False,
    ),
]
ShardRecordsOption = Annotated[
    int | None,
    typer.Option(
        "--shard-records",
        metavar="N",
        help=f"Records per Ray shard (default {DEFAULT_SHARD_RECORDS}), rounded up to a multiple of the batch size.",
        show_default=False,
    ),
]


def ray_options_of(
    executor: ExecutorName, address: str | None, gpus: float | None, cpus: int | None, shard: int | None
) -> RayOptions | None:
    """The Ray options given (None with the local executor and none given: the library says if some are)."""
    given = {
        "address": address,
        "gpus_per_checkpoint": gpus,
        "cpus_per_checkpoint": cpus,
        "shard_records": shard,
    }
    given = {name: value for name, value in given.items() if value is not None}
    if executor.value == LOCAL and not given:
        return None
    return RayOptions(**given)
