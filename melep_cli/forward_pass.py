"""Stage 1, the forward pass: every checkpoint over the target, its outputs kept with their record ids.

No metric here. The concurrency, top to bottom:

1. on the calling thread: open the target, look every checkpoint up in the outputs store (a hit needs
   neither the model nor the target's signals), load the others;
2. decode the first batch on the calling thread and probe the layouts that need it, so that every input
   spec is known;
3. import what decoding and preparing need, then start one producer thread that decodes the next batches
   and prepares each input spec once (checkpoints with equal specs share it), ahead of the forward passes by
   a byte budget;
4. the forward passes run on the calling thread, batch after batch, each checkpoint in turn;
5. the producer is stopped and joined on every way out (an error, Ctrl-C): no thread outlives the call.

One checkpoint that fails (load, probe, a forward pass) becomes an error result; the others go on.

`ForwardSession` holds steps 1 and 5 apart: the checkpoints are looked up and loaded once, then run over chosen
record positions as often as asked (`ForwardSession.run`, the stage's unit of work: these checkpoints, these
positions, each fed only the records it lacks), and their entries are saved on `close`. `forward()` is one
session run over every record; an adaptive rank runs the checkpoints still in the race look after look. A
stored entry that covers some of the records (a checkpoint an adaptive rank stopped early) is completed: the
model runs on the records it lacks only.
"""

from __future__ import annotations

import collections
import contextlib
import importlib
import itertools
import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from melep_cli.checkpoints import Checkpoint, discover_checkpoints, load_checkpoint, unique_names
from melep_cli.checkpoints.backends import check_threads
from melep_cli.checkpoints.devices import parse_device, parse_precision
from melep_cli.errors import CheckpointError, MelepError, RefusedPickleError, TargetError, UsageError
from melep_cli.executors import RAY, RayOptions, check_executor
from melep_cli.preprocess import InputSpec, prepare
from melep_cli.scores import ModelOutputs
from melep_cli.store import EntryKey, OutputsStore, default_cache_dir, file_digest, files_fingerprint, ids_digest
from melep_cli.targets import Batch, Target, TargetOptions, target_of
from melep_cli.targets.base import describe_skips

log = logging.getLogger("melep")

ProgressCallback = Callable[[int, int], None]

#: `cache=DEFAULT_CACHE`: the default cache directory (`default_cache_dir()`); `cache=None`: no cache.
DEFAULT_CACHE = "default"

#: Decoded and prepared bytes the producer may hold ahead of the forward passes (two batches always may):
#: enough to decode through a model's slow batches, a constant however large the target.
AHEAD_BYTES = 128 * 2**20


@dataclass
class ForwardResult:
    """One checkpoint's forward pass over the target: its outputs with their record ids, or its error."""

    name: str
    path: Path
    format: str | None
    status: str = "ok"
    error: str | None = None
    outputs: np.ndarray | None = None  # (n, Z) as the model emitted them, before any activation
    features: np.ndarray | None = None  # (n, D) when the checkpoint declares a features output
    record_ids: list[str] = field(default_factory=list)
    activation: str | None = None  # how outputs become probabilities (the metadata's `output`)
    source_labels: tuple[str, ...] | None = None
    source_prevalence: tuple[float, ...] | None = None
    input_specs: list[dict[str, Any]] = field(default_factory=list)
    device: str | None = None
    precision: str | None = None
    seconds: float = 0.0
    cached: bool = False  # read from the outputs store: no forward pass was run
    entry: Path | None = None  # the store entry holding these outputs
    forwarded: int = 0  # records this call ran through the model (the others came from the store)
    problem: MelepError | None = field(default=None, repr=False)  # what stopped it, when the library said

    def model_outputs(self) -> ModelOutputs:
        """What stage-2 scores read."""
        if self.outputs is None or self.activation is None:
            raise CheckpointError(f"{self.name}: no outputs ({self.error or 'the forward pass did not run'})")
        return ModelOutputs(
            scores=self.outputs,
            activation=self.activation,
            source_names=self.source_labels,
            source_prevalence=self.source_prevalence,
            features=self.features,
        )


@dataclass
class ForwardReport:
    """Stage 1's result: the open target, one result per checkpoint (in the order found), the store used."""

    target: Target
    results: list[ForwardResult]
    cache: Path | None
    seconds: float
    decoded: int = 0  # records decoded in this call (0 when every checkpoint came from the store)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # records that could not be decoded

    @property
    def forward_passes(self) -> int:
        """Checkpoints whose forward pass ran in this call (not read from the store)."""
        return sum(1 for result in self.results if result.status == "ok" and not result.cached)

    @property
    def records_forwarded(self) -> int:
        """Records run through a model in this call, summed over the checkpoints (a full pass: n per checkpoint)."""
        return sum(result.forwarded for result in self.results)


