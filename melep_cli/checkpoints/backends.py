"""The two runtimes behind one tiny interface: `run(inputs) -> {output name: array}` for one batch.

Backends know nothing about metadata; `Checkpoint` picks the scores (and features) output from what
they return and checks it. An out-of-memory failure of either runtime becomes `OutOfMemory`, so the
caller can halve the batch and retry.
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from melep_cli.checkpoints.devices import (
    fall_back_to_cpu,
    onnx_precision,
    onnx_providers,
    torch_device,
    torch_precision,
)
from melep_cli.checkpoints.metadata import EXTRA_FILE, METADATA_KEY
from melep_cli.errors import CheckpointError, UsageError

logger = logging.getLogger("melep")

_OOM_MARKERS = (
    "out of memory",
    "failed to allocate",
    "bad_alloc",
    "bad allocation",
    "cudaerrormemoryallocation",
    "cuda_error_out_of_memory",
    "cudnn_status_alloc_failed",
    "cublas_status_alloc_failed",
)
_ONNX_DTYPES = {"tensor(float)": "float32", "tensor(double)": "float64"}
#: ONNX element types shown by `melep inspect` as numpy names (others as ONNX writes them).
_ONNX_OUTPUT_DTYPES = {
    **_ONNX_DTYPES,
    "tensor(float16)": "float16",
    "tensor(bfloat16)": "bfloat16",
    "tensor(int64)": "int64",
    "tensor(int32)": "int32",
    "tensor(int8)": "int8",
    "tensor(uint8)": "uint8",
    "tensor(bool)": "bool",
}
#: The name of a TorchScript result that is one tensor (tuple elements are "0", "1", ...; dict entries their keys).
TORCHSCRIPT_SINGLE_OUTPUT = "output"
#: What selects an output: its name, or its index in the model's order.
OutputSelector = str | int


class OutOfMemory(Exception):
    """The runtime could not allocate memory for this batch (a smaller one may fit)."""


def is_out_of_memory(error: BaseException) -> bool:
    """torch.cuda.OutOfMemoryError, MemoryError, or a runtime error whose message says so."""
    if isinstance(error, MemoryError) or type(error).__name__ == "OutOfMemoryError":
        return True
    message = str(error).lower()
    return any(marker in message for marker in _OOM_MARKERS)


def one_line(error: BaseException, limit: int = 300) -> str:
    """A runtime error as one line: the last informative line of TorchScript/ONNX Runtime messages."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    if not lines:
        return type(error).__name__
    informative = [line for line in lines if not line.startswith(("File ", "~", "^", "Traceback"))] or lines
    text = informative[-1]
    if len(informative) > 1 and informative[-2].endswith(":"):  # "Unknown type name 'io.open':" then "io.open"
        text = f"{informative[-2]} {text}"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def cpu_threads() -> int:
    """CPU cores this process may use (cgroup/affinity aware where the OS says)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS, Windows
        return max(1, os.cpu_count() or 1)


def check_threads(threads: int | None) -> int | None:
    """`threads` when it is None or a positive count, else a UsageError."""
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise UsageError(f"must be a positive integer, got {threads!r}", parameter="threads")
    return threads


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """torch's intra-op thread count set to `threads` for the block and put back after (None: left alone).

    torch's setting is process-wide; restoring it keeps `rank(threads=1)` from changing the caller's torch.
    Setting it costs microseconds, nothing beside a forward pass.
    """
    if threads is None:
        yield
        return
    import torch

    before = torch.get_num_threads()
    if before != threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


@dataclass(frozen=True)
class TensorInfo:
    """One model input or output: name, shape (ints, or None for dynamic axes), dtype.

    `tensor` is False for an output that is no tensor (an ONNX sequence or map, a TorchScript tuple
    inside the result): listed by `melep inspect`, never returned by `run`.
    """

    name: str
    shape: tuple[int | None, ...] | None  # None: unknown until it runs (TorchScript)
    dtype: str | None
    dynamic_names: tuple[str | None, ...] = ()  # ONNX symbolic axis names, for display
    tensor: bool = True


def resolve_output(selector: OutputSelector, names: Sequence[str]) -> str | None:
    """The output name `selector` picks from `names` (the model's order), or None when it picks none.

    A string is a name (a TorchScript tuple's elements are named "0", "1", ...); an integer is an index.
    """
    if isinstance(selector, int):
        return names[selector] if 0 <= selector < len(names) else None
    return selector if selector in names else None


@dataclass(frozen=True)
class LayoutHint:
    """What a model's first weighted layer says of its input: `layer` (Conv1d, Linear, ...) takes `channels`
    features on the axis of `layout` (NCT: axis 1, as Conv1d and BatchNorm1d; NTC: the last axis, as Linear
    and batch-first LSTM/GRU/RNN)."""

    layer: str
    channels: int
    layout: str


#: Layers whose weights tell the channels of their input: original_name -> (layout, weight, channel axis).
_TELLING_LAYERS = {
    "Conv1d": ("NCT", "weight", 1),
    "BatchNorm1d": ("NCT", "weight", 0),
    "Linear": ("NTC", "weight", 1),
    "LSTM": ("NTC", "weight_ih_l0", 1),
    "GRU": ("NTC", "weight_ih_l0", 1),
    "RNN": ("NTC", "weight_ih_l0", 1),
}


def first_layer_hint(module: Any) -> LayoutHint | None:
    """The LayoutHint of a TorchScript module's first weighted layer (in registration order), or None.

    None when the first submodule with weights of its own is none of _TELLING_LAYERS (it may come first in the
    forward pass and change the input), or when its shape is unclear: a recurrent layer whose batch_first is
    unknown (traced) or False. A Conv1d's channels are its weight's second axis times its groups (1 when a
    traced module does not keep it). Only a hint: `Checkpoint.probe_layout` still runs the layout it names.
    """
    try:
        for _, submodule in module.named_modules():
            own = dict(submodule.named_parameters(recurse=False))
            if not own:
                continue
            kind = str(getattr(submodule, "original_name", type(submodule).__name__))
            telling = _TELLING_LAYERS.get(kind)
            if telling is None:
                return None
            layout, weight_name, axis = telling
            weight = own.get(weight_name)
            if weight is None or weight.dim() <= axis:
                return None
            channels = int(weight.shape[axis])
            if kind == "Conv1d":
                channels *= int(getattr(submodule, "groups", 1))
            elif layout == "NTC" and kind != "Linear" and getattr(submodule, "batch_first", None) is not True:
                return None
            return LayoutHint(kind, channels, layout)
    except Exception as error:  # an unusual module tells nothing; the probe runs both layouts
        logger.debug("no layout hint from the first layer (%s)", one_line(error))
    return None


class Backend(Protocol):
    format: str
    device: str  # "cpu" | "cuda:N": what really runs it
    provider: str  # e.g. "CUDAExecutionProvider", "torch cuda:0"
    input: TensorInfo
    #: Every output in the model's order: ONNX as declared; TorchScript as the latest run returned (() before).
    outputs: tuple[TensorInfo, ...]
    embedded_metadata: str | bytes | None
    embedded_origin: str

    precision: str  # "float32" | "bfloat16" | "float16": what the forward pass really computes in
    #: What the first weighted layer says of the input (TorchScript), None when it tells nothing (and for ONNX).
    layout_hint: LayoutHint | None
    #: True while a module safe to probe with inputs of unknown layout is kept beside the optimised one.
    probing: bool

    def run(
        self, inputs: np.ndarray, selected: Sequence[OutputSelector] = (), *, probe: bool = False
    ) -> dict[str, np.ndarray]:
        """Every tensor output by name, in the model's order; `selected` outputs must be finite in 16 bits.

        `probe`: `inputs` may be in a layout the model does not take: run them where a wrong shape raises.
        """
        ...

    def release_probe_module(self) -> None:
        """The layout is known and ran: the module kept for probing is no longer needed."""
        ...

    def release_memory(self) -> None: ...


class OnnxBackend:
    """An onnxruntime session: all graph optimisations, threads from the machine (or `threads`), CUDA when asked.

    `share_cores`: other models run between this one's calls; idle ORT threads then sleep instead of spinning.
    """

    format = "onnx"
    #: ONNX declares its input shape instead; a wrong shape makes onnxruntime raise, so every run is safe to probe.
    layout_hint: LayoutHint | None = None
    probing = False

    def __init__(
        self,
        path: Path,
        *,
        device: str,
        strict_device: bool,
        threads: int | None = None,
        share_cores: bool = False,
        precision: str = "float32",
    ) -> None:
        import onnxruntime

        providers, self.device = onnx_providers(device, strict=strict_device, where=str(path))
        self.precision = onnx_precision(precision)
        self.threads = check_threads(threads)
        options = onnxruntime.SessionOptions()
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Sequential execution, one inter-op thread: ORT's parallel mode is slower here (benchmarks/README.md).
        options.intra_op_num_threads = threads or cpu_threads()
        options.inter_op_num_threads = 1
        if share_cores:
            # Other models run between this one's batches: ORT's idle threads spinning for work would take
            # their cores (two ONNX checkpoints in one rank ran 6 % faster without spinning; alone, no change).
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
            options.add_session_config_entry("session.inter_op.allow_spinning", "0")
        options.log_severity_level = 3  # errors only: ORT's own warnings would bypass melep's stderr format
        try:
            self.session = onnxruntime.InferenceSession(str(path), sess_options=options, providers=providers)
        except Exception as error:
            raise CheckpointError(f"{path}: not a loadable ONNX model ({one_line(error)})") from None
        active = self.session.get_providers()
        if self.device != "cpu" and "CUDAExecutionProvider" not in active:
            # The CUDA provider is installed but failed to start (missing CUDA/cuDNN libraries).
            self.device = fall_back_to_cpu(
                device, "onnxruntime could not start its CUDAExecutionProvider", strict=strict_device, where=str(path)
            )
        self.provider = active[0]
        inputs = self.session.get_inputs()
        if len(inputs) != 1:
            names = ", ".join(item.name for item in inputs)
            raise CheckpointError(f"{path}: the ONNX model takes {len(inputs)} inputs ({names}); melep feeds one ECG")
        declared = inputs[0]
        dtype = _ONNX_DTYPES.get(declared.type)
        if dtype is None:
            raise CheckpointError(
                f"{path}: ONNX input {declared.name!r} has type {declared.type}; melep feeds float32 or float64"
            )
        self.input = _onnx_tensor_info(declared, dtype)
        if self.input.shape is not None and len(self.input.shape) not in (2, 3):
            raise CheckpointError(
                f"{path}: ONNX input {declared.name!r} has shape {list(declared.shape)}; "
                "melep feeds (batch, leads, time), (batch, time, leads) or (batch, leads x time)"
            )
        self.outputs = tuple(
            _onnx_tensor_info(value, _ONNX_OUTPUT_DTYPES.get(value.type, value.type))
            for value in self.session.get_outputs()
        )
        self.embedded_metadata = self.session.get_modelmeta().custom_metadata_map.get(METADATA_KEY)
        self.embedded_origin = f"ONNX metadata_props[{METADATA_KEY!r}]"

    def run(
        self, inputs: np.ndarray, selected: Sequence[OutputSelector] = (), *, probe: bool = False
    ) -> dict[str, np.ndarray]:
        """Every tensor output by name (sequence and map outputs left out); `selected` is unused: always float32.

        `probe` changes nothing: onnxruntime checks the input shape against the graph and raises.
        """
        try:
            results = self.session.run(None, {self.input.name: inputs})
        except Exception as error:
            if is_out_of_memory(error):
                raise OutOfMemory(one_line(error)) from error
            raise
        return {info.name: value for info, value in zip(self.outputs, results) if isinstance(value, np.ndarray)}

    def release_probe_module(self) -> None:
        """Nothing is kept for probing."""

    def release_memory(self) -> None:
        """onnxruntime keeps its arena; nothing to hand back between retries."""


def _onnx_tensor_info(value: Any, dtype: str | None) -> TensorInfo:
    """An onnxruntime NodeArg as TensorInfo; symbolic axes are None with their names kept for display."""
    tensor = str(value.type).startswith("tensor(")
    shape = value.shape if tensor else None
    if shape is None:
        return TensorInfo(value.name, None, dtype, tensor=tensor)
    dims = tuple(dim if isinstance(dim, int) and dim > 0 else None for dim in shape)
    names = tuple(dim if isinstance(dim, str) else None for dim in shape)
    return TensorInfo(value.name, dims, dtype, names)


@contextlib.contextmanager
def quiet_torch_jit() -> Iterator[None]:
    """torch >= 2.9 flags torch.jit as deprecated; loading TorchScript is what melep is for, so hush it."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning, message=r".*torch\.jit.*")
        warnings.filterwarnings("ignore", category=UserWarning, message=r".*TorchScript.*")
        yield


class TorchScriptBackend:
    """A TorchScript module from `torch.jit.load(map_location=...)`, eval mode, frozen, inference mode.

    `threads`: torch intra-op threads while this model runs (None: torch's default, the physical cores).

    The unfrozen module is kept beside the frozen one until the layout is known and has run
    (`release_probe_module`): probes (`run(probe=True)`) run on it, because a frozen scripted conv given the
    wrong channel count can crash the process (SIGSEGV, torch 2.13) where the unfrozen module raises.
    """

    format = "torchscript"

    def __init__(
        self,
        path: Path,
        *,
        device: str,
        strict_device: bool,
        threads: int | None = None,
        precision: str = "float32",
    ) -> None:
        self.path = path
        self.device = torch_device(device, strict=strict_device, where=str(path))
        self.threads = check_threads(threads)
        self.provider = f"torch {self.device}"
        #: What the forward pass really computes in: float32, or bfloat16/float16 where the device is fast at it.
        self.precision = torch_precision(precision, self.device)
        module, self._probe_module, self.embedded_metadata = self._load(self.precision)
        self.embedded_origin = f"TorchScript extra file {EXTRA_FILE}"
        self.input = TensorInfo(_forward_argument(module), None, self.parameters_dtype)
        self.layout_hint = first_layer_hint(self._probe_module)
        #: What the result holds is only known when it runs: set by every run.
        self.outputs: tuple[TensorInfo, ...] = ()
        self.module = module
        self._float32_modules: tuple[Any, Any] | None = None  # (frozen, unfrozen), loaded only if 16 bits fail

    @property
    def probing(self) -> bool:
        """True while the unfrozen module is kept for probing."""
        return self._probe_module is not None

    def release_probe_module(self) -> None:
        """Let the unfrozen module go: the layout is known and ran, later runs are the frozen module's."""
        self._probe_module = None

    def _load(self, precision: str) -> tuple[Any, Any, str | None]:
        """The module loaded on the device, in eval mode, its weights in `precision`: frozen, and as loaded (for
        probing); and its metadata."""
        import torch

        extra_files = {EXTRA_FILE: ""}
        try:
            # Loading and freezing run torch ops too (constant folding): with the same thread limit, or two
            # ranks at once on 2 cores take 19 s instead of 0.3 s to load a ResNet-101 (benchmarks/README.md).
            with quiet_torch_jit(), torch_threads(self.threads):
                module = torch.jit.load(str(self.path), map_location=self.device, _extra_files=extra_files)
        except Exception as error:
            raise CheckpointError(f"{self.path}: not a loadable TorchScript archive ({one_line(error)})") from None
        module.eval()
        parameter_dtypes = [tensor.dtype for tensor in (*module.parameters(), *module.buffers())]
        floating = [dtype for dtype in parameter_dtypes if dtype.is_floating_point]
        # The parameters' type is the input type the model was traced with (float64 models reject float32).
        dtypes = {torch.float64: "float64", torch.float32: "float32"}
        self.parameters_dtype = dtypes.get(floating[0]) if floating else None
        if precision != "float32":
            # Weights converted before freezing, so the frozen constants are 16-bit: measured 1.9x faster than
            # float32 for the ResNet-101 on an AVX512-BF16 CPU, where autocast around the module gained nothing.
            module.to(getattr(torch, precision))
        with torch_threads(self.threads):
            # Freezing works on a clone sharing the weights: the module as loaded stays usable for probing.
            frozen = _freeze(module, self.path)
        return frozen, module, extra_files[EXTRA_FILE] or None

    def run(
        self, inputs: np.ndarray, selected: Sequence[OutputSelector] = (), *, probe: bool = False
    ) -> dict[str, np.ndarray]:
        """Every tensor output by name; a 16-bit run whose `selected` outputs are not finite is rerun in float32.

        `probe`: run on the unfrozen module while it is kept (`inputs` may be in a layout the model does not take).
        """
        try:
            return self._run(self._module(probe), self.precision, inputs, selected)
        except OutOfMemory:
            raise
        except Exception as error:
            if self.precision == "float32":
                raise
            failure = error
        # A 16-bit failure: does the model run in float32? Then 16 bits were the problem (a dtype fixed inside
        # the model, an overflow): switch for good. Else the input was (a layout probe's wrong layout, say).
        if self._float32_modules is None:
            frozen, unfrozen, _ = self._load("float32")
            self._float32_modules = (frozen, unfrozen)
        frozen, unfrozen = self._float32_modules
        outputs = self._run(unfrozen if probe and self.probing else frozen, "float32", inputs, selected)
        reason = one_line(failure, limit=160).split(". ")[0]  # oneDNN appends a debugging hint after its message
        logger.warning("%s: cannot run in %s (%s); running in float32", self.path, self.precision, reason)
        self.module, self.precision, self._float32_modules = frozen, "float32", None
        if self.probing:
            self._probe_module = unfrozen
        return outputs

    def _module(self, probe: bool) -> Any:
        """The module for one run: the unfrozen one for a probe while it is kept, else the frozen one."""
        return self._probe_module if probe and self._probe_module is not None else self.module

    def _run(
        self, module: Any, precision: str, inputs: np.ndarray, selected: Sequence[OutputSelector]
    ) -> dict[str, np.ndarray]:
        import torch

        try:
            # On the CPU the graph executor's profiling and optimisation passes buy nothing for a frozen
            # module (no CPU fuser) but make the first two calls slow: skip them (benchmarks/README.md).
            on_gpu = self.device != "cpu"
            with torch_threads(self.threads), torch.inference_mode(), torch.jit.optimized_execution(on_gpu):
                tensor = torch.from_numpy(inputs)
                if on_gpu:  # CUDA: page-locked host memory (torch caches it) makes the copy asynchronous
                    tensor = tensor.pin_memory().to(self.device, non_blocking=True)
                if precision != "float32":
                    tensor = tensor.to(getattr(torch, precision))
                elements = _named_elements(module(tensor))
                names = [name for name, _ in elements]
                if precision != "float32":
                    # Only the outputs melep uses must be finite: a 16-bit overflow in one it ignores is harmless.
                    values = dict(elements)
                    for name in {resolve_output(selector, names) for selector in selected} - {None}:
                        value = values[name]
                        floating = isinstance(value, torch.Tensor) and value.is_floating_point()
                        if floating and not torch.isfinite(value).all():
                            raise ArithmeticError(f"NaN or infinite output {name!r} in {precision}")
                outputs: dict[str, np.ndarray] = {}
                infos: list[TensorInfo] = []
                for name, value in elements:
                    if not isinstance(value, torch.Tensor):
                        infos.append(TensorInfo(name, None, type(value).__name__, tensor=False))
                        continue
                    if value.is_floating_point() and value.dtype not in (torch.float32, torch.float64):
                        value = value.float()  # numpy has no bfloat16; 16-bit results are float32 for the metric
                    array = value.detach().to("cpu").numpy()
                    outputs[name] = array
                    infos.append(TensorInfo(name, tuple(array.shape), str(array.dtype)))
                self.outputs = tuple(infos)
                return outputs
        except Exception as error:
            if is_out_of_memory(error):
                raise OutOfMemory(one_line(error)) from error
            raise

    def release_memory(self) -> None:
        import torch

        if self.device.startswith("cuda"):
            torch.cuda.empty_cache()


def _named_elements(result: Any) -> list[tuple[str, Any]]:
    """A TorchScript result as (name, value) pairs: one tensor is "output", a tuple's elements "0", "1", ...,
    a dict's entries their keys (as text)."""
    if isinstance(result, (tuple, list)):
        return [(str(index), value) for index, value in enumerate(result)]
    if isinstance(result, dict):
        return [(str(key), value) for key, value in result.items()]
    return [(TORCHSCRIPT_SINGLE_OUTPUT, result)]


def _forward_argument(module: Any) -> str:
    """The name of forward's first argument after self (what the exporter called the input)."""
    try:
        arguments = module.forward.schema.arguments
        return str(arguments[1].name) if len(arguments) > 1 else "input"
    except (AttributeError, RuntimeError):
        return "input"


def _freeze(module: Any, path: Path) -> Any:
    """torch.jit.freeze: parameters inlined as constants and attribute lookups removed, so each call does less.

    Some scripted modules cannot be frozen (interfaces, mutated attributes); they run as they are.
    """
    import torch

    try:
        with quiet_torch_jit():
            return torch.jit.freeze(module)
    except Exception as error:
        logger.debug("%s: torch.jit.freeze failed (%s); running the module unfrozen", path, one_line(error))
        return module
