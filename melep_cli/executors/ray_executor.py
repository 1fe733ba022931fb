"""The forward stage on a Ray cluster: one actor per checkpoint, the target read by the workers in record shards.

The unit of work is the local executor's (`forward_pass._load` + `_Running`): for these checkpoints (not found
in the store) and these record positions, each checkpoint's outputs (and features) with their record ids, or
its error. Here each checkpoint is loaded once in its own Ray actor (`cpus_per_checkpoint` CPUs, or
`gpus_per_checkpoint` GPUs); the actor gets the open target (its path, the records and labels chosen, put in
Ray's object store once), reads the signals itself from that path (one every node sees) and runs its shards one
after the other: `Target.batches(batch_size, positions=shard)`, then the same `_Running.probe/feed` as
the local path. The driver merges the shards in record order into a `_Running` per checkpoint, so that
`forward()` finishes and stores them with the local path's code: the entries and the scores are the same.

Failures: a checkpoint that fails to load or run on its worker is its error result; an actor whose process
dies is restarted and its shard retried (`max_restarts` / `max_task_retries`), and past the retries only that
checkpoint fails. A target problem met on a worker (unreadable, strict mode) stops the run, once. Ctrl-C kills
the actors. A Ray started here is shut down on every way out; one found running is only disconnected from.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from melep_cli.errors import CheckpointError, TargetError, UsageError
from melep_cli.executors import RayOptions
from melep_cli.forward_pass import ForwardResult, ProgressCallback, _load, _Running, _warn_unless_shared
from melep_cli.store import EntryKey
from melep_cli.targets import Target
from melep_cli.targets.base import describe_skips

log = logging.getLogger("melep")

#: Shard calls queued on each actor ahead of the one it runs: it never waits for the driver between shards.
QUEUED_PER_ACTOR = 2


def import_ray() -> Any:
    """`ray`, or a UsageError saying how to install it."""
    try:
        import ray
    except ImportError as error:
        raise UsageError(
            f"the Ray executor needs ray ({error}): pip install 'melep-cli[ray]'", parameter="executor"
        ) from None
    return ray


@dataclass
class _Described:
    """What a worker says of its loaded checkpoint: the driver's stand-in for the `Checkpoint` in `_Running`."""

    name: str
    path: Path
    format: str
    device: str
    precision: str
    activation: str
    labels: tuple[str, ...] | None
    source_prevalence: tuple[float, ...] | None
    defaults: str | None

    @property
    def metadata(self) -> SimpleNamespace:
        return SimpleNamespace(source_prevalence=self.source_prevalence)

    def defaults_message(self) -> str | None:
        return self.defaults


def _problem_of(outcome: ForwardResult) -> dict[str, Any]:
    """A failed outcome in a form that crosses processes (MelepError subclasses do not all unpickle)."""
    problem = outcome.problem
    return {
        "message": outcome.error,
        "format": outcome.format,
        "scope": problem.scope if problem is not None else None,
        "reason": problem.reason if problem is not None else None,
    }


class CheckpointWorker:
    """A Ray actor's state: one loaded checkpoint, the target opened on first use, shard after shard."""

    def __init__(self, path: Path, name: str, load_options: dict[str, Any], batch_size: int | None) -> None:
        self._usage_error: str | None = None
        self._item: _Running | None = None
        self._failed: dict[str, Any] | None = None
        try:
            outcome, checkpoint = _load(path, name, **load_options)
        except UsageError as error:  # stops the run, as it does locally
            self._usage_error = str(error)
            return
        if checkpoint is None:
            self._failed = _problem_of(outcome)
            return
        self._item = _Running(checkpoint, outcome, None)
        self._load_seconds = outcome.seconds
        self._target: Target | None = None
        self._batch_size = batch_size
        self._probed = False

    def run_shard(self, positions: np.ndarray, target: list[Any]) -> dict[str, Any]:
        """This checkpoint over the records at `positions` of the target (`[its object ref]`, fetched once per
        actor): its outputs, their ids, the records skipped."""
        if self._usage_error is not None:
            return {"usage_error": self._usage_error}
        if self._failed is not None:
            return {"failed": self._failed}
        item = self._item
        assert item is not None
        seconds = item.outcome.seconds
        if self._target is None:
            import ray

            self._target = ray.get(target[0])
        target = self._target
        try:
            for batch in target.batches(self._batch_size or item.checkpoint.batch_size, positions=positions):
                if not self._probed:
                    item.probe(batch)
                    self._probed = True
                if item.outcome.status == "ok":
                    item.feed(batch, {}, self._batch_size)
                if item.outcome.status != "ok":
                    break
        except TargetError as error:
            return {"target_error": str(error)}
        if item.outcome.status != "ok":
            return {"failed": _problem_of(item.outcome)}
        checkpoint = item.checkpoint
        done = {
            "outputs": item._outputs,
            "features": item._features,
            "ids": item._ids,
            "specs": list(item._specs),
            "skipped": list(target.skipped[len(target.excluded) :]),
            "seconds": item.outcome.seconds - seconds,
            "load_seconds": self._load_seconds,
            "checkpoint": _Described(
                name=checkpoint.name,
                path=checkpoint.path,
                format=checkpoint.format,
                device=checkpoint.device,
                precision=checkpoint.precision,
                activation=checkpoint.activation,
                labels=checkpoint.labels,
                source_prevalence=checkpoint.metadata.source_prevalence,
                defaults=checkpoint.defaults_message(),
            ),
        }
        item._outputs, item._features, item._ids, item._specs = [], [], [], {}
        return done