def resolve_cache(cache: str | Path | None) -> Path | None:
    """The cache directory: DEFAULT_CACHE means `default_cache_dir()`; None turns the store off."""
    if cache is None:
        return None
    if isinstance(cache, str) and cache == DEFAULT_CACHE:
        return default_cache_dir()
    return Path(cache).expanduser()


def forward(
    checkpoints: Sequence[str | Path],
    target: str | Path | Target,
    *,
    cache: str | Path | None = DEFAULT_CACHE,
    recursive: bool = False,
    device: str = "auto",
    strict_device: bool = False,
    batch_size: int | None = None,
    threads: int | None = None,
    precision: str = "float32",
    progress: ProgressCallback | None = None,
    target_options: TargetOptions | None = None,
    executor: str = "local",
    ray_options: RayOptions | None = None,
) -> ForwardReport:
    """Run every checkpoint found in `checkpoints` over `target` and keep the outputs.

    `target`: a path opened with `open_target(path, target_options)`, or an open Target (then
    `target_options` must be None).
    `cache`: the outputs store's directory (DEFAULT_CACHE: $MELEP_CACHE, else $XDG_CACHE_HOME/melep, else
    ~/.cache/melep; None: no store). Stored outputs are read instead of running the model; new ones are saved.
    `batch_size`: records per forward pass (None: each checkpoint's default for its device).
    `threads`: CPU threads of each forward pass (None: the cores available to the process).
    `precision`: float32 (exact), or bfloat16/float16 for TorchScript checkpoints on fast hardware.
    `executor`: where the forward passes run, one of EXECUTORS: 'local' (this process) or 'ray' (a Ray cluster,
    `ray_options`; see melep_cli.executors.ray_executor). Outputs already stored never start Ray.
    Raises UsageError/TargetError for problems that stop the whole run; a checkpoint's own problems
    become its error result.
    """
    session = ForwardSession(
        checkpoints,
        target,
        cache=cache,
        recursive=recursive,
        device=device,
        strict_device=strict_device,
        batch_size=batch_size,
        threads=threads,
        precision=precision,
        target_options=target_options,
        executor=executor,
        ray_options=ray_options,
    )
    with contextlib.closing(session):
        session.run(progress=progress)
        return session.report()


