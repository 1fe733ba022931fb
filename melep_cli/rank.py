"""`melep rank`: score every candidate checkpoint on one target, best (lowest MELEP) first.

Orchestration only. The checkpoints load on a background thread (ONNX ones while the target opens).
The target is decoded once, in another: each batch goes to every checkpoint still running,
checkpoints whose input specs are equal share one prepared array (prepared ahead on a small thread
pool while the models run), and each checkpoint's outputs feed its own MELEP accumulator. One
checkpoint that fails (load, shape, non-finite outputs) becomes an error row; the others finish.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import importlib
import logging
import math
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from melep_cli.checkpoints import Checkpoint, discover_checkpoints, load_checkpoint, unique_names
from melep_cli.checkpoints.backends import check_threads, cpu_threads
from melep_cli.checkpoints.checkpoint import default_batch_size
from melep_cli.checkpoints.devices import parse_precision
from melep_cli.errors import CheckpointError, MelepError, TargetError, UsageError
from melep_cli.metric import MelepAccumulator, MelepResult, Weighting
from melep_cli.preprocess import InputSpec, prepare, resampling_factors
from melep_cli.targets import Batch, Target, open_target
from melep_cli.targets.base import describe_skips

log = logging.getLogger("melep")

ProgressCallback = Callable[[int, int], None]


@dataclass
class CheckpointOutcome:
    """What ranking produced for one checkpoint: a MELEP result, or the error that stopped it."""

    name: str
    path: Path
    format: str | None
    status: str = "ok"
    result: MelepResult | None = None
    error: str | None = None
    seconds: float = 0.0
    device: str | None = None
    precision: str | None = None  # what the forward pass computed in (float32 unless --precision took effect)
    rank: int | None = None

    @property
    def melep(self) -> float | None:
        return self.result.score if self.result is not None else None


@dataclass
class TargetSummary:
    """The target as ranked: the records actually scored and their label prevalence."""

    path: str
    format: str
    records: int
    labels: tuple[str, ...]
    positives: np.ndarray
    skipped: list[tuple[str, str]] = field(default_factory=list)

    @property
    def prevalence(self) -> np.ndarray:
        return self.positives / max(self.records, 1)


@dataclass
class RankReport:
    """The ranking: successful checkpoints by ascending MELEP, then failed ones."""

    target: TargetSummary
    weighting: str
    outcomes: list[CheckpointOutcome]
    seconds: float
    decode_passes: int = 1

    @property
    def ok(self) -> list[CheckpointOutcome]:
        return [outcome for outcome in self.outcomes if outcome.status == "ok"]

    @property
    def failed(self) -> list[CheckpointOutcome]:
        return [outcome for outcome in self.outcomes if outcome.status != "ok"]

    def top(self, count: int) -> RankReport:
        """The same report with only the `count` best checkpoints (failures kept: they need attention)."""
        return replace(self, outcomes=self.ok[:count] + self.failed)


def rank(
    checkpoints: Sequence[str | Path],
    target: str | Path | Target,
    *,
    recursive: bool = False,
    device: str = "auto",
    strict_device: bool = False,
    batch_size: int | None = None,
    weighting: Weighting = "prevalence",
    source_weighted: bool = False,
    progress: ProgressCallback | None = None,
    threads: int | None = None,
    precision: str = "float32",
    **target_options: Any,
) -> RankReport:
    """Rank the checkpoints found in `checkpoints` by MELEP on `target` (lower is better).

    `target` is a path opened with `open_target(path, **target_options)`, or an open Target.
    `batch_size`: records per forward pass; None: each checkpoint's default for its device
    (`default_batch_size`: 32 on the CPU, 256 on CUDA), and the target is decoded in batches of
    the largest of them.
    `threads`: CPU threads of each forward pass (ONNX Runtime and torch intra-op threads), and of the
    pool preparing inputs ahead (at most PREPARE_WORKERS); None: the cores available to the process.
    On a machine busy with other work, 1 is often much faster.
    `precision`: float32 (exact), or bfloat16/float16 to run TorchScript checkpoints in 16-bit
    arithmetic where the device is fast at it (each result says what it ran in).
    Raises UsageError/TargetError for problems that stop the whole run; a checkpoint's own
    problems become its error row.
    """
    if batch_size is not None and batch_size < 1:
        raise UsageError(f"--batch-size must be at least 1, got {batch_size}")
    check_threads(threads)
    parse_precision(precision)
    started = time.perf_counter()
    paths = discover_checkpoints(checkpoints, recursive=recursive)
    load_options = {
        "device": device,
        "strict_device": strict_device,
        "threads": threads,
        "share_cores": len(paths) > 1,
        "precision": precision,
    }
    outcomes: list[CheckpointOutcome] = []
    running: list[_Running] = []
    # closing() stops each background thread at once on any exception (Ctrl-C too).
    with contextlib.ExitStack() as stack:
        # The checkpoints load on a background thread: ONNX ones first and while the target opens, the others while
        # its first batches decode (loading is mostly one thread).
        loading = stack.enter_context(contextlib.closing(_Loading(paths, unique_names(paths), load_options)))
        opened = target if not isinstance(target, (str, Path)) else open_target(target, **target_options)
        _check_labels_informative(opened, opened.labels, len(opened), when="among its records")
        positives = np.zeros(len(opened.label_names), dtype=np.int64)
        records = 0
        total = len(opened)
        decode_size = batch_size or _decode_batch_size(device, paths)
        batches = stack.enter_context(contextlib.closing(_Prefetch(opened.batches(decode_size))))
        loading.target_opened()  # and decoding: TorchScript checkpoints may load now
        for outcome, loaded in loading:
            outcomes.append(outcome)
            if loaded is not None:
                running.append(_Running(loaded, outcome, weighting, source_weighted, opened.label_names))
        # Inputs are prepared ahead once every spec is known: after loading, or after the first batch when a
        # checkpoint's layout is found by probing it on that batch.
        specs_for = functools.partial(_specs_for, running)
        workers = prepare_workers(threads)
        probing = any(item.checkpoint.needs_probe for item in running)
        if not probing:
            batches.prepare_ahead(specs_for, workers)
        for batch, ahead in batches:
            labels = np.asarray(batch.labels, dtype=np.uint8)
            positives += labels.sum(axis=0, dtype=np.int64)
            records += labels.shape[0]
            prepared: dict[InputSpec, np.ndarray | Future[np.ndarray]] = dict(ahead)
            for item in running:
                if item.outcome.status == "ok":
                    item.feed(batch, labels, prepared, batch_size)
            if probing:
                batches.prepare_ahead(specs_for, workers)
                probing = False
            if progress is not None:
                progress(records, total)

    # Problems of the target itself stop the run (exit 2); they must not pass for checkpoint failures.
    if records == 0:
        skipped = opened.skipped
        detail = f" ({describe_skips(skipped)} skipped)" if skipped else ""
        raise TargetError(f"{opened.path}: no usable record to score{detail}")
    if records < total:
        _check_labels_informative(opened, positives, records, when="among the records left after skipping")

    for item in running:
        item.finish()
    _assign_ranks(outcomes)
    summary = TargetSummary(
        path=str(opened.path),
        format=opened.format,
        records=records,
        labels=tuple(opened.label_names),
        positives=positives,
        skipped=list(opened.skipped),
    )
    return RankReport(
        target=summary,
        weighting=weighting,
        outcomes=outcomes,
        seconds=time.perf_counter() - started,
    )


class _Running:
    """One loaded checkpoint during the pass over the target."""

    def __init__(
        self,
        checkpoint: Checkpoint,
        outcome: CheckpointOutcome,
        weighting: str,
        source_weighted: bool,
        label_names: Sequence[str],
    ) -> None:
        self.checkpoint = checkpoint
        self.outcome = outcome
        metadata = checkpoint.metadata
        source_weights = None
        if source_weighted:
            if metadata.source_prevalence is not None:
                source_weights = metadata.source_prevalence
            else:
                log.warning(f"{checkpoint.name}: no source_prevalence in its metadata; using the plain mean over z")
        self.accumulator = MelepAccumulator(
            activation=checkpoint.activation,  # type: ignore[arg-type]
            weighting=weighting,  # type: ignore[arg-type]
            source_weights=source_weights,
            label_names=label_names,
            source_names=checkpoint.labels,
        )

    def input_spec(self, batch: Batch) -> InputSpec | None:
        """The input this checkpoint takes for `batch`; None while that is unknown (layout not probed) or it failed."""
        if self.outcome.status != "ok" or self.checkpoint.needs_probe:
            return None
        try:
            return self.checkpoint.input_spec(sampling_rate=batch.sampling_rate, samples=_longest(batch))
        except Exception:  # called ahead, from the decode thread: feed() meets the same error and reports it
            return None

    def feed(
        self,
        batch: Batch,
        labels: np.ndarray,
        prepared: dict[InputSpec, np.ndarray | Future[np.ndarray]],
        batch_size: int | None,
    ) -> None:
        """Run one batch through this checkpoint; `prepared` holds the inputs (or their futures) by spec, shared."""
        started = time.perf_counter()
        try:
            length = _longest(batch)
            spec = self.checkpoint.input_spec(sampling_rate=batch.sampling_rate, samples=length)
            if self.checkpoint.needs_probe:  # once, on the first batch: the spec is NCT until then
                example = prepare(batch.signals[:1], batch.sampling_rate, batch.leads, spec)
                self.checkpoint.probe_layout(example)
                spec = self.checkpoint.input_spec(sampling_rate=batch.sampling_rate, samples=length)
            inputs = prepared.get(spec)
            if isinstance(inputs, Future):  # prepared ahead: its error, if any, is raised here, for this checkpoint
                inputs = inputs.result()
                prepared[spec] = inputs
            if inputs is None:  # a spec nobody knew in time (a probed layout): prepared here
                inputs = prepare(batch.signals, batch.sampling_rate, batch.leads, spec)
                prepared[spec] = inputs
            outputs = self.checkpoint.predict(inputs, batch_size=batch_size)
            self.accumulator.update(outputs, labels)
        except Exception as error:  # MelepError or a crash inside a model: this checkpoint alone fails
            self._fail(error)
        finally:
            self.outcome.seconds += time.perf_counter() - started

    def finish(self) -> None:
        self.outcome.precision = self.checkpoint.precision  # a 16-bit model that failed fell back to float32
        if self.outcome.status != "ok":
            return
        started = time.perf_counter()
        try:
            if self.accumulator.records == 0:
                raise CheckpointError(f"{self.checkpoint.name}: no target records reached this checkpoint")
            # Without metadata labels, Z (and so out0 .. out{Z-1}) is known only after a forward pass.
            self.accumulator.source_names = self.checkpoint.labels
            self.outcome.result = self.accumulator.compute()
        except MelepError as error:
            self._fail(error)
        finally:
            self.outcome.seconds += time.perf_counter() - started

    def _fail(self, error: BaseException) -> None:
        message = str(error) if isinstance(error, MelepError) else f"{type(error).__name__}: {error}"
        if not message.startswith(self.checkpoint.name):
            message = f"{self.checkpoint.name}: {message}"
        self.outcome.status = "error"
        self.outcome.error = message
        log.warning(message)


def _check_labels_informative(target: Target, labels: np.ndarray, records: int, *, when: str) -> None:
    """TargetError when every target label is all 0 or all 1: MELEP has no score for any checkpoint.

    `labels` is the (n, Y) label matrix, or the (Y,) positive counts over `records` records.
    """
    positives = np.asarray(labels).sum(axis=0) if np.ndim(labels) == 2 else np.asarray(labels)
    if records == 0 or positives.size == 0:
        return
    if ((positives == 0) | (positives == records)).all():
        counts = ", ".join(f"{name} {int(count)}" for name, count in zip(target.label_names, positives))
        raise TargetError(
            f"{target.path}: every target label is all 0 or all 1 {when} ({records} records; positives: {counts}); "
            "MELEP has no score: choose other --labels"
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
) -> tuple[CheckpointOutcome, Checkpoint | None]:
    started = time.perf_counter()  # the runtime is imported already (_Loading._run)
    outcome = CheckpointOutcome(name=name, path=path, format=_format_of(path))
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
        outcome.status, outcome.error = "error", str(error)
        log.warning(str(error))
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


class _Loading:
    """Load checkpoints one after another on a background thread, from construction on: ONNX ones first, then
    the others, each group in the order given; iterate for each one's (outcome, checkpoint or None) as it is ready.

    ONNX checkpoints load at once, overlapping the opening of the target: ONNX Runtime builds a session without
    holding the GIL. TorchScript checkpoints wait until `target_opened()`: torch.jit.load holds the GIL, so
    loading one meanwhile only delays the target and its first batches (a first version that did so ranked 8
    small checkpoints on CinC about 7 % slower). A UsageError (an option no checkpoint can take) is raised by
    the iteration. `close()` stops the thread before the next checkpoint: after an error or Ctrl-C, a load under
    way finishes in the background (a daemon thread: it never blocks the exit, and a bad target is reported
    without waiting for a model).
    """

    def __init__(self, paths: Sequence[Path], names: Sequence[str], options: dict[str, Any]) -> None:
        # ONNX checkpoints first (a stable sort), so that they all load while the target opens.
        self._work = sorted(zip(paths, names), key=lambda work: _format_of(work[0]) != "onnx")
        self._options = options
        self._ready: queue.SimpleQueue[tuple[bool, Any]] = queue.SimpleQueue()
        self._handed = 0
        self._stop = threading.Event()
        self._opened = threading.Event()
        self._thread = threading.Thread(target=self._run, name="melep-load", daemon=True)
        self._thread.start()

    def target_opened(self) -> None:
        """The target is open: checkpoints that hold the GIL while loading may load now."""
        self._opened.set()

    def _run(self) -> None:
        try:
            # Every runtime needed first, outside any checkpoint's clock: importing torch (a second or more, mostly
            # holding the GIL) while an ONNX session is built would show up in that checkpoint's seconds. The same
            # for the metric's scipy.special (0.3 s), which the first checkpoint to finish would pay otherwise.
            for checkpoint_format in dict.fromkeys(_format_of(path) for path, _ in self._work):
                _import_runtime(checkpoint_format)
            with contextlib.suppress(ImportError):  # a broken install is reported where the metric needs it
                importlib.import_module("scipy.special")
            for path, name in self._work:
                if _format_of(path) != "onnx":
                    self._opened.wait()
                if self._stop.is_set():
                    return
                self._ready.put((True, _load(path, name, **self._options)))
        except BaseException as error:  # raised in the iterating thread, which would otherwise wait for ever
            self._ready.put((False, error))

    def __iter__(self) -> Iterator[tuple[CheckpointOutcome, Checkpoint | None]]:
        self.target_opened()  # loading is what is awaited now
        while self._handed < len(self._work):
            loaded, value = self._ready.get()
            self._handed += 1
            if not loaded:
                raise value
            yield value

    def close(self) -> None:
        """Load nothing more; wait for the thread only when it has nothing left to do."""
        self._stop.set()
        self._opened.set()
        if self._handed == len(self._work):
            self._thread.join()


def _import_runtime(checkpoint_format: str | None) -> None:
    """Import torch or onnxruntime before a checkpoint's clock starts: importing torch takes about a second,
    which would otherwise show up in the seconds of whichever checkpoint happens to load first."""
    with contextlib.suppress(ImportError):  # a missing runtime is reported when the checkpoint loads
        importlib.import_module("onnxruntime" if checkpoint_format == "onnx" else "torch")


def _format_of(path: Path) -> str | None:
    return "onnx" if path.suffix.lower() == ".onnx" else "torchscript"


def _assign_ranks(outcomes: list[CheckpointOutcome]) -> None:
    """Sort in place: ok results by ascending MELEP (ties by name), then failures by name."""
    outcomes.sort(key=lambda o: (o.status != "ok", o.melep if o.melep is not None else 0.0, o.name))
    for position, outcome in enumerate(outcomes, start=1):
        outcome.rank = position if outcome.status == "ok" else None


#: Decoded records the decode thread may hold ahead of the forward passes (at least two batches are allowed).
#: Big enough to decode through a model's load (mostly one thread: the other cores are free) instead of during
#: the forward passes, where decoding stalls the runtime's threads: the Bi-LSTM ranked 2,992 PTB-XL records
#: 3-9 % faster than with 32 MiB (benchmarks/README.md). Still a constant: memory does not grow with the target.
PREFETCH_BYTES = 128 * 2**20


def _decode_batch_size(device: str, paths: Sequence[Path]) -> int:
    """Records per decoded batch when --batch-size is not given: the default of the device the models will use.

    Known before any checkpoint loads, so decoding can start first. 'auto' means CUDA when a runtime of
    these checkpoints sees a GPU. A checkpoint that ends up elsewhere still runs its own batch size.
    """
    requested = device.strip().lower()
    if requested == "auto":
        formats = {_format_of(path) for path in paths}
        requested = "cuda" if _cuda_visible(formats) else "cpu"
    return default_batch_size(requested)


def _cuda_visible(formats: set[str | None]) -> bool:
    """Whether torch (TorchScript) or onnxruntime (ONNX) would run these formats on CUDA under --device auto."""
    try:
        if "torchscript" in formats and importlib.import_module("torch").cuda.is_available():
            return True
        if "onnx" in formats:
            providers = importlib.import_module("onnxruntime").get_available_providers()
            return "CUDAExecutionProvider" in providers
    except ImportError:  # a missing runtime is reported when its checkpoint loads
        return False
    return False


def _batch_bytes(batch: Batch) -> int:
    signals = batch.signals
    return int(signals.nbytes) if isinstance(signals, np.ndarray) else sum(int(signal.nbytes) for signal in signals)


def _longest(batch: Batch) -> int:
    """Samples of the batch's longest record (what its input spec is computed from)."""
    signals = batch.signals
    return int(signals.shape[1]) if isinstance(signals, np.ndarray) else max(len(signal) for signal in signals)