@dataclass
class _Job:
    """One checkpoint on the cluster, as the driver follows it."""

    index: int
    path: Path
    name: str
    key: EntryKey | None
    outcome: ForwardResult
    actor: Any = None
    shards: dict[int, dict[str, Any]] = field(default_factory=dict)  # shard number -> its result
    next_shard: int = 0
    in_flight: int = 0
    done: bool = False


def forward_on_ray(
    misses: Sequence[tuple[Path, str, EntryKey | None]],
    opened: Target,
    *,
    batch_size: int | None,
    load_options: dict[str, Any],
    options: RayOptions,
    progress: ProgressCallback | None,
    positions: np.ndarray | None = None,
) -> tuple[list[ForwardResult], list[_Running], int]:
    """The forward passes of `misses` (path, name, store key) on Ray, over the records at `positions` of the
    target in that order (None: every record), cut into shards of `options.shard_size`.

    Returns each checkpoint's result (in order), a `_Running` per checkpoint that ran (its outputs merged in
    record order, for `forward()` to finish and store), and the records decoded (per checkpoint). The records
    the workers skipped become the driver target's skips, as if it had decoded them.
    """
    ray = import_ray()
    if len(opened) == 0:
        raise TargetError(f"{opened.path}: no usable record to score")
    shard = options.shard_size(batch_size)
    order = np.arange(len(opened), dtype=np.int64) if positions is None else np.asarray(positions, dtype=np.int64)
    shards = [order[start : start + shard] for start in range(0, order.size, shard)]
    jobs = [
        _Job(index, path, name, key, ForwardResult(name=name, path=path, format=_format_of(path)))
        for index, (path, name, key) in enumerate(misses)
    ]
    worker_options = {
        **load_options,
        "threads": load_options.get("threads") or options.cpus_per_checkpoint,
        "share_cores": False,  # one model per worker process
    }
    with _connected(ray, options):
        remote = ray.remote(CheckpointWorker).options(
            num_cpus=options.cpus_per_checkpoint,
            num_gpus=options.gpus_per_checkpoint,
            max_restarts=options.retries,
            max_task_retries=options.retries,
        )
        target_ref = ray.put(opened)  # once, however many actors
        pending: dict[Any, tuple[_Job, int]] = {}
        try:
            _drive(
                ray, remote, jobs, shards, pending, target_ref, batch_size, worker_options, progress, options.retries
            )
        finally:  # also on an error or Ctrl-C: the queued shards are cancelled (not retried), the actors killed
            for reference in pending:
                _cancel(ray, reference)
            for job in jobs:
                if job.actor is not None:
                    with contextlib.suppress(Exception):
                        ray.kill(job.actor, no_restart=True)
    return _merge(jobs, opened, shards)


def _drive(
    ray: Any,
    remote: Any,
    jobs: list[_Job],
    shards: list[np.ndarray],
    pending: dict[Any, tuple[_Job, int]],
    target_ref: Any,
    batch_size: int | None,
    worker_options: dict[str, Any],
    progress: ProgressCallback | None,
    retries: int,
) -> None:
    """Start an actor per checkpoint, keep QUEUED_PER_ACTOR shards queued on each (`pending`: the calls not yet
    gathered), gather their results."""
    total, done_records = sum(len(shard) for shard in shards) * len(jobs), 0

    def submit(job: _Job) -> None:
        while not job.done and job.in_flight < QUEUED_PER_ACTOR and job.next_shard < len(shards):
            reference = job.actor.run_shard.remote(shards[job.next_shard], [target_ref])
            pending[reference] = (job, job.next_shard)
            job.next_shard += 1
            job.in_flight += 1

    def finish(job: _Job) -> None:
        job.done = True
        for reference, (owner, _) in list(pending.items()):
            if owner is job:
                del pending[reference]
                _cancel(ray, reference)
        ray.kill(job.actor, no_restart=True)  # frees its CPUs/GPUs for the checkpoints waiting

    for job in jobs:
        job.actor = remote.remote(job.path, job.name, worker_options, batch_size)
        submit(job)
    if not shards:
        for job in jobs:
            finish(job)
    while pending:
        ready, _ = ray.wait(list(pending), num_returns=1)
        job, number = pending.pop(ready[0])
        job.in_flight -= 1
        try:
            result = ray.get(ready[0])
        except ray.exceptions.RayActorError as error:
            _fail(job, f"{job.name}: its Ray worker died ({_first_line(error)}), past {retries} retries")
            finish(job)
            continue
        except ray.exceptions.RayError as error:
            _fail(job, f"{job.name}: failed on a Ray worker: {_first_line(error)}")
            finish(job)
            continue
        if "usage_error" in result:
            raise UsageError(result["usage_error"])
        if "target_error" in result:
            raise TargetError(result["target_error"])
        if "failed" in result:
            _fail_with(job, result["failed"])
            finish(job)
            continue
        job.shards[number] = result
        done_records += len(shards[number])
        if progress is not None:
            progress(done_records, total)
        if len(job.shards) == len(shards):
            finish(job)
        else:
            submit(job)