class ForwardSession:
    """Stage 1 held open: checkpoints looked up in the store (complete entries are results at once) and the
    others loaded once, then `run` over chosen record positions as often as asked, `report()` at the end
    (which saves their entries, complete or partial). Use contextlib.closing or call `close()`: it saves
    nothing, and releases the models.

    The arguments are `forward()`'s (see there).
    """

    def __init__(
        self,
        checkpoints: Sequence[str | Path],
        target: str | Path | Target,
        *,
        cache: str | Path | None = DEFAULT_CACHE,
        recursive: bool = False,
        device: str = "auto",
        strict_device: bool = False,
        batch_size: int | None = None,
        threads: int | None = None,
        precision: str = "float32",
        target_options: TargetOptions | None = None,
        executor: str = "local",
        ray_options: RayOptions | None = None,
    ) -> None:
        self.executor = check_executor(executor, ray_options)
        self._ray_options = ray_options or RayOptions()
        if batch_size is not None and (isinstance(batch_size, bool) or batch_size < 1):
            raise UsageError(f"batch_size must be at least 1, got {batch_size}")
        check_threads(threads)
        parse_precision(precision)
        parse_device(device)
        self._started = time.perf_counter()
        self.batch_size = batch_size
        paths = discover_checkpoints(checkpoints, recursive=recursive)
        names = unique_names(paths)
        self.cache = resolve_cache(cache)
        self._store = OutputsStore(self.cache) if self.cache is not None else None
        opened = self.target = target_of(target, target_options)
        self._row_of = {record: row for row, record in enumerate(opened.record_ids)}

        results: list[ForwardResult | None] = [None] * len(paths)
        keys: list[EntryKey | None] = [None] * len(paths)
        partial: dict[int, Any] = {}
        stored_skips: list[tuple[str, str]] | None = None
        if self._store is not None:
            target_key = _target_key(opened)
            for index, path in enumerate(paths):
                started_one = time.perf_counter()
                try:
                    keys[index] = EntryKey(file_digest(path), *target_key, precision=precision)
                except CheckpointError as error:
                    results[index] = _failed(names[index], path, str(error))
                    continue
                stored = self._store.lookup(keys[index], opened.record_ids, partial=True)  # type: ignore[arg-type]
                if stored is not None and stored.complete:
                    results[index] = _from_store(names[index], path, stored, time.perf_counter() - started_one)
                    stored_skips = stored.skipped
                elif stored is not None:
                    partial[index] = stored
        if stored_skips and opened.strict:
            record, reason = stored_skips[0]
            raise TargetError(f"{opened.path}: record {record}: {reason} (strict mode)")

        misses = [index for index, result in enumerate(results) if result is None]
        load_options = {
            "device": device,
            "strict_device": strict_device,
            "threads": threads,
            "share_cores": len(misses) > 1,
            "precision": precision,
        }
        self._running: dict[int, _Running] = {}
        #: On Ray: the checkpoints the workers load (path, name, key), by position in `results`; the partial
        #: entries they resume; their results until a run returns them.
        self._remote: dict[int, tuple[Path, str, EntryKey | None]] = {}
        self._partial = partial
        self._load_options = load_options
        self._ray_connection: contextlib.ExitStack | None = None  # held from the first run on Ray to close()
        for index in misses if self.executor == RAY else ():
            self._remote[index] = (paths[index], names[index], keys[index])
            results[index] = ForwardResult(name=names[index], path=paths[index], format=_format_of(paths[index]))
        for index in () if self.executor == RAY else misses:
            outcome, checkpoint = _load(paths[index], names[index], **load_options)
            results[index] = outcome
            if checkpoint is not None:
                item = _Running(checkpoint, outcome, keys[index])
                if index in partial:
                    item.resume(partial[index])
                self._running[index] = item
        self.results: list[ForwardResult] = [result for result in results if result is not None]
        self.decoded = 0  # records decoded by this session's runs
        self._skipped: dict[str, str] = dict(stored_skips or [])  # records that could not be decoded

    @property
    def loaded(self) -> list[int]:
        """The positions in `results` of the checkpoints that run here (the others came from the store or failed)."""
        running = [index for index, item in self._running.items() if item.outcome.status == "ok"]
        waiting = [index for index in self._remote if index not in self._running and self.results[index].status == "ok"]
        return sorted([*running, *waiting])

    def run(
        self,
        indices: Sequence[int] | None = None,
        positions: Sequence[int] | np.ndarray | None = None,
        progress: ProgressCallback | None = None,
    ) -> int:
        """The forward stage's unit of work: the checkpoints at `indices` of `results` (None: every loaded one)
        over the records at `positions` of `target.record_ids`, in that order (None: every record), each fed only
        the records it lacks. Their outputs accumulate in the session. Returns the records decoded."""
        wanted = self.loaded if indices is None else [index for index in indices if index in self.loaded]
        items = [self._running.get(index) or _Covering(self._partial.get(index)) for index in wanted]
        if not items:
            return 0
        target = self.target
        chosen = np.arange(len(target)) if positions is None else np.asarray(positions, dtype=np.int64)
        if any(item.covered for item in items):
            ids = target.record_ids
            chosen = chosen[[any(ids[p] not in item.covered for item in items) for p in chosen]]
            if positions is None and chosen.size == len(target):
                chosen = None  # type: ignore[assignment]
        elif positions is None:
            chosen = None  # type: ignore[assignment]
        if chosen is not None and chosen.size == 0:
            return 0
        if self.executor == RAY:
            decoded = self._run_on_ray(wanted, chosen, progress)
            items = [self._running[index] for index in wanted if index in self._running]
        else:
            decoded = _run(items, target, self.batch_size, progress, chosen)  # type: ignore[arg-type]
        new_skips = target.skipped[len(target.excluded) :]
        for item in items:
            item.skip(new_skips)
        self._skipped.update(new_skips)
        self.decoded += decoded
        return decoded

    def _run_on_ray(self, wanted: list[int], positions: np.ndarray | None, progress: ProgressCallback | None) -> int:
        """`run` on Ray: the workers load the checkpoints and decode their shards of `positions`; the outputs join
        the session's as a local run's do (records a checkpoint already has are not taken twice)."""
        from melep_cli.executors.ray_executor import connected, forward_on_ray

        if self._ray_connection is None:  # connected once for every run of the session (a local Ray starts once)
            self._ray_connection = contextlib.ExitStack()
            self._ray_connection.enter_context(connected(self._ray_options))
        outcomes, fed, decoded = forward_on_ray(
            [self._remote[index] for index in wanted],
            self.target,
            batch_size=self.batch_size,
            load_options=self._load_options,
            options=self._ray_options,
            progress=progress,
            positions=positions,
        )
        by_outcome = {id(item.outcome): item for item in fed}
        for index, outcome in zip(wanted, outcomes):
            item = self._running.get(index)
            new = by_outcome.get(id(outcome))
            if new is None:  # failed on the cluster: its error result, whatever it had before
                self.results[index] = outcome
                self._running.pop(index, None)
                continue
            if item is None:
                item = _Running(new.checkpoint, outcome, new.key)  # type: ignore[arg-type]
                if index in self._partial:
                    item.resume(self._partial[index])
                self._running[index] = item
                self.results[index] = outcome
            else:
                item.outcome.seconds += outcome.seconds
            item.take(new)
        return decoded

    def so_far(self, index: int, record_ids: Sequence[str] | None = None) -> ForwardResult:
        """`results[index]` with the outputs it has so far, restricted to `record_ids` when given (in the
        target's order, the records it could not decode left out)."""
        result = self.results[index]
        item = self._running.get(index)
        if item is not None and result.status == "ok" and item.has_outputs:
            result = replace(result)
            item.gather_into(result, self._row_of)
        return result if record_ids is None else restricted(result, record_ids)

    @property
    def skipped(self) -> list[tuple[str, str]]:
        """The records that could not be decoded, so far (those the store recorded included)."""
        return list(self._skipped.items())

    def report(self) -> ForwardReport:
        """Gather the outputs into the results, save the entries (partial ones marked so), and return the
        report. Raises TargetError when no record could be used at all."""
        opened = self.target
        items = list(self._running.values())
        alive = [item for item in items if item.outcome.status == "ok"]
        if alive and self.decoded == 0 and not any(item.has_outputs for item in alive):
            detail = f" ({describe_skips(opened.skipped)} skipped)" if opened.skipped else ""
            raise TargetError(f"{opened.path}: no usable record to score{detail}")
        saving = self._store
        for item in items:
            item.finish(self._row_of)
            item.outcome.cached = item.outcome.status == "ok" and item.forwarded == 0  # all from a partial entry
            if saving is not None and item.outcome.cached and item.key is not None:
                item.outcome.entry = saving.path_for(item.key)  # nothing new to store
            elif saving is not None and item.outcome.status == "ok" and item.key is not None:
                try:
                    item.save(saving, opened, complete=len(item.covered) == len(opened.record_ids))
                except UsageError as error:  # an unwritable cache costs the speed-up, never the results
                    log.warning(f"{error}; outputs not stored")
                    saving = None
        _report_shared_problem(self.results, opened)
        return ForwardReport(
            target=opened,
            results=self.results,
            cache=self.cache,
            seconds=time.perf_counter() - self._started,
            decoded=self.decoded,
            skipped=self.skipped,
        )

    def close(self) -> None:
        """Release the loaded models (the results keep their outputs) and the Ray connection, if any."""
        for item in self._running.values():
            item.release()
        if self._ray_connection is not None:
            self._ray_connection.close()
            self._ray_connection = None


