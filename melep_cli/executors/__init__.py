"""Where the forward stage runs: the executor choice and its options, defined once for the library and the CLI.

`local` (the default) runs every forward pass in this process (`melep_cli.forward_pass`). `ray` runs them on a
Ray cluster (`melep_cli.executors.ray_executor`, imported only on that path, with `ray` itself): one Ray actor
per checkpoint, the target split into record shards that the workers read themselves. Stage 2 is the same.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

from melep_cli.checkpoints.checkpoint import DEFAULT_BATCH_SIZE
from melep_cli.errors import UsageError

LOCAL = "local"
RAY = "ray"
#: The executors `forward(executor=...)` and `--executor` accept.
EXECUTORS = (LOCAL, RAY)

#: Where to find the Ray cluster by default: `auto` (RAY_ADDRESS, else the cluster started on this node with
#: `ray start --head`); when none is running, a local one is started with this machine's CPUs.
DEFAULT_RAY_ADDRESS = "auto"
#: Records per shard by default: a multiple of every default batch size (32 on the CPU, 256 on CUDA), so that
#: a worker's batches are the local executor's and the outputs the same bit for bit.
DEFAULT_SHARD_RECORDS = 1024
#: How often Ray restarts a checkpoint's actor whose process died, and retries its shard there.
DEFAULT_RAY_RETRIES = 2


@dataclass(frozen=True)
class RayOptions:
    """How the `ray` executor runs. Validated once, when it is made.

    address: the cluster: 'auto' (RAY_ADDRESS, else the cluster of this node; none running: start a local
        one), or HOST:PORT / ray://HOST:PORT. None: $RAY_ADDRESS, else 'auto'.
    gpus_per_checkpoint: GPUs of each checkpoint's actor (0: it runs on CPUs; fractions share a GPU).
    cpus_per_checkpoint: CPUs of each checkpoint's actor, and its forward pass's threads (unless `threads`).
    shard_records: records per shard (None: DEFAULT_SHARD_RECORDS), rounded up to a multiple of the batch size.
    retries: restarts of a dead actor and retries of its shard before only that checkpoint fails.
    """

    address: str | None = None
    gpus_per_checkpoint: float = 0.0
    cpus_per_checkpoint: int = 1
    shard_records: int | None = None
    retries: int = DEFAULT_RAY_RETRIES

    def __post_init__(self) -> None:
        address = self.address.strip() if isinstance(self.address, str) else self.address
        if address is not None and not address:
            raise UsageError("expected 'auto' or HOST:PORT, got ''", parameter="ray_address")
        object.__setattr__(self, "address", address)
        gpus = self.gpus_per_checkpoint
        if isinstance(gpus, bool) or not isinstance(gpus, int | float) or not math.isfinite(gpus) or gpus < 0:
            raise UsageError(f"must be 0 or more GPUs, got {gpus!r}", parameter="gpus_per_checkpoint")
        object.__setattr__(self, "gpus_per_checkpoint", float(gpus))
        for name, least in (("cpus_per_checkpoint", 1), ("retries", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise UsageError(f"must be a whole number, at least {least}, got {value!r}", parameter=name)
        shard = self.shard_records
        if shard is not None and (isinstance(shard, bool) or not isinstance(shard, int) or shard < 1):
            raise UsageError(f"must be at least 1 record, got {shard!r}", parameter="shard_records")

    @property
    def resolved_address(self) -> str:
        """The address given, else $RAY_ADDRESS, else 'auto'."""
        return self.address or os.environ.get("RAY_ADDRESS") or DEFAULT_RAY_ADDRESS

    def shard_size(self, batch_size: int | None) -> int:
        """Records per shard: `shard_records` rounded up to a multiple of the batch size (None: the CPU default's)."""
        records = self.shard_records or DEFAULT_SHARD_RECORDS
        step = batch_size or DEFAULT_BATCH_SIZE
        return -(-records // step) * step


def check_executor(executor: str, ray_options: RayOptions | None) -> str:
    """The executor's name, checked: one of EXECUTORS, and Ray options only with 'ray'."""
    name = getattr(executor, "value", executor)
    if name not in EXECUTORS:
        raise UsageError(f"{name!r} is not one of {', '.join(EXECUTORS)}", parameter="executor")
    if ray_options is not None and name != RAY:
        raise UsageError(f"Ray options apply to the {RAY!r} executor only, not {name!r}", parameter="executor")
    return name
