"""Which device runs a checkpoint: `device` auto|cpu|cuda|cuda:N, with `strict_device` for no fallback.

torch and onnxruntime are imported here only when a checkpoint of theirs is loaded, so commands
that need neither (`melep score`) start fast.
"""

from __future__ import annotations

import logging
import re

from melep_cli.errors import DeviceUnavailableError, UsageError

logger = logging.getLogger("melep")

DEVICE_HELP = "auto (CUDA when available, else CPU), cpu, cuda or cuda:N"
_DEVICE_PATTERN = re.compile(r"^(auto|cpu|cuda(?::\d+)?)$")
_warned: set[str] = set()


def parse_device(device: str) -> str:
    """The normalised device request, or a UsageError."""
    normalised = device.strip().lower()
    if not _DEVICE_PATTERN.match(normalised):
        raise UsageError(f"expected {DEVICE_HELP}, got {device!r}", parameter="device")
    return normalised


def cuda_index(device: str) -> int:
    """N of 'cuda:N' (0 for plain 'cuda' or 'auto')."""
    return int(device.split(":", 1)[1]) if ":" in device else 0


def fall_back_to_cpu(device: str, reason: str, *, strict: bool, where: str) -> str:
    """'cpu' after a one-time warning, or a DeviceUnavailableError with strict (strict_device)."""
    if strict:
        raise DeviceUnavailableError(where, f"device {device} with strict_device, but {reason}")
    message = f"device {device}: {reason}; running on the CPU"
    if message not in _warned:
        _warned.add(message)
        logger.warning(message)
    return "cpu"


def torch_device(device: str, *, strict: bool, where: str) -> str:
    """'cpu' or 'cuda:N' for a TorchScript checkpoint."""
    import torch

    device = parse_device(device)
    if device == "cpu":
        return "cpu"
    available = torch.cuda.is_available()
    if device == "auto":
        return "cuda:0" if available else "cpu"
    if not available:
        return fall_back_to_cpu(device, "torch finds no CUDA device", strict=strict, where=where)
    index = cuda_index(device)
    if index >= torch.cuda.device_count():
        return fall_back_to_cpu(
            device, f"torch sees only {torch.cuda.device_count()} CUDA device(s)", strict=strict, where=where
        )
    return f"cuda:{index}"


def onnx_providers(device: str, *, strict: bool, where: str) -> tuple[list, str]:
    """(onnxruntime providers list, 'cpu' or 'cuda:N') for an ONNX checkpoint."""
    import onnxruntime

    device = parse_device(device)
    cpu = ["CPUExecutionProvider"]
    if device == "cpu":
        return cpu, "cpu"
    available = "CUDAExecutionProvider" in onnxruntime.get_available_providers()
    if not available:
        if device == "auto":
            return cpu, "cpu"
        reason = "onnxruntime has no CUDAExecutionProvider (install onnxruntime-gpu)"
        return cpu, fall_back_to_cpu(device, reason, strict=strict, where=where)
    index = cuda_index(device)
    return [("CUDAExecutionProvider", {"device_id": index}), *cpu], f"cuda:{index}"


#: Arithmetic of the forward pass: float32 (exact, the default) or a 16-bit float for speed.
PRECISIONS = ("float32", "bfloat16", "float16")


def parse_precision(precision: str) -> str:
    """The precision request in canonical form, or a UsageError."""
    normalised = precision.strip().lower()
    if normalised not in PRECISIONS:
        raise UsageError(f"expected one of {', '.join(PRECISIONS)}, got {precision!r}", parameter="precision")
    return normalised


def cpu_has_bfloat16() -> bool:
    """True when this CPU has bfloat16 instructions (AVX512-BF16 or AMX), which make bfloat16 faster than float32.

    Without them oneDNN emulates bfloat16, slower than float32: asking for it would only lose precision.
    """
    import torch

    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in checks)


def torch_precision(precision: str, device: str) -> str:
    """The precision a TorchScript model really runs in on `device` ('cpu' or 'cuda:N'): `precision`,
    or float32 after a one-time warning when the device has no fast arithmetic of that kind."""
    import torch

    precision = parse_precision(precision)
    if precision == "float32":
        return precision
    if device == "cpu":
        if precision == "float16":
            reason = "float16 needs CUDA"
        elif not cpu_has_bfloat16():
            reason = "this CPU has no bfloat16 instructions (AVX512-BF16 or AMX), so bfloat16 would be slower"
        else:
            return precision
    elif precision == "bfloat16" and not torch.cuda.is_bf16_supported():
        reason = f"{device} has no bfloat16 arithmetic"
    else:
        return precision
    _warn_once(f"precision {precision}: {reason}; TorchScript checkpoints on {device} run in float32")
    return "float32"


def onnx_precision(precision: str) -> str:
    """ONNX checkpoints always run in float32 (their graph fixes the arithmetic); a warning if asked otherwise."""
    precision = parse_precision(precision)
    if precision != "float32":
        _warn_once(f"precision {precision} applies to TorchScript checkpoints; ONNX checkpoints run as exported")
    return "float32"


def _warn_once(message: str) -> None:
    if message not in _warned:
        _warned.add(message)
        logger.warning(message)