def restricted(result: ForwardResult, record_ids: Sequence[str]) -> ForwardResult:
    """`result` with only the outputs of `record_ids` (in its own order; ids it lacks are left out)."""
    if result.status != "ok" or result.outputs is None:
        return result
    wanted = set(record_ids)
    rows = [row for row, record in enumerate(result.record_ids) if record in wanted]
    return replace(
        result,
        outputs=result.outputs[rows],
        features=result.features[rows] if result.features is not None else None,
        record_ids=[result.record_ids[row] for row in rows],
    )


def _warn_unless_shared(result: ForwardResult) -> None:
    """Warn of a checkpoint's failure now, unless its cause may lie in the target or the machine: that waits for
    `_report_shared_problem`, which makes one error of it when it stopped every checkpoint."""
    if result.problem is None or result.problem.scope == "checkpoint":
        log.warning(result.error)


def _report_shared_problem(results: Sequence[ForwardResult], target: Target) -> None:
    """One TargetError (a problem of the target) or UsageError (of the machine) when such a problem stopped every
    checkpoint (their distinct reasons in one line: torch and ONNX Runtime may say it differently); otherwise the
    warnings held back."""
    held = [result for result in results if result.problem is not None and result.problem.scope != "checkpoint"]
    scopes = {result.problem.scope for result in held}  # type: ignore[union-attr]
    if results and len(held) == len(results) and len(scopes) == 1:
        scope = scopes.pop()
        reason = "; ".join(dict.fromkeys(str(result.problem.reason) for result in held))  # type: ignore[union-attr]
        every = f"every checkpoint ({len(results)}) failed alike"
        if scope == "target":
            raise TargetError(f"{target.path}: {reason}; {every}")
        raise UsageError(f"{reason}; {every}")
    for result in held:
        log.warning(result.error)


def _target_key(target: Target) -> tuple[str, str, str]:
    """The target's part of an entry key: its files, its selected records, the rates its records are read at."""
    reading = {"format": target.format, "rates": list(target.sampling_rates)}
    if target.lead_names is not None:
        reading["leads"] = list(target.lead_names)
    reading = json.dumps(reading)
    return files_fingerprint(target.source_files()), ids_digest(target.record_ids), reading


def _failed(name: str, path: Path, message: str) -> ForwardResult:
    log.warning(message)
    return ForwardResult(name=name, path=path, format=_format_of(path), status="error", error=message)


