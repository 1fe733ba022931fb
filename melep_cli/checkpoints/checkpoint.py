"""`load_checkpoint` and `Checkpoint`: a loaded model, what it expects, and checked batched forward passes."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from melep_cli.checkpoints.backends import (
    Backend,
    LayoutHint,
    OnnxBackend,
    OutOfMemory,
    OutputSelector,
    TensorInfo,
    TorchScriptBackend,
    one_line,
    resolve_output,
)
from melep_cli.checkpoints.devices import parse_device, parse_precision
from melep_cli.checkpoints.metadata import CONSEQUENTIAL_KEYS, CheckpointMetadata, resolve_metadata, sidecar_path
from melep_cli.checkpoints.safety import detect_format
from melep_cli.errors import CheckpointError, InputError
from melep_cli.preprocess import InputSpec, Windows, resampling_factors

logger = logging.getLogger("melep")

#: Records per forward pass on the CPU (see default_batch_size).
DEFAULT_BATCH_SIZE = 32
#: Records per forward pass on CUDA: a reasoned default, not a measured one (see default_batch_size).
DEFAULT_CUDA_BATCH_SIZE = 256
#: Length of the zero input `melep inspect` runs when neither metadata nor the model fixes it (10 s at 100 Hz).
DEFAULT_PROBE_SAMPLES = 1000


def load_checkpoint(
    path: str | Path,
    *,
    device: str = "auto",
    strict_device: bool = False,
    name: str | None = None,
    warn_defaults: bool = True,
    threads: int | None = None,
    share_cores: bool = False,
    precision: str = "float32",
    metadata: CheckpointMetadata | None = None,
) -> Checkpoint:
    """Load a TorchScript or ONNX checkpoint safely (pickles are refused unread) with its metadata.

    `device`: auto (CUDA when available), cpu, cuda or cuda:N; without CUDA a warning and the CPU,
    or a CheckpointError with `strict_device`. `name` is the display name (default: the file stem).
    With `warn_defaults`, the metadata values that had to be assumed are logged as one warning.
    `threads`: CPU threads of the forward pass (ORT intra-op threads, torch intra-op threads while
    this model runs); None: the cores available to the process. `share_cores`: other models run
    between this one's batches (rank with several checkpoints): ONNX Runtime's idle threads sleep
    instead of spinning. `precision`: float32 (exact), or bfloat16/float16 for speed where the device
    has fast 16-bit arithmetic (TorchScript only; otherwise float32 with a warning, see `Checkpoint.precision`).
    `metadata`: use this instead of the file's (annotate checks the metadata it is about to write).
    """
    path = Path(path)
    parse_device(device)
    parse_precision(precision)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    checkpoint_format = detect_format(path)
    backend: Backend
    if checkpoint_format == "onnx":
        backend = OnnxBackend(
            path,
            device=device,
            strict_device=strict_device,
            threads=threads,
            share_cores=share_cores,
            precision=precision,
        )
    else:
        backend = TorchScriptBackend(
            path, device=device, strict_device=strict_device, threads=threads, precision=precision
        )
    if metadata is None:
        metadata = resolve_metadata(path, backend.embedded_metadata, backend.embedded_origin)
    checkpoint = Checkpoint(path, backend, metadata, name=name)
    if warn_defaults:
        message = checkpoint.defaults_message()
        if message:
            logger.warning(message)
    return checkpoint


class MetadataConflict(CheckpointError):
    """The model contradicts its metadata, or gives outputs melep can never use, whatever the records.

    Label count vs output width, leads vs the input shape or the first layer, samples or dtype vs the ONNX
    input, a layout the model does not run, scores/features outputs it lacks or that are no (batch, Z) floats.
    `melep inspect` and `melep annotate` fail on these (annotate writes nothing); a forward pass that merely
    did not run (a zero record of a guessed length, NaN outputs on zeros) is no conflict.
    """


@dataclass(frozen=True)
class Prediction:
    """The outputs melep uses from one `predict_outputs` call.

    `scores`: (b, Z) source-label scores (the metadata's `scores_output`), checked as `predict` checks them.
    `features`: (b, D) penultimate features (the metadata's `features_output`), None when none is declared.
    """

    scores: np.ndarray
    features: np.ndarray | None = None


def select_output(where: str, key: str, selector: OutputSelector, outputs: Sequence[TensorInfo]) -> str:
    """The name of the output `selector` picks from `outputs`, or a CheckpointError naming `key` and listing them.

    `key` is the metadata key that chose it (scores_output, features_output). A picked output that is no
    tensor (an ONNX sequence, a tuple inside a TorchScript result) is an error too.
    """
    names = [info.name for info in outputs]
    name = resolve_output(selector, names)
    if name is None:
        listing = ", ".join(repr(item) for item in names) or "none"
        picked = f"index {selector}" if isinstance(selector, int) else repr(selector)
        raise MetadataConflict(
            f"{where}: metadata key {key!r} names output {picked}, which the model does not have "
            f"(its outputs: {listing})"
        )
    info = outputs[names.index(name)]
    if not info.tensor:
        raise MetadataConflict(f"{where}: output {name!r} (metadata key {key!r}) is a {info.dtype}, not a tensor")
    return name


def aggregate_windows(prediction: Prediction, windows_per_record: np.ndarray, windows: Windows | None) -> Prediction:
    """One row per record from one row per window: the mean or max of each record's windows (scores and features).

    The raw outputs are aggregated (before any activation), as the metadata key `windows` says.
    """
    counts = np.asarray(windows_per_record, dtype=np.int64)
    if int(counts.sum()) != len(prediction.scores):
        raise InputError(f"{int(counts.sum())} windows announced but {len(prediction.scores)} outputs")
    aggregate = windows.aggregate if windows is not None else "mean"
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)

    def reduce(values: np.ndarray | None) -> np.ndarray | None:
        if values is None or len(counts) == 0:
            return values if values is None else values[:0]
        if aggregate == "max":
            return np.maximum.reduceat(values, starts, axis=0)
        sums = np.add.reduceat(values.astype(np.float64), starts, axis=0)
        return (sums / counts[:, np.newaxis]).astype(values.dtype, copy=False)

    return Prediction(reduce(prediction.scores), reduce(prediction.features))  # type: ignore[arg-type]


def default_batch_size(device: str) -> int:
    """Records per forward pass when none is asked for: DEFAULT_BATCH_SIZE on the CPU, DEFAULT_CUDA_BATCH_SIZE on CUDA.

    CPU: the fastest size of `melep rank` end to end on the paper's ResNet-101 and Bi-LSTM
    (benchmarks/results/rank-cpu.json); larger CPU batches only cost memory. CUDA: a GPU needs
    large batches to be busy; 256 is the usual starting point and fits a ResNet-101's activations
    (~1 GB at 1000 samples) in any current GPU; out-of-memory errors halve it anyway.
    """
    return DEFAULT_CUDA_BATCH_SIZE if device.startswith("cuda") else DEFAULT_BATCH_SIZE


class Checkpoint:
    """A loaded checkpoint: metadata resolved against the model, input specs, checked predictions.

    Attributes: name, path, format ('onnx' | 'torchscript'), metadata (CheckpointMetadata with the
    values derived from the model filled in; `defaulted` still lists them), device (what really
    runs it: 'cpu' or 'cuda:N'), provider, layout (None until probed when nothing fixes it),
    output_width (None until known), features_width (D once known; None without a features output),
    batch_size (halved for good after an out-of-memory error).

    The scores come from the metadata's `scores_output` (default: the only output, or the first), the
    features from `features_output` (default: none). ONNX names are checked on loading; TorchScript ones,
    known only when the model runs, on the first forward pass (or layout probe).

    A TorchScript model never meets an input in an untried layout on its frozen module: layout probes run
    on the unfrozen module, and so does one record of the first forward pass when the layout came from the
    metadata (see `TorchScriptBackend`). What contradicts the metadata raises `MetadataConflict`.
    """

    def __init__(self, path: Path, backend: Backend, metadata: CheckpointMetadata, *, name: str | None = None):
        self.path = path
        self.name = name or path.stem
        self.format = backend.format
        self.device = backend.device
        self.provider = backend.provider
        self.batch_size = default_batch_size(self.device)
        #: Largest batch that fitted after an out-of-memory error: later calls never ask for more.
        self._memory_limit: int | None = None
        self._backend = backend
        self._notes: dict[str, str] = {}
        self.metadata = self._derive(metadata)
        #: What picks the scores / features output: the metadata's value, else the first output / nothing.
        declared = self.metadata.scores_output
        self._scores_selector: OutputSelector = 0 if declared is None else declared
        self._features_selector: OutputSelector | None = self.metadata.features_output
        self._selected = tuple(item for item in (self._scores_selector, self._features_selector) if item is not None)
        self._scores_name: str | None = None
        self._features_name: str | None = None
        self.features_width: int | None = None
        if self.format == "onnx":  # declared outputs: names are checked now
            self._resolve_names()
        self.output_width: int | None = self._declared_width()
        self._check_width(self.output_width, where="the ONNX output shape")
        #: The layout ran once on a module safe to probe (always true without one): forward passes may start.
        self._layout_ran = not backend.probing

    # ----- what the model says about itself -------------------------------------------------
    def _derive(self, metadata: CheckpointMetadata) -> CheckpointMetadata:
        """Fill layout, samples and dtype from the model where the metadata leaves them out, and check clashes."""
        declared = self._backend.input
        leads = len(metadata.leads)
        layout, samples, dtype = metadata.layout, metadata.samples, metadata.dtype
        if declared.shape is not None and len(declared.shape) == 2:
            layout, samples = self._derive_flat(layout, samples, leads, declared.shape[1])
        elif declared.shape is not None and layout == "NT":
            raise MetadataConflict(
                f"{self.path}: metadata layout NT (batch, leads x time) but the ONNX input shape "
                f"{self._shape_text()} has three axes"
            )
        elif declared.shape is not None:
            first, second = declared.shape[1], declared.shape[2]
            if layout is None:
                if first == leads and second != leads:
                    layout = "NCT"
                elif second == leads and first != leads:
                    layout = "NTC"
                if layout is not None:
                    self._notes["layout"] = f"{layout} (from the ONNX input shape)"
                elif (  # a static axis, and none of the leads given: taking either axis as the leads contradicts
                    leads not in (first, second)
                    and (first, second) != (None, None)
                    and "leads" not in metadata.defaulted
                ):
                    raise MetadataConflict(
                        f"{self.path}: the ONNX input shape {self._shape_text()} has no axis of the {leads} leads "
                        f"its metadata names ({', '.join(metadata.leads)})"
                    )
            elif (first, second).count(leads) == 1 and (first == leads) != (layout == "NCT"):
                # The shape puts the leads on the other axis: the rule that derives the layout says the other one.
                other = "NCT" if first == leads else "NTC"
                raise MetadataConflict(
                    f"{self.path}: metadata layout {layout} but the ONNX input shape {self._shape_text()} has "
                    f"the {leads} leads on the axis of layout {other}"
                )
            if layout is not None:
                lead_axis, time_axis = (first, second) if layout == "NCT" else (second, first)
                if lead_axis is not None and lead_axis != leads:
                    raise MetadataConflict(
                        f"{self.path}: the ONNX input shape {self._shape_text()} has {lead_axis} leads in layout "
                        f"{layout}, but the metadata names {leads} ({', '.join(metadata.leads)})"
                    )
                if time_axis is not None:
                    if samples is None:
                        samples = time_axis
                        self._notes["samples"] = f"{samples} (the ONNX input's static length)"
                    elif samples != time_axis:
                        raise MetadataConflict(
                            f"{self.path}: metadata samples {samples} but the ONNX input shape "
                            f"{self._shape_text()} fixes {time_axis}"
                        )
        if declared.dtype is not None:
            if dtype is None:
                dtype = declared.dtype
                source = "the ONNX input's declared type" if self.format == "onnx" else "the parameters' type"
                self._notes["dtype"] = f"{dtype} ({source})"
            elif self.format == "onnx" and dtype != declared.dtype:
                raise MetadataConflict(
                    f"{self.path}: metadata dtype {dtype} but the ONNX input is declared {declared.dtype}"
                )
        if dtype is None:
            dtype = "float32"
        if metadata.windows is not None and samples is None:
            raise CheckpointError(
                f"{self.path}: metadata key 'windows' needs 'samples' (the window length); "
                f"set it with 'melep annotate {self.path} --samples N'"
            )
        return replace(metadata, layout=layout, samples=samples, dtype=dtype)

    def _derive_flat(
        self, layout: str | None, samples: int | None, leads: int, width: int | None
    ) -> tuple[str, int | None]:
        """Layout and samples of a model whose ONNX input is (batch, leads x time): layout NT."""
        if layout not in (None, "NT"):
            raise MetadataConflict(
                f"{self.path}: metadata layout {layout} but the ONNX input shape {self._shape_text()} has two axes "
                "(layout NT: the leads concatenated)"
            )
        if layout is None:
            self._notes["layout"] = "NT (from the ONNX input shape)"
        if width is not None:
            if samples is None:
                if width % leads:
                    raise MetadataConflict(
                        f"{self.path}: the ONNX input shape {self._shape_text()} is no multiple of the {leads} leads"
                    )
                samples = width // leads
                self._notes["samples"] = f"{samples} (the ONNX input's static length / {leads} leads)"
            elif samples * leads != width:
                raise MetadataConflict(
                    f"{self.path}: metadata samples {samples} x {leads} leads but the ONNX input shape "
                    f"{self._shape_text()} fixes {width}"
                )
        return "NT", samples

    def _shape_text(self) -> str:
        shape = self._backend.input.shape or ()
        names = self._backend.input.dynamic_names or (None,) * len(shape)
        return "[" + ", ".join(str(dim) if dim is not None else (name or "?") for dim, name in zip(shape, names)) + "]"

    @property
    def input_info(self) -> dict:
        """The declared input (name, shape with symbolic axes as text, dtype) for `melep inspect`."""
        declared = self._backend.input
        shape = None
        if declared.shape is not None:
            names = declared.dynamic_names or (None,) * len(declared.shape)
            shape = [dim if dim is not None else (name or "?") for dim, name in zip(declared.shape, names)]
        return {"name": declared.name, "shape": shape, "dtype": self.metadata.dtype}

    @property
    def precision(self) -> str:
        """What the forward pass computes in: float32, bfloat16 or float16 (float32 after any fallback)."""
        return self._backend.precision

    @property
    def scores_output(self) -> str | None:
        """The name of the output holding the scores; None for TorchScript until its first forward pass."""
        return self._scores_name

    @property
    def features_output(self) -> str | None:
        """The name of the output holding the features; None when none is declared (or before TorchScript runs)."""
        return self._features_name

    @property
    def output_name(self) -> str | None:
        """The scores output's name (kept for older callers: `scores_output`)."""
        return self._scores_name

    @property
    def output_names(self) -> tuple[str, ...] | None:
        """Every output's name in the model's order; None for TorchScript until its first forward pass."""
        return tuple(info.name for info in self._backend.outputs) or None

    @property
    def output_count(self) -> int:
        """How many outputs the model has (declared, or in the latest TorchScript result; 0 before it runs)."""
        return len(self._backend.outputs)

    @property
    def outputs_info(self) -> list[dict[str, Any]]:
        """Every output as {name, shape, dtype, role} for `melep inspect`; role: "scores", "features" or None.

        ONNX shapes are declared (symbolic axes as text, None when unknown); TorchScript shapes are those of
        its latest forward pass (an empty list before the first).
        """
        roles = {self._scores_name: "scores", self._features_name: "features"}
        described = []
        for info in self._backend.outputs:
            shape = None
            if info.shape is not None:
                names = info.dynamic_names or (None,) * len(info.shape)
                shape = [dim if dim is not None else (name or "?") for dim, name in zip(info.shape, names)]
            described.append({"name": info.name, "shape": shape, "dtype": info.dtype, "role": roles.get(info.name)})
        return described

    @property
    def layout(self) -> str | None:
        return self.metadata.layout

    @property
    def needs_probe(self) -> bool:
        """True while the layout is unknown: run `probe_layout` on one record before `predict`."""
        return self.metadata.layout is None

    @property
    def activation(self) -> str:
        """How outputs become probabilities for the metric: logits, probabilities or softmax."""
        return self.metadata.output

    @property
    def labels(self) -> tuple[str, ...] | None:
        """Source label names: the metadata's, else out0 .. out{Z-1} once Z is known, else None."""
        if self.metadata.labels is not None:
            return self.metadata.labels
        if self.output_width is not None:
            return tuple(f"out{index}" for index in range(self.output_width))
        return None

    @property
    def static_batch(self) -> int | None:
        """The batch size an ONNX model was exported with a fixed batch axis, else None."""
        shape = self._backend.input.shape
        return shape[0] if shape is not None else None

    def default_notes(self) -> dict[str, str]:
        """Key -> the value assumed for it, for every defaulted key (FORMATS.md's defaults)."""
        metadata = self.metadata
        width = self.output_width
        notes = {
            "labels": f"out0 .. out{width - 1}" if width else "out0 .. out{Z-1} (Z from the first forward pass)",
            "sampling_rate": "the target's rate (no resampling)",
            "samples": "the record length",
            "leads": "the standard 12 (" + " ".join(metadata.leads) + ")",
            "layout": "probed on the first record",
            "output": "logits (sigmoid applied)",
            "normalization": "none",
            "dtype": "float32",
            "name": f"{self.path.stem} (the file stem)",
            "description": "none",
            "scores_output": self._scores_default_note(),
        }
        notes.update(self._notes)
        return {key: notes[key] for key in metadata.defaulted}

    def defaults_message(self) -> str | None:
        """One line listing the assumed values that change results, or None when the metadata gives them all."""
        notes = self.default_notes()
        keys = CONSEQUENTIAL_KEYS + (("scores_output",) if self.output_count > 1 else ())
        assumed = [f"{key}={notes[key]}" for key in keys if key in notes]
        if not assumed:
            return None
        if self.metadata.origin == "none":
            where = f"no melep metadata (embedded or sidecar {sidecar_path(self.path).name})"
        else:
            where = f"metadata in {self.metadata.origin} leaves out {len(assumed)} key(s)"
        return f"{self.path}: {where}; assuming {'; '.join(assumed)} (set them with 'melep annotate')"

    def _scores_default_note(self) -> str:
        """What the default scores output is: the only one, the first of several, or not known yet."""
        if self._scores_name is None:
            return "the first output (known after the first forward pass)"
        count = self.output_count
        return f"{self._scores_name} (the only output)" if count == 1 else f"{self._scores_name} (the first of {count})"

    # ----- outputs ---------------------------------------------------------------------------
    def _resolve_names(self) -> None:
        """Resolve the scores / features selectors against the outputs the model has (CheckpointError if absent)."""
        self._scores_name = self.check_output("scores_output", self._scores_selector)
        if self._features_selector is not None:
            self._features_name = self.check_output("features_output", self._features_selector)

    def check_output(self, key: str, selector: OutputSelector) -> str:
        """The name of the output `selector` (the value of metadata `key`) picks, or a CheckpointError listing them.

        ONNX outputs are declared; a TorchScript model's are those of its latest forward pass.
        """
        return select_output(str(self.path), key, selector, self._backend.outputs)

    def _declared_width(self) -> int | None:
        """Z from the declared (ONNX) scores output shape (batch, Z), else None."""
        info = next((info for info in self._backend.outputs if info.name == self._scores_name), None)
        if info is None or info.shape is None or len(info.shape) != 2:
            return None
        return info.shape[1]

    def _select(self, outputs: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray | None]:
        """The scores and features (or None) of one forward pass's outputs, by the resolved names."""
        if self.format != "onnx":  # TorchScript: the result's structure is only known now (and is tiny to check)
            self._resolve_names()
        scores = outputs[self._scores_name]  # type: ignore[index]  (resolved above: a tensor output)
        features = outputs[self._features_name] if self._features_name is not None else None
        return scores, features

    # ----- inputs ----------------------------------------------------------------------------
    def input_spec(self, *, sampling_rate: float | None, samples: int | None) -> InputSpec:
        """The InputSpec for a target at `sampling_rate` Hz whose records have `samples` samples.

        Metadata wins; defaults come from the model, then the target (`samples` is converted to the
        model's rate). Until the layout is probed, the spec is NCT: the layout of the probe example.
        `sampling_rate` None (no target): the metadata's rate, else None (the target's, whatever it is).
        """
        metadata = self.metadata
        rate = metadata.sampling_rate if metadata.sampling_rate is not None else sampling_rate
        length = metadata.samples
        if length is None and samples is not None and sampling_rate is not None and rate is not None:
            up, down = resampling_factors(sampling_rate, rate)
            length = math.ceil(samples * up / down)
        return InputSpec(
            sampling_rate=rate,
            samples=length,
            leads=metadata.leads,
            layout=metadata.layout or "NCT",
            normalization=metadata.normalization,
            dtype=metadata.dtype or "float32",
            crop=metadata.crop or "start",
            windows=metadata.windows,
            filter=metadata.filter,
            scale=1.0 if metadata.scale is None else metadata.scale,
            missing_leads=metadata.missing_leads or "error",
        )

    def probe_layout(self, example: np.ndarray) -> None:
        """Find the layout from one prepared record `example` (1, L, T) in NCT: the one that runs and gives (1, Z).

        Probes run where a wrong layout raises (`run(probe=True)`: the unfrozen TorchScript module). When the
        first weighted layer takes the leads on one axis (`layout_hint`), that layout is run first and, if it
        works, the other is not run at all: it would hand that layer T channels. If both layouts or neither
        work, a CheckpointError asks for `layout` in the metadata; a layout that runs but gives another output
        width than the metadata's labels is a MetadataConflict.
        """
        if not self.needs_probe:
            return
        if getattr(example, "windows_per_record", None) is not None:
            example = example[:1]  # a windowed record: its first window
        example = np.asarray(example)
        if example.ndim != 3 or example.shape[0] != 1:
            raise InputError(f"a layout probe takes one record shaped (1, leads, time), got {example.shape}")
        candidates = {"NCT": example, "NTC": np.ascontiguousarray(example.transpose(0, 2, 1))}
        hint = self._usable_hint(example.shape[1], example.shape[2])
        order = ["NTC", "NCT"] if hint is not None and hint.layout == "NTC" else ["NCT", "NTC"]
        working: dict[str, int] = {}
        widths: dict[str, int] = {}  # layouts that run but give another width than the labels
        failures: dict[str, str] = {}
        for layout in order:
            outputs, failure = self._try_layout(candidates[layout])
            if outputs is None:
                failures[layout] = failure or "failed"
                continue
            scores, _ = self._select(outputs)  # an output name the model lacks fails now, whatever the layout
            problem = self._output_problem(scores, 1, check_width=False)
            if problem:
                failures[layout] = problem[0]
            else:
                ran = widths if self._expected_width() not in (None, scores.shape[1]) else working
                ran[layout] = scores.shape[1]
                if hint is not None:
                    break  # the first layer takes the leads in this layout: the other would give it T channels
        shape = f"{tuple(example.shape[1:])} (leads, samples)"
        hint_text = f"set it with 'melep annotate {self.path} --layout NCT|NTC'"
        if len(working) == 2:
            raise CheckpointError(f"{self.path}: runs in both layouts NCT and NTC on a {shape} record; {hint_text}")
        if not working:
            if widths:
                layout, width = next(iter(widths.items()))
                self._check_width(width, where=f"a probe in layout {layout}")
            reasons = "; ".join(f"{layout}: {reason}" for layout, reason in failures.items())
            message = f"{self.path}: runs in neither layout on a {shape} record ({reasons})"
            channels = self._channels_problem(example.shape[1])
            if channels is not None:
                raise channels[1](f"{message}; {channels[0]}")
            raise CheckpointError(f"{message}; {hint_text} (and --samples if it needs a fixed length)")
        layout, width = next(iter(working.items()))
        self.metadata = replace(self.metadata, layout=layout)
        if hint is not None and layout == hint.layout:
            how = f"probed: its first layer, {hint.layer}, takes the {hint.channels} leads on that axis"
        else:
            how = "probed: the only layout that runs"
        self._notes["layout"] = f"{layout} ({how})"
        self.output_width = width
        self._layout_ran = True
        self._backend.release_probe_module()

    def _try_layout(self, inputs: np.ndarray) -> tuple[dict[str, np.ndarray] | None, str | None]:
        """One probe run of `inputs` on the module safe to probe: its outputs, or None and why it failed."""
        try:
            typed = inputs.astype(self.metadata.dtype or "float32", copy=False)
            return self._forward_padded(typed, probe=True), None
        except Exception as error:
            return None, one_line(error, limit=160)

    def _usable_hint(self, leads: int, samples: int) -> LayoutHint | None:
        """The backend's layout hint when it tells the layouts apart on a (leads, samples) record, else None.

        It does when its layer takes exactly the leads and the record is not square (samples == leads).
        """
        hint = self._backend.layout_hint
        if hint is None or hint.channels != leads or samples == leads:
            return None
        return hint

    def _channels_problem(self, leads: int) -> tuple[str, type[CheckpointError]] | None:
        """Why `leads` channels cannot suit the first layer (the backend's hint), and the error type to raise.

        A MetadataConflict when the metadata gave the leads; a CheckpointError when they are the default 12.
        """
        hint = self._backend.layout_hint
        if hint is None or hint.layer == "Linear" or hint.channels == leads:
            return None  # a Linear often takes a flattened record (leads x samples): its width says little
        layer = f"its first layer ({hint.layer}) takes {hint.channels} channels"
        if "leads" not in self.metadata.defaulted:
            return f"{layer}, not the {leads} leads its metadata names", MetadataConflict
        advice = f"set them with 'melep annotate {self.path} --leads ...'"
        return f"{layer}, not the default {leads} leads; {advice}", CheckpointError

    def _confirm_layout(self, record: np.ndarray) -> None:
        """Run one record of the first forward pass on the module safe to probe, before the optimised one.

        For a layout the metadata gives (no probe ran): a model that fails in it meets the input where a wrong
        shape raises, never on its frozen module. If the other layout then runs, the metadata contradicts the
        model (a MetadataConflict naming the layout that works); else the forward pass failed, as it would have.
        """
        layout = self.metadata.layout or "NCT"
        try:
            self._forward_padded(record, probe=True)
        except OutOfMemory:
            pass  # one record that does not fit: the batch loop reports it (the input's layout is not in question)
        except Exception as error:
            other = "NTC" if layout == "NCT" else "NCT"
            reason = one_line(error, limit=160)
            if record.ndim == 3 and record.shape[1] != record.shape[2] and self._runs_usably(record.transpose(0, 2, 1)):
                raise MetadataConflict(
                    f"{self.path}: metadata layout {layout} does not run ({reason}), but {other} does; "
                    f"fix it with 'melep annotate {self.path} --layout {other}'"
                ) from None
            channels = self._channels_problem(len(self.metadata.leads))
            if channels is not None:
                raise channels[1](f"{self.path}: forward pass failed ({reason}); {channels[0]}") from None
            raise CheckpointError(f"{self.path}: forward pass failed ({one_line(error)})") from None
        self._layout_ran = True
        self._backend.release_probe_module()

    def _runs_usably(self, record: np.ndarray) -> bool:
        """Whether one record runs (on the module safe to probe) and gives usable (1, Z) scores."""
        outputs, _ = self._try_layout(np.ascontiguousarray(record))
        if outputs is None:
            return False
        try:
            scores, _ = self._select(outputs)
        except CheckpointError:
            return False
        return self._output_problem(scores, 1, check_width=False) is None

    # ----- forward passes --------------------------------------------------------------------
    def predict(self, inputs: np.ndarray, *, batch_size: int | None = None) -> np.ndarray:
        """Scores (b, Z) for prepared `inputs`, in batches; checked: (batch, Z), Z = len(labels), finite.

        The scores of `predict_outputs` (one code path); an out-of-memory error halves the batch size.
        """
        return self.predict_outputs(inputs, batch_size=batch_size).scores

    def predict_outputs(self, inputs: np.ndarray, *, batch_size: int | None = None) -> Prediction:
        """Scores (b, Z) and, when `features_output` is declared, features (b, D) for prepared `inputs`, in batches.

        Scores are checked: (batch, Z), Z = len(labels), floating, finite; features: (batch, D), floating,
        finite, the same D in every batch. An out-of-memory error halves the batch size and logs a warning;
        later calls start from the size that fitted, so a long run warns once, not on every batch.
        Windowed inputs (`WindowedInputs`, the metadata key `windows`) run window by window, in the same
        batches, and the raw outputs of each record's windows are aggregated into the record's row.
        """
        if self.needs_probe:
            raise CheckpointError(f"{self.path}: layout unknown; call probe_layout on one record first")
        windows = getattr(inputs, "windows_per_record", None)
        inputs = np.ascontiguousarray(inputs, dtype=self.metadata.dtype or "float32")
        if inputs.ndim != (2 if self.metadata.layout == "NT" else 3):
            raise InputError(
                f"{self.path}: model inputs must be (batch, leads, time), (batch, time, leads) or, in layout NT, "
                f"(batch, leads x time); got {inputs.ndim} axes"
            )
        if windows is not None:
            return aggregate_windows(self._predict_rows(inputs, batch_size), windows, self.metadata.windows)
        return self._predict_rows(inputs, batch_size)

    def _predict_rows(self, inputs: np.ndarray, batch_size: int | None) -> Prediction:
        """`predict_outputs` for one model input per row (a record, or a window)."""
        if not self._layout_ran and len(inputs):
            self._confirm_layout(inputs[:1])
        size = self.static_batch or max(1, min(int(batch_size or self.batch_size), self._memory_limit or 1 << 62))
        results: list[np.ndarray] = []
        feature_parts: list[np.ndarray] = []
        start = 0
        while start < len(inputs):
            chunk = inputs[start : start + size]
            try:
                outputs = self._forward_padded(chunk)
            except OutOfMemory as error:
                if size == 1 or self.static_batch:
                    raise CheckpointError(
                        f"{self.path}: out of memory on {self.device} with batch size {size} ({error})"
                    ) from None
                smaller = max(1, size // 2)
                logger.warning(
                    "%s: out of memory on %s with batch size %d; retrying with %d",
                    self.name,
                    self.device,
                    size,
                    smaller,
                )
                self._backend.release_memory()
                size = smaller
                self.batch_size = min(self.batch_size, smaller)
                self._memory_limit = smaller
                continue
            except CheckpointError:
                raise
            except Exception as error:
                raise CheckpointError(f"{self.path}: forward pass failed ({one_line(error)})") from None
            scores, features = self._select(outputs)
            problem = self._output_problem(scores, len(chunk))
            if problem is None and features is not None:
                problem = self._features_problem(features, len(chunk))
            if problem:
                text, conflict = problem
                raise (MetadataConflict if conflict else CheckpointError)(f"{self.path}: {text}")
            results.append(scores)
            if features is not None:
                feature_parts.append(features)
                self.features_width = features.shape[1]
            start += len(chunk)
        if not results:
            width = self.output_width or len(self.labels or ())
            empty_features = None
            if self._features_selector is not None:
                empty_features = np.zeros((0, self.features_width or 0), dtype=np.float32)
            return Prediction(np.zeros((0, width), dtype=np.float32), empty_features)
        scores = results[0] if len(results) == 1 else np.concatenate(results)
        self._check_width(scores.shape[1], where="its outputs")
        self.output_width = scores.shape[1]
        features = None
        if feature_parts:
            features = feature_parts[0] if len(feature_parts) == 1 else np.concatenate(feature_parts)
        return Prediction(scores, features)

    def _forward_padded(self, chunk: np.ndarray, *, probe: bool = False) -> dict[str, np.ndarray]:
        """Run one chunk; a model exported with a fixed batch size gets a zero-padded chunk (outputs cut back).

        `probe`: the chunk's layout is untried: run it where a wrong shape raises (`Backend.run`).
        """
        static = self.static_batch
        if static is None or len(chunk) == static:
            return self._backend.run(chunk, self._selected, probe=probe)
        padded = np.zeros((static, *chunk.shape[1:]), dtype=chunk.dtype)
        padded[: len(chunk)] = chunk
        outputs = self._backend.run(padded, self._selected, probe=probe)
        # Batched outputs lose the padding rows; anything else (a constant, a per-model vector) stays as it is.
        return {
            name: value[: len(chunk)] if value.ndim and value.shape[0] == static else value
            for name, value in outputs.items()
        }

    def _output_problem(self, outputs: np.ndarray, count: int, *, check_width: bool = True) -> tuple[str, bool] | None:
        """Why scores for `count` records are unusable, and whether that is a conflict (no records would do), or None.

        A shape that is no (batch, Z), a non-floating type, or a width other than the labels' rule the model or
        its metadata out; NaN or infinite scores may be these records' (a zero record's) doing.
        """
        if outputs.ndim != 2 or outputs.shape[0] != count:
            return f"output shape {tuple(outputs.shape)} for a batch of {count}; melep needs (batch, Z) scores", True
        if not np.issubdtype(outputs.dtype, np.floating):
            return f"outputs of type {outputs.dtype}; melep needs floating-point scores", True
        expected = self._expected_width()
        if check_width and expected is not None and outputs.shape[1] != expected:
            return self._width_message(outputs.shape[1]), True
        finite = np.isfinite(outputs).all(axis=1)
        if not finite.all():
            return f"NaN or infinite outputs for {int((~finite).sum())} of {count} records", False
        return None

    def _expected_width(self) -> int | None:
        """Z the scores must have: the metadata's label count, else the width seen so far, else None."""
        return len(self.metadata.labels) if self.metadata.labels is not None else self.output_width

    def _features_problem(self, features: np.ndarray, count: int) -> tuple[str, bool] | None:
        """Why the features output for `count` records is unusable, and whether that is a conflict, or None."""
        name = self._features_name
        if features.ndim != 2 or features.shape[0] != count:
            return (
                f"features output {name!r} has shape {tuple(features.shape)} for a batch of {count}; "
                "melep needs (batch, D) features"
            ), True
        if not np.issubdtype(features.dtype, np.floating):
            return f"features output {name!r} is of type {features.dtype}; melep needs floating-point features", True
        if self.features_width is not None and features.shape[1] != self.features_width:
            width = features.shape[1]
            return f"features output {name!r} gives {width} values per record, earlier {self.features_width}", True
        finite = np.isfinite(features).all(axis=1)
        if not finite.all():
            return f"NaN or infinite features in output {name!r} for {int((~finite).sum())} of {count} records", False
        return None

    def _width_message(self, width: int) -> str:
        if self.metadata.labels is not None:
            return f"outputs {width} scores per record but its metadata names {len(self.metadata.labels)} labels"
        return f"outputs {width} scores per record, earlier {self.output_width}"

    def _check_width(self, width: int | None, *, where: str) -> None:
        labels = self.metadata.labels
        if width is not None and labels is not None and width != len(labels):
            raise MetadataConflict(f"{self.path}: {self._width_message(width)} ({where})")

    def __repr__(self) -> str:
        return f"Checkpoint(name={self.name!r}, format={self.format!r}, device={self.device!r}, path='{self.path}')"