def _specs_for(running: Sequence[_Running], batch: Batch) -> set[InputSpec]:
    """The distinct inputs the checkpoints still running take for `batch` (those known before they run)."""
    specs = {item.input_spec(batch) for item in running}
    specs.discard(None)
    return specs  # type: ignore[return-value]


def _prepared_bytes(batch: Batch, spec: InputSpec) -> int:
    """About what `prepare(batch, spec)` returns, in bytes: enough to bound how far preparation runs ahead."""
    samples = spec.samples
    if samples is None:
        samples = _longest(batch)
        if spec.sampling_rate is not None:
            up, down = resampling_factors(batch.sampling_rate, spec.sampling_rate)
            samples = math.ceil(samples * up / down)
    return len(batch) * len(spec.leads) * samples * np.dtype(spec.dtype).itemsize


#: Threads that prepare model inputs (resampling, normalisation, layout) ahead of the forward passes, at most.
#: Preparing is numpy/scipy work that releases the GIL: two threads prepare twice as fast as one on 2 cores.
PREPARE_WORKERS = 4

#: Prepared inputs held ahead of the forward passes, in bytes, beyond one batch per preparing thread (always
#: allowed, so every thread has work): being a few batches ahead is enough to keep the forward passes fed.
PREPARE_AHEAD_BYTES = 16 * 2**20