def _from_store(name: str, path: Path, stored: Any, seconds: float) -> ForwardResult:
    """A result read from the store; the metadata warning the load would have printed is printed again."""
    attributes = stored.attributes
    metadata = stored.metadata
    if attributes.get("defaults_message"):
        log.warning(attributes["defaults_message"])
    prevalence = metadata.get("source_prevalence")
    return ForwardResult(
        name=name,
        path=path,
        format=str(attributes.get("checkpoint_format")) or _format_of(path),
        outputs=stored.outputs,
        features=stored.features,
        record_ids=stored.record_ids,
        activation=str(metadata.get("output", "logits")),
        source_labels=tuple(metadata["labels"]) if metadata.get("labels") else None,
        source_prevalence=tuple(prevalence) if prevalence else None,
        input_specs=json.loads(attributes.get("input_specs", "[]")),
        device=str(attributes.get("device")) or None,
        precision=str(attributes.get("precision")) or None,
        seconds=seconds,
        cached=True,
        entry=stored.path,
    )


def _load(
    path: Path,
    name: str,
    *,
    device: str,
    strict_device: bool,
    threads: int | None,
    share_cores: bool,
    precision: str,
) -> tuple[ForwardResult, Checkpoint | None]:
    """Load one checkpoint; a failure becomes its error result (a UsageError stops the run)."""
    started = time.perf_counter()
    outcome = ForwardResult(name=name, path=path, format=_format_of(path))
    try:
        checkpoint = load_checkpoint(
            path,
            device=device,
            strict_device=strict_device,
            name=name,
            threads=threads,
            share_cores=share_cores,
            precision=precision,
        )
    except UsageError:
        raise
    except MelepError as error:
        outcome.status, outcome.error, outcome.problem = "error", str(error), error
        if isinstance(error, RefusedPickleError):
            outcome.format = "pickle (refused)"
        _warn_unless_shared(outcome)
        return outcome, None
    except Exception as error:  # a broken file must never lose the others' results
        outcome.status, outcome.error = "error", f"{path}: cannot load: {type(error).__name__}: {error}"
        log.warning(outcome.error)
        return outcome, None
    finally:
        outcome.seconds = time.perf_counter() - started
    outcome.name, outcome.format, outcome.device = checkpoint.name, checkpoint.format, checkpoint.device
    outcome.precision = checkpoint.precision
    return outcome, checkpoint


def _run(
    running: list[_Running],
    target: Target,
    batch_size: int | None,
    progress: ProgressCallback | None,
    positions: np.ndarray | None = None,
) -> int:
    """The pass over the records at `positions` (None: all) for the loaded checkpoints, each fed the records it
    lacks; returns the records decoded."""
    decode_size = batch_size or max(item.checkpoint.batch_size for item in running)
    batches = target.batches(decode_size) if positions is None else target.batches(decode_size, positions=positions)
    total = len(target) if positions is None else len(positions)
    first = next(batches, None)
    if first is None:
        return 0
    for item in running:
        item.probe(first)
    specs = _Specs(running)
    _import_for_workers(target, running)
    records = 0
    with contextlib.closing(_Producer(itertools.chain([first], batches), specs.for_batch)) as producer:
        for batch, prepared in producer:
            for item in running:
                if item.outcome.status == "ok":
                    item.feed_lacking(batch, prepared, batch_size)
            records += len(batch)
            if progress is not None:
                progress(records, total)
    return records


def _import_for_workers(target: Target, running: Sequence[_Running]) -> None:
    """Import on the calling thread every module the producer thread may need: decoding's, and scipy.signal when
    a checkpoint resamples or filters. Two threads importing at once can fail (`KeyError: 'scipy'`)."""
    modules = list(target.decode_imports())
    rates = set(target.sampling_rates)
    wanted = {item.checkpoint.metadata.sampling_rate for item in running} - {None}
    filters = any(item.checkpoint.metadata.filter is not None for item in running)
    if filters or (wanted and (not rates or wanted - rates)):
        modules.append("scipy.signal")
    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError as error:
            raise TargetError(
                f"{target.path}: reading these records needs {module}, which fails to import ({error})"
            ) from None


