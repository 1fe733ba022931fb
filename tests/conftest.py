"""Shared fixtures: real checkpoints exported once per session (TorchScript and ONNX), and the real data."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
PTBXL = SHARED_DATA / "ptbxl"


@pytest.fixture(autouse=True)
def _own_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test its own outputs store (subprocesses inherit it): never the user's ~/.cache, never another
    test's entries."""
    directory = tmp_path_factory.mktemp("cache")
    monkeypatch.setenv("MELEP_CACHE", str(directory))
    return directory


@pytest.fixture(scope="session")
def ptbxl_dir() -> Path:
    """../shared/data/ptbxl, or the test is skipped."""
    if not (PTBXL / "records500").is_dir():
        pytest.skip(f"real PTB-XL records not found at {PTBXL}")
    return PTBXL


@pytest.fixture(scope="session")
def read_ptbxl(ptbxl_dir):
    """read_ptbxl(ecg_id, rate) -> ((samples, leads) float32 millivolts, lead names) of a real PTB-XL record."""
    import wfdb

    def read(ecg_id: int, rate: int) -> tuple[np.ndarray, tuple[str, ...]]:
        folder, suffix = ("records100", "lr") if rate == 100 else ("records500", "hr")
        name = ptbxl_dir / folder / f"{(ecg_id // 1000) * 1000:05d}" / f"{ecg_id:05d}_{suffix}"
        record = wfdb.rdrecord(str(name))
        return record.p_signal.astype(np.float32), tuple(record.sig_name)

    return read


@dataclass(frozen=True)
class Exported:
    """One small network and where it was saved: the eager module is the reference for outputs."""

    module: object
    torchscript: Path
    onnx: Path
    layout: str
    labels: int
    dtype: str


def _networks():
    import torch

    class ConvNet(torch.nn.Module):
        """1-D conv, batch norm, global average pooling: (batch, 12 leads, time) -> (batch, 5)."""

        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv1d(12, 8, kernel_size=7, padding=3)
            self.norm = torch.nn.BatchNorm1d(8)
            self.head = torch.nn.Linear(8, 5)

        def forward(self, ecg: torch.Tensor) -> torch.Tensor:
            return self.head(torch.relu(self.norm(self.conv(ecg))).mean(dim=2))

    class LstmNet(torch.nn.Module):
        """LSTM over time: (batch, time, 12 leads) -> (batch, 3)."""

        def __init__(self) -> None:
            super().__init__()
            self.lstm = torch.nn.LSTM(12, 6, batch_first=True)
            self.head = torch.nn.Linear(6, 3)

        def forward(self, ecg: torch.Tensor) -> torch.Tensor:
            hidden, _ = self.lstm(ecg)
            return self.head(hidden[:, -1])

    class DenseNet(torch.nn.Module):
        """Per-lead mean and peak into a linear layer: float64 end to end, (batch, 12 leads, time) -> (batch, 5).

        (onnxruntime has no float64 Conv or LSTM on the CPU, so the float64 model is a dense one.)
        """

        def __init__(self) -> None:
            super().__init__()
            self.head = torch.nn.Linear(24, 5)

        def forward(self, ecg: torch.Tensor) -> torch.Tensor:
            return self.head(torch.cat([ecg.mean(dim=2), ecg.abs().amax(dim=2)], dim=1))

    return ConvNet, LstmNet, DenseNet


def export_torchscript(module, example, path: Path, *, script: bool = False) -> Path:
    """torch.jit.trace (or torch.jit.script) + torch.jit.save, as users export."""
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        compiled = torch.jit.script(module) if script else torch.jit.trace(module, example)
        torch.jit.save(compiled, str(path))
    return path


def export_onnx(module, example, path: Path, *, dynamic: bool = True) -> Path:
    import torch

    axes = {"ecg": {0: "batch", 1 if example.shape[1] != 12 else 2: "time"}, "scores": {0: "batch"}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(
                module,
                (example,),
                str(path),
                input_names=["ecg"],
                output_names=["scores"],
                dynamic_axes=axes if dynamic else None,
                dynamo=False,
            )
        except Exception:  # the legacy exporter is gone in some torch version: use the dynamo one
            torch.onnx.export(
                module,
                (example,),
                str(path),
                input_names=["ecg"],
                output_names=["scores"],
                dynamic_shapes=({0: torch.export.Dim("batch"), 2: torch.export.Dim("time")},) if dynamic else None,
                dynamo=True,
            )
    return path


@pytest.fixture(scope="session")
def models(tmp_path_factory) -> dict[str, Exported]:
    """conv (NCT, float32), dense64 (NCT, float64), lstm (NTC, float32): each saved to both formats once.

    The LSTM is scripted, not traced: a traced aten::lstm skips the input-size check and runs on
    either layout, so only its scripted form lets layout probing tell NCT from NTC.

    Also `conv_static`: the conv net's ONNX export with a fixed (1, 12, 1000) input.
    """
    import torch

    torch.set_num_threads(1)  # CI machines are small and shared; these models are tiny
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("models")
    conv_class, lstm_class, dense_class = _networks()
    built: dict[str, Exported] = {}
    for name, module, example, layout, labels, dtype in [
        ("conv", conv_class(), torch.randn(2, 12, 1000), "NCT", 5, "float32"),
        ("dense64", dense_class().double(), torch.randn(2, 12, 1000, dtype=torch.float64), "NCT", 5, "float64"),
        ("lstm", lstm_class(), torch.randn(2, 1000, 12), "NTC", 3, "float32"),
    ]:
        module.eval()
        if hasattr(module, "norm"):  # non-trivial batch-norm statistics, so freezing really folds something
            module.norm.running_mean.uniform_(-0.5, 0.5)
            module.norm.running_var.uniform_(0.5, 2.0)
        built[name] = Exported(
            module=module,
            torchscript=export_torchscript(module, example, folder / f"{name}.pt", script=name == "lstm"),
            onnx=export_onnx(module, example, folder / f"{name}.onnx"),
            layout=layout,
            labels=labels,
            dtype=dtype,
        )
    conv = built["conv"]
    static = export_onnx(conv.module, torch.randn(1, 12, 1000), folder / "conv_static.onnx", dynamic=False)
    built["conv_static"] = Exported(conv.module, conv.torchscript, static, "NCT", 5, "float32")
    return built


@pytest.fixture(scope="session")
def eager():
    """eager(exported, inputs) -> the original torch module's outputs: the reference for both formats."""
    import torch

    def run(exported: Exported, inputs: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return exported.module(torch.from_numpy(inputs)).numpy()

    return run


@pytest.fixture
def melep_log(caplog):
    """caplog that sees the `melep` logger even after the CLI made it stop propagating to the root."""
    import logging

    logger = logging.getLogger("melep")
    logger.addHandler(caplog.handler)
    previous = logger.level
    logger.setLevel(logging.INFO)
    yield caplog
    logger.removeHandler(caplog.handler)
    logger.setLevel(previous)
