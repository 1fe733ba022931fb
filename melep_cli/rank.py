"""`melep rank`: score every candidate checkpoint on one target, best (lowest MELEP) first.

Orchestration only. The target is decoded once: each batch goes to every checkpoint still
running, checkpoints whose input specs are equal share one prepared array, and each
checkpoint's outputs feed its own MELEP accumulator. One checkpoint that fails (load, shape,
non-finite outputs) becomes an error row; the others finish.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from melep_cli.checkpoints import Checkpoint, discover_checkpoints, load_checkpoint, unique_names
from melep_cli.checkpoints.backends import check_threads
from melep_cli.checkpoints.checkpoint import default_batch_size
from melep_cli.checkpoints.devices import parse_precision
from melep_cli.errors import CheckpointError, MelepError, TargetError, UsageError
from melep_cli.metric import MelepAccumulator, MelepResult, Weighting
from melep_cli.preprocess import InputSpec, prepare
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
    `threads`: CPU threads of each forward pass (ONNX Runtime and torch intra-op threads); None:
    the cores available to the process. On a machine busy with other work, 1 is often much faster.
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
    opened = target if not isinstance(target, (str, Path)) else open_target(target, **target_options)

    _check_labels_informative(opened, opened.labels, len(opened), when="among its records")

    outcomes: list[CheckpointOutcome] = []
    running: list[_Running] = []
    for path, name in zip(paths, unique_names(paths)):
        outcome, loaded = _load(
            path,
            name,
            device=device,
            strict_device=strict_device,
            threads=threads,
            share_cores=len(paths) > 1,
            precision=precision,
        )
        outcomes.append(outcome)
        if loaded is not None:
            running.append(_Running(loaded, outcome, weighting, source_weighted, opened.label_names))

    positives = np.zeros(len(opened.label_names), dtype=np.int64)
    records = 0
    total = len(opened)
    decode_size = batch_size or max((item.checkpoint.batch_size for item in running), default=default_batch_size("cpu"))
    # closing(): an exception (Ctrl-C included) stops the decode thread at once, not when the frame is collected.
    with contextlib.closing(_prefetch(opened.batches(decode_size))) as batches:
        for batch in batches:
            labels = np.asarray(batch.labels, dtype=np.uint8)
            positives += labels.sum(axis=0, dtype=np.int64)
            records += labels.shape[0]
            prepared: dict[InputSpec, np.ndarray] = {}
            for item in running:
                if item.outcome.status == "ok":
                    item.feed(batch, labels, prepared, batch_size)
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

    def feed(
        self, batch: Batch, labels: np.ndarray, prepared: dict[InputSpec, np.ndarray], batch_size: int | None
    ) -> None:
        started = time.perf_counter()
        try:
            length = max(len(signal) for signal in batch.signals)
            spec = self.checkpoint.input_spec(sampling_rate=batch.sampling_rate, samples=length)
            if self.checkpoint.needs_probe:  # once, on the first batch: the spec is NCT until then
                example = prepare(batch.signals[:1], batch.sampling_rate, batch.leads, spec)
                self.checkpoint.probe_layout(example)
                spec = self.checkpoint.input_spec(sampling_rate=batch.sampling_rate, samples=length)
            inputs = prepared.get(spec)
            if inputs is None:
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
    _import_runtime(_format_of(path))
    started = time.perf_counter()
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


def _prefetch(batches: Iterable[Batch], depth: int = 2) -> Iterator[Batch]:
    """Decode the next batches in a background thread while the current one runs through the models."""
    buffer: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for batch in batches:
                while not stop.is_set():
                    try:
                        buffer.put(("batch", batch), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            buffer.put(("done", None))
        except BaseException as error:  # handed to the consumer, raised there
            buffer.put(("error", error))

    worker = threading.Thread(target=produce, name="melep-decode", daemon=True)
    worker.start()
    try:
        while True:
            kind, value = buffer.get()
            if kind == "batch":
                yield value
            elif kind == "error":
                raise value
            else:
                return
    finally:
        stop.set()
        while worker.is_alive():
            try:
                buffer.get_nowait()
            except queue.Empty:
                worker.join(timeout=0.1)