def prepare_workers(threads: int | None) -> int:
    """Threads preparing inputs ahead: as many as the forward passes may use (`--threads`), at most PREPARE_WORKERS."""
    return max(1, min(threads or cpu_threads(), PREPARE_WORKERS))


SpecsFor = Callable[[Batch], Iterable[InputSpec]]


@dataclass(eq=False)
class _Pending:
    """One item the decode thread handed over: a batch (with its inputs being prepared), the end, or an error."""

    kind: str  # "batch" | "done" | "error"
    value: Any = None
    size: int = 0  # bytes of decoded signals
    prepared: dict[InputSpec, Future[np.ndarray]] | None = None  # None: not planned yet
    prepared_size: int = 0


class _Prefetch:
    """Decode the next batches in a background thread, from construction on, while models load and run; once told
    the input specs (`prepare_ahead`), also prepare the next batches' model inputs on a small thread pool.

    The thread runs ahead by up to `budget` bytes of signals (and always by `depth` batches), the preparation by
    up to `prepare_budget` bytes of inputs (and always by one batch per worker): memory stays bounded however large
    the target, and the work fills the time the cores are not busy (loading, waits, a GPU's forward passes).
    Iterate once, for (batch, {spec: future of its prepared inputs}); `close()` (also on an exception: use
    contextlib.closing) stops the thread and the pool.
    """

    def __init__(
        self,
        batches: Iterable[Batch],
        budget: int | None = None,
        depth: int = 2,
        prepare_budget: int | None = None,
    ) -> None:
        self._batches = batches
        self._budget = PREFETCH_BYTES if budget is None else budget
        self._depth = depth
        self._prepare_budget = PREPARE_AHEAD_BYTES if prepare_budget is None else prepare_budget
        self._pending: collections.deque[_Pending] = collections.deque()
        self._held = 0
        self._prepared_held = 0
        self._specs_for: SpecsFor | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._workers = 0
        self._changed = threading.Condition()
        self._stop = threading.Event()
        self._worker = threading.Thread(target=self._produce, name="melep-decode", daemon=True)
        self._worker.start()

    def prepare_ahead(self, specs_for: SpecsFor, workers: int) -> None:
        """From now on, prepare each batch's inputs for the specs `specs_for(batch)` on `workers` threads, ahead."""
        with self._changed:
            if self._stop.is_set() or self._pool is not None:
                return
            self._specs_for = specs_for
            self._workers = workers
            self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="melep-prepare")
            self._plan()

    def _plan(self) -> None:
        """Start preparing the next planned-for batches, in order, while within the budget (lock held)."""
        if self._pool is None or self._specs_for is None or self._stop.is_set():
            return
        planned = 0
        for item in self._pending:
            if item.kind != "batch":
                return
            if item.prepared is not None:
                planned += 1
                continue
            batch: Batch = item.value
            specs = list(self._specs_for(batch))
            size = sum(_prepared_bytes(batch, spec) for spec in specs)
            if planned >= self._workers and self._prepared_held + size > self._prepare_budget:
                return
            planned += 1
            item.prepared = {spec: self._pool.submit(_prepare_batch, batch, spec) for spec in specs}
            item.prepared_size = size
            self._prepared_held += size

    def _room_for(self, size: int) -> bool:
        return len(self._pending) < self._depth or self._held + size <= self._budget

    def _produce(self) -> None:
        try:
            for batch in self._batches:
                size = _batch_bytes(batch)
                with self._changed:
                    while not self._stop.is_set() and not self._room_for(size):
                        self._changed.wait(timeout=0.1)
                    if self._stop.is_set():
                        return
                    self._pending.append(_Pending("batch", batch, size))
                    self._held += size
                    self._plan()
                    self._changed.notify_all()
            item = _Pending("done")
        except BaseException as error:  # handed to the consumer, raised there
            item = _Pending("error", error)
        with self._changed:
            self._pending.append(item)
            self._changed.notify_all()

    def __iter__(self) -> Iterator[tuple[Batch, dict[InputSpec, Future[np.ndarray]]]]:
        while True:
            with self._changed:
                while not self._pending:
                    self._changed.wait()
                item = self._pending.popleft()
                self._held -= item.size
                self._prepared_held -= item.prepared_size
                self._plan()
                self._changed.notify_all()
            if item.kind == "batch":
                yield item.value, item.prepared or {}
            elif item.kind == "error":
                raise item.value
            else:
                return

    def close(self) -> None:
        """Stop the decode thread and the preparing threads; drop what they did ahead."""
        self._stop.set()
        with self._changed:
            for item in self._pending:
                for future in (item.prepared or {}).values():
                    future.cancel()
            self._pending.clear()
            self._held = self._prepared_held = 0
            self._changed.notify_all()
        self._worker.join()
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)


def _prepare_batch(batch: Batch, spec: InputSpec) -> np.ndarray:
    """`prepare` for one batch and spec, on a preparing thread (looked up at call time: benchmarks wrap it)."""
    return prepare(batch.signals, batch.sampling_rate, batch.leads, spec)