class _Running:
    """One loaded checkpoint during the pass over the target: its outputs so far, batch by batch."""

    def __init__(self, checkpoint: Checkpoint, outcome: ForwardResult, key: EntryKey | None) -> None:
        self.checkpoint = checkpoint
        self.outcome = outcome
        self.key = key
        self._outputs: list[np.ndarray] = []
        self._features: list[np.ndarray] = []
        self._ids: list[str] = []
        self._specs: dict[InputSpec, None] = {}
        self._skipped: list[tuple[str, str]] = []
        self.covered: set[str] = set()  # record ids scored or skipped, stored ones included
        self._stored_specs: list[dict[str, Any]] = []
        self.forwarded = 0  # records run through the model here

    @property
    def has_outputs(self) -> bool:
        return bool(self._ids)

    def resume(self, stored: Any) -> None:
        """Start from a partial store entry: its records are not run again."""
        self._outputs = [stored.outputs]
        self._features = [stored.features] if stored.features is not None else []
        self._ids = list(stored.record_ids)
        self._skipped = list(stored.skipped)
        self.covered = stored.covered
        self._stored_specs = json.loads(stored.attributes.get("input_specs", "[]"))

    def skip(self, skips: Sequence[tuple[str, str]]) -> None:
        """Records of a run that could not be decoded: covered (never retried), recorded in the entry."""
        for record, reason in skips:
            if record not in self.covered:
                self._skipped.append((record, reason))
                self.covered.add(record)

    def take(self, other: _Running) -> None:
        """The outputs `other` (the same checkpoint, run elsewhere) gathered, for the records this one lacks."""
        if not other._ids:
            return
        outputs = np.concatenate(other._outputs)
        features = np.concatenate(other._features) if len(other._features) == len(other._outputs) else None
        rows = [row for row, record in enumerate(other._ids) if record not in self.covered]
        ids = [other._ids[row] for row in rows]
        self._outputs.append(outputs[rows])
        if features is not None:
            self._features.append(features[rows])
        self._ids.extend(ids)
        for spec in other._specs:
            self._specs.setdefault(spec)
        self.covered.update(ids)
        self.forwarded += len(ids)
        self.outcome.forwarded = self.forwarded

    def feed_lacking(self, batch: Batch, prepared: dict[Part, Any], batch_size: int | None) -> None:
        """`feed` with the records of `batch` this checkpoint lacks (all of them unless resumed)."""
        if not self.covered:
            self.feed(batch, prepared, batch_size)
            return
        rows = [row for row, record in enumerate(batch.ids) if record not in self.covered]
        if len(rows) == len(batch):
            self.feed(batch, prepared, batch_size)
        elif rows:
            self.feed(_subset(batch, rows), {}, batch_size)  # its inputs are prepared here

    def release(self) -> None:
        """Drop the model (the outputs gathered stay in the result)."""
        self.checkpoint = None  # type: ignore[assignment]

    def parts(self, batch: Batch) -> list[Part]:
        """The inputs this checkpoint takes for `batch`: one spec for the whole batch; or, when the model takes
        each record at its own length (no fixed `samples`) and the batch's records differ in length, one spec per
        length with the records of that length. Zero-padding them to the longest instead would make a record's
        outputs depend on its batch mates, and so the scores on the batch size."""
        checkpoint = self.checkpoint
        signals = batch.signals
        rate = batch.sampling_rate
        if isinstance(signals, np.ndarray) or checkpoint.metadata.samples is not None:
            return [(checkpoint.input_spec(sampling_rate=rate, samples=_longest(batch)), None)]
        by_length: dict[int, list[int]] = {}
        for position, signal in enumerate(signals):
            by_length.setdefault(len(signal), []).append(position)
        if len(by_length) == 1:
            return [(checkpoint.input_spec(sampling_rate=rate, samples=_longest(batch)), None)]
        return [(checkpoint.input_spec(sampling_rate=rate, samples=n), tuple(rows)) for n, rows in by_length.items()]

    def known_parts(self, batch: Batch) -> list[Part]:
        """`parts(batch)` for the producer; none once this checkpoint failed (or when they cannot be known)."""
        if self.outcome.status != "ok":
            return []
        try:
            return self.parts(batch)
        except Exception:  # feed() meets the same error on the calling thread and reports it
            return []

    def probe(self, batch: Batch) -> None:
        """Find the layout on one record of the first batch when nothing else fixes it."""
        if not self.checkpoint.needs_probe:
            return
        self._timed(self._probe, batch)

    def _probe(self, batch: Batch) -> None:
        spec = self.checkpoint.input_spec(sampling_rate=batch.sampling_rate, samples=_longest(batch))
        self.checkpoint.probe_layout(prepare(batch.signals[:1], batch.sampling_rate, batch.leads, spec))

    def feed(self, batch: Batch, prepared: dict[Part, Any], batch_size: int | None) -> None:
        """Run one batch; `prepared` holds the producer's inputs (or the error preparing them) by part."""
        self._timed(self._feed, batch, prepared, batch_size)

    def _feed(self, batch: Batch, prepared: dict[Part, Any], batch_size: int | None) -> None:
        predictions = []
        for part in self.parts(batch):
            inputs = prepared.get(part)
            if isinstance(inputs, BaseException):  # preparing failed on the producer: this checkpoint's error
                raise inputs
            if inputs is None:  # a part the producer did not know: prepared here, and shared from now on
                inputs = prepare_part(batch, part)
                prepared[part] = inputs
            predictions.append((part[1], self.checkpoint.predict_outputs(inputs, batch_size=batch_size)))
            self._specs.setdefault(part[0])
        scores = _in_batch_order([rows for rows, _ in predictions], [p.scores for _, p in predictions])
        self._outputs.append(scores)
        if predictions[0][1].features is not None:
            features = [p.features for _, p in predictions]
            self._features.append(_in_batch_order([rows for rows, _ in predictions], features))  # type: ignore[arg-type]
        self._ids.extend(batch.ids)
        self.covered.update(batch.ids)
        self.forwarded += len(batch)
        self.outcome.forwarded = self.forwarded

    def _timed(self, step: Callable[..., None], *args: Any) -> None:
        started = time.perf_counter()
        try:
            step(*args)
        except Exception as error:  # MelepError or a crash inside a model: this checkpoint alone fails
            self._fail(error)
        finally:
            self.outcome.seconds += time.perf_counter() - started

    def gather_into(self, outcome: ForwardResult, row_of: dict[str, int]) -> None:
        """The outputs so far into `outcome`, in the target's record order."""
        checkpoint = self.checkpoint
        order = np.argsort(np.fromiter((row_of[record] for record in self._ids), np.int64, len(self._ids)))
        outputs = self._outputs[0] if len(self._outputs) == 1 else np.concatenate(self._outputs)
        outcome.outputs = outputs[order]
        features = None
        if self._features and len(self._features) == len(self._outputs):
            features = self._features[0] if len(self._features) == 1 else np.concatenate(self._features)
            features = features[order]
        outcome.features = features
        outcome.record_ids = [self._ids[row] for row in order]
        outcome.activation = checkpoint.activation
        outcome.source_labels = checkpoint.labels  # without metadata labels, out0 .. out{Z-1}, known by now
        outcome.source_prevalence = checkpoint.metadata.source_prevalence
        specs = [_spec_dict(spec) for spec in self._specs]
        outcome.input_specs = [*self._stored_specs, *(spec for spec in specs if spec not in self._stored_specs)]

    def finish(self, row_of: dict[str, int]) -> None:
        """Gather the outputs into the result, in the target's record order (however they were fed)."""
        outcome, checkpoint = self.outcome, self.checkpoint
        outcome.precision = checkpoint.precision  # a 16-bit model that failed fell back to float32
        if outcome.status != "ok":
            return
        if not self._outputs:
            self._fail(CheckpointError(f"{checkpoint.name}: no target records reached this checkpoint"))
            return
        self.gather_into(outcome, row_of)
        self._outputs, self._features = [outcome.outputs], [outcome.features] if outcome.features is not None else []
        self._ids = list(outcome.record_ids)

    def save(self, store: OutputsStore, target: Target, *, complete: bool = True) -> None:
        """Store the outputs (atomically) under this checkpoint's key; `complete` False marks a partial entry
        (some records not run yet)."""
        assert self.key is not None and self.outcome.outputs is not None
        started = time.perf_counter()
        checkpoint, outcome = self.checkpoint, self.outcome
        from melep_cli import __version__

        metadata = {
            "labels": list(outcome.source_labels or ()),
            "output": outcome.activation,
            "source_prevalence": list(outcome.source_prevalence) if outcome.source_prevalence else None,
        }
        outcome.entry = store.save(
            self.key,
            outputs=outcome.outputs,
            record_ids=outcome.record_ids,
            features=outcome.features,
            skipped=self._skipped,
            attributes={
                "checkpoint_path": str(checkpoint.path.resolve()),
                "checkpoint_format": checkpoint.format,
                "target_path": str(target.path.resolve()),
                "target_format": target.format,
                "input_specs": json.dumps(outcome.input_specs),
                "precision": outcome.precision or "",  # what it computed in: float32 after a fallback
                "device": outcome.device or "",
                "melep_version": __version__,
                "seconds": outcome.seconds,
                "metadata": json.dumps(metadata),
                "defaults_message": checkpoint.defaults_message() or "",
                **({} if complete else {"partial": True}),
            },
        )
        outcome.seconds += time.perf_counter() - started

    def _fail(self, error: BaseException) -> None:
        message = str(error) if isinstance(error, MelepError) else f"{type(error).__name__}: {error}"
        if not message.startswith(self.checkpoint.name):
            message = f"{self.checkpoint.name}: {message}"
        self.outcome.status = "error"
        self.outcome.error = message
        self.outcome.problem = error if isinstance(error, MelepError) else None
        self._outputs, self._features = [], []
        _warn_unless_shared(self.outcome)