def _cancel(ray: Any, reference: Any) -> None:
    """Cancel a queued or running shard call: never retried, whatever retries are left."""
    with contextlib.suppress(Exception):
        ray.cancel(reference)


def _merge(
    jobs: list[_Job], opened: Target, shards: list[np.ndarray]
) -> tuple[list[ForwardResult], list[_Running], int]:
    """Each checkpoint's shards in record order, as a `_Running` that `forward()` finishes and stores."""
    running: list[_Running] = []
    decoded = 0
    skips: list[tuple[str, str]] | None = None
    for job in jobs:
        outcome = job.outcome
        if outcome.status != "ok":
            continue
        parts = [job.shards[number] for number in range(len(shards))]
        described = parts[-1]["checkpoint"] if parts else None
        if described is None:
            continue
        outcome.name, outcome.format, outcome.device = described.name, described.format, described.device
        outcome.precision = described.precision
        outcome.seconds = parts[0]["load_seconds"] + sum(part["seconds"] for part in parts)
        if described.defaults:
            log.warning(described.defaults)
        item = _Running(described, outcome, job.key)  # type: ignore[arg-type]
        for part in parts:
            item._outputs.extend(part["outputs"])
            item._features.extend(part["features"])
            item._ids.extend(part["ids"])
            for spec in part["specs"]:
                item._specs.setdefault(spec)
        running.append(item)
        if skips is None:
            skips = [skip for part in parts for skip in part["skipped"]]
            decoded = sum(len(part["ids"]) for part in parts)
    if skips:
        opened._decode_skips = skips
        log.warning(f"{opened.path}: skipped {describe_skips(skips)}")
    return [job.outcome for job in jobs], running, decoded


def _fail(job: _Job, message: str) -> None:
    job.outcome.status, job.outcome.error = "error", message
    log.warning(message)


def _fail_with(job: _Job, failed: dict[str, Any]) -> None:
    """The worker's error as this checkpoint's result, with its scope (a target or machine problem that stops
    every checkpoint is one error, as locally)."""
    outcome = job.outcome
    outcome.status, outcome.error = "error", failed["message"]
    outcome.format = failed["format"] or outcome.format
    if failed["scope"] is not None:
        problem = CheckpointError(failed["message"])
        problem.scope, problem.reason = failed["scope"], failed["reason"]
        outcome.problem = problem
    _warn_unless_shared(outcome)


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


def _format_of(path: Path) -> str:
    return "onnx" if path.suffix.lower() == ".onnx" else "torchscript"


def connected(options: RayOptions) -> contextlib.AbstractContextManager[None]:
    """Ray connected for a block spanning several `forward_on_ray` calls (see `_connected`)."""
    return _connected(import_ray(), options)


@contextlib.contextmanager
def _connected(ray: Any, options: RayOptions) -> Iterator[None]:
    """Ray connected for the block: the running cluster at the address, else a local one started here (and shut
    down after); already connected (a caller's `ray.init`): used as it is, left connected.

    Ray prints the cluster's error messages (a worker died, a task is retried) on stdout: during the block they go
    to stderr, so that stdout holds only the results (`--format json | jq`)."""
    with contextlib.redirect_stdout(sys.stderr):
        if ray.is_initialized():
            yield
            return
        _connect(ray, options.resolved_address)
        try:
            yield
        finally:
            ray.shutdown()  # a local Ray started here stops; a cluster is only disconnected from


def _connect(ray: Any, address: str) -> None:
    """`ray.init` at `address`; with 'auto' and no cluster running, a local Ray with this machine's CPUs."""
    settings = {"log_to_driver": False, "logging_level": logging.WARNING}
    _check_reachable(address)
    try:
        ray.init(address=address, **settings)
        return
    except ConnectionError as error:
        if address != "auto":
            message = f"cannot connect to the Ray cluster at {address} ({error})"
            raise UsageError(message, parameter="ray_address") from None
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    log.warning(f"no Ray cluster running: starting a local Ray with {cpus} CPUs (start one with `ray start --head`)")
    ray.init(num_cpus=cpus, include_dashboard=False, **settings)


def _check_reachable(address: str) -> None:
    """A HOST:PORT that does not answer is a UsageError now: `ray.init` would retry it for minutes."""
    host, _, port = address.rpartition(":")
    if address == "auto" or "://" in address or not host or not port.isdigit():
        return
    try:
        socket.create_connection((host, int(port)), timeout=10).close()
    except OSError as error:
        message = f"cannot connect to the Ray cluster at {address} ({error.strerror or error})"
        raise UsageError(message, parameter="ray_address", hint="start it with `ray start --head`") from None
