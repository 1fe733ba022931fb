"""Which device runs a checkpoint: `--device auto|cpu|cuda|cuda:N`, with `--strict-device` for no fallback.

torch and onnxruntime are imported here only when a checkpoint of theirs is loaded, so commands
that need neither (`melep score`) start fast.
"""

from __future__ import annotations

import logging
import re

from melep_cli.errors import CheckpointError, UsageError

logger = logging.getLogger("melep")

DEVICE_HELP = "auto (CUDA when available, else CPU), cpu, cuda or cuda:N"
_DEVICE_PATTERN = re.compile(r"^(auto|cpu|cuda(?::\d+)?)$")
_warned: set[str] = set()


def parse_device(device: str) -> str:
    """The normalised device request, or a UsageError."""
    normalised = device.strip().lower()
    if not _DEVICE_PATTERN.match(normalised):
        raise UsageError(f"--device: expected {DEVICE_HELP}, got {device!r}")
    return normalised


def cuda_index(device: str) -> int:
    """N of 'cuda:N' (0 for plain 'cuda' or 'auto')."""
    return int(device.split(":", 1)[1]) if ":" in device else 0


def fall_back_to_cpu(device: str, reason: str, *, strict: bool, where: str) -> str:
    """'cpu' after a one-time warning, or a CheckpointError with --strict-device."""
    if strict:
        raise CheckpointError(f"{where}: --device {device} with --strict-device, but {reason}")
    message = f"--device {device}: {reason}; running on the CPU"
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