class _Covering:
    """What a checkpoint the Ray workers have not run yet already covers: its partial entry's records, if any."""

    def __init__(self, stored: Any = None) -> None:
        self.covered: set[str] = set(stored.covered) if stored is not None else set()


#: One model input of a batch: its spec, and the positions of the records it holds (None: every record).
Part = tuple[InputSpec, "tuple[int, ...] | None"]


def prepare_part(batch: Batch, part: Part) -> np.ndarray:
    """`prepare` for one part of a batch."""
    spec, rows = part
    signals = batch.signals if rows is None else [batch.signals[row] for row in rows]
    return prepare(signals, batch.sampling_rate, batch.leads, spec)


def _in_batch_order(rows: Sequence[tuple[int, ...] | None], values: Sequence[np.ndarray]) -> np.ndarray:
    """The parts' outputs as one array in the batch's record order."""
    if len(values) == 1 and rows[0] is None:
        return values[0]
    order = np.concatenate([np.asarray(part, dtype=np.int64) for part in rows])  # type: ignore[arg-type]
    return np.concatenate(values)[np.argsort(order, kind="stable")]


class _Specs:
    """The distinct parts (spec and records) of the checkpoints still running, for one batch (on the producer)."""

    def __init__(self, running: Sequence[_Running]) -> None:
        self._running = list(running)

    def for_batch(self, batch: Batch) -> list[Part]:
        return list(dict.fromkeys(part for item in self._running for part in item.known_parts(batch)))


def _subset(batch: Batch, rows: Sequence[int]) -> Batch:
    """The records of `batch` at `rows`."""
    signals = batch.signals
    chosen = signals[list(rows)] if isinstance(signals, np.ndarray) else [signals[row] for row in rows]
    return Batch(chosen, batch.sampling_rate, batch.leads, batch.labels[list(rows)], [batch.ids[row] for row in rows])


def _spec_dict(spec: InputSpec) -> dict[str, Any]:
    return {key: list(value) if isinstance(value, tuple) else value for key, value in spec.__dict__.items()}


def _format_of(path: Path) -> str | None:
    return "onnx" if path.suffix.lower() == ".onnx" else "torchscript"


def _longest(batch: Batch) -> int:
    """Samples of the batch's longest record (what its input spec is computed from)."""
    signals = batch.signals
    return int(signals.shape[1]) if isinstance(signals, np.ndarray) else max(len(signal) for signal in signals)


def _item_bytes(batch: Batch, prepared: dict[Part, Any]) -> int:
    signals = batch.signals
    size = int(signals.nbytes) if isinstance(signals, np.ndarray) else sum(int(s.nbytes) for s in signals)
    return size + sum(int(value.nbytes) for value in prepared.values() if isinstance(value, np.ndarray))


class _Producer:
    """Decode batches and prepare their inputs on one thread, ahead of the consumer by up to `budget` bytes
    (always by `depth` batches). Iterate once for (batch, {part: input array, or the error preparing it});
    `close()` stops and joins the thread (use contextlib.closing: on an error or Ctrl-C too).

    Everything the thread runs was imported before it starts (`_import_for_workers`).
    """

    def __init__(
        self,
        batches: Iterable[Batch],
        specs_for: Callable[[Batch], Iterable[Part]],
        budget: int | None = None,
        depth: int = 2,
    ) -> None:
        self._batches = batches
        self._specs_for = specs_for
        self._budget = AHEAD_BYTES if budget is None else budget
        self._depth = depth
        self._ready: collections.deque[tuple[str, Any, int]] = collections.deque()
        self._held = 0
        self._changed = threading.Condition()
        self._stop = False
        #: Set while the thread waits for room within the budget (what tests wait for instead of sleeping).
        self.waiting_for_room = threading.Event()
        self._thread = threading.Thread(target=self._produce, name="melep-producer")
        self._thread.start()

    def _produce(self) -> None:
        try:
            for batch in self._batches:
                prepared: dict[Part, Any] = {}
                for part in self._specs_for(batch):
                    try:
                        prepared[part] = prepare_part(batch, part)
                    except Exception as error:  # raised for the checkpoints of this part alone
                        prepared[part] = error
                size = _item_bytes(batch, prepared)
                with self._changed:
                    while not self._stop and len(self._ready) >= self._depth and self._held + size > self._budget:
                        self.waiting_for_room.set()
                        self._changed.wait()
                    self.waiting_for_room.clear()
                    if self._stop:
                        return
                    self._ready.append(("batch", (batch, prepared), size))
                    self._held += size
                    self._changed.notify_all()
            item: tuple[str, Any, int] = ("done", None, 0)
        except BaseException as error:  # a target error: raised in the consumer
            item = ("error", error, 0)
        with self._changed:
            self._ready.append(item)
            self._changed.notify_all()

    def __iter__(self) -> Iterator[tuple[Batch, dict[Part, Any]]]:
        while True:
            with self._changed:
                while not self._ready:
                    self._changed.wait()
                kind, value, size = self._ready.popleft()
                self._held -= size
                self._changed.notify_all()
            if kind == "batch":
                yield value
            elif kind == "error":
                raise value
            else:
                return

    def close(self) -> None:
        """Stop the thread after the batch it is decoding, and wait for it."""
        with self._changed:
            self._stop = True
            self._ready.clear()
            self._held = 0
            self._changed.notify_all()
        self._thread.join()
