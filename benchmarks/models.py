"""The two source models of the MELEP paper, rebuilt from its description, for benchmarks.

Nguyen, Duong & Do (2024) pre-train a 1-D ResNet-101 and a Bi-LSTM on 12-lead ECGs at 100 Hz,
10 s long (12 x 1000 samples, NCT). Neither set of weights is public, so these have random
weights: fine for timing a forward pass, meaningless as transfer sources.

- `resnet101_1d`: bottleneck blocks [3, 4, 23, 3], expansion 4, Conv1d / BatchNorm1d / ReLU,
  widths 64..512 as in the 2-D ResNet-101, kernel 3 in the bottlenecks and 15 in the stem: about
  3 GFLOP per record (`flops_per_record` counts them with torch's FlopCounterMode).
- `bilstm`: one bidirectional LSTM layer, hidden size 100, over the 1000 time steps of 12 leads;
  the (1000 x 200) outputs are flattened into one linear layer.

`export_checkpoint` writes a model as TorchScript (`.ts`, metadata in the extra file `melep.json`)
and ONNX (`.onnx`, metadata in `metadata_props["melep"]`), the FORMATS.md conventions.

    python benchmarks/models.py /tmp/checkpoints    # both paper models as checkpoints, with their FLOPs
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

LEADS = ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")
SAMPLING_RATE = 100
SAMPLES = 1000
DEFAULT_OUTPUTS = 71  # PTB-XL's 71 SCP statements, the paper's source label set


class Bottleneck1d(nn.Module):
    """1x1 reduce, k-wide conv, 1x1 expand (x4), each with BatchNorm; identity or projected shortcut."""

    expansion = 4

    def __init__(self, in_channels: int, planes: int, stride: int = 1, kernel_size: int = 3) -> None:
        super().__init__()
        out_channels = planes * self.expansion
        self.conv1 = nn.Conv1d(in_channels, planes, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm1d(planes)
        self.conv2 = nn.Conv1d(planes, planes, kernel_size, stride=stride, padding=kernel_size // 2, bias=False)
        self.bn2 = nn.BatchNorm1d(planes)
        self.conv3 = nn.Conv1d(planes, out_channels, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm1d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv1d(in_channels, out_channels, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm1d(out_channels),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + self.shortcut(x))


class ResNet1d(nn.Module):
    """ResNet with Bottleneck1d blocks on (batch, leads, time) input; Z logits out."""

    def __init__(self, blocks: tuple[int, ...], num_outputs: int, width: int = 64, kernel_size: int = 3) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv1d(len(LEADS), width, 15, stride=2, padding=7, bias=False),
            nn.BatchNorm1d(width),
            nn.ReLU(inplace=True),
            nn.MaxPool1d(kernel_size=3, stride=2, padding=1),
        )
        layers: list[nn.Module] = []
        channels = width
        for stage, count in enumerate(blocks):
            planes = width * 2**stage
            for index in range(count):
                stride = 2 if stage > 0 and index == 0 else 1
                layers.append(Bottleneck1d(channels, planes, stride=stride, kernel_size=kernel_size))
                channels = planes * Bottleneck1d.expansion
        self.layers = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool1d(1)
        self.head = nn.Linear(channels, num_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layers(self.stem(x))
        return self.head(torch.flatten(self.pool(x), 1))


class BiLSTM(nn.Module):
    """Bidirectional LSTM over time of (batch, leads, time) input; all outputs flattened into a linear layer."""

    def __init__(self, num_outputs: int, hidden_size: int = 100) -> None:
        super().__init__()
        self.lstm = nn.LSTM(len(LEADS), hidden_size, batch_first=True, bidirectional=True)
        self.head = nn.Linear(SAMPLES * 2 * hidden_size, num_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        sequence, _ = self.lstm(x.transpose(1, 2))
        return self.head(torch.flatten(sequence, 1))


#: The paper's models by name: the 1-D ResNet-101 and the Bi-LSTM (hidden 100).
MODELS = {"resnet101": lambda outputs: ResNet1d((3, 4, 23, 3), outputs), "bilstm": BiLSTM}


class SmallCnn(nn.Module):
    """A small 1-D CNN of any input length: two strided convolutions, global average pooling, a linear head.

    Not from the paper: cheap stand-ins for the many-checkpoint and memory benchmarks, where the
    forward pass must not hide the cost of decoding and preprocessing (~0.5 MFLOP per 500 samples).
    """

    def __init__(self, num_outputs: int, width: int = 16) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv1d(len(LEADS), width, kernel_size=7, stride=4, padding=3),
            nn.ReLU(),
            nn.Conv1d(width, width, kernel_size=7, stride=4, padding=3),
            nn.ReLU(),
            nn.AdaptiveAvgPool1d(1),
        )
        self.head = nn.Linear(width, num_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.flatten(self.features(x), 1))


def small_cnn(num_outputs: int, *, seed: int = 0) -> SmallCnn:
    """A SmallCnn with random weights (seeded), in eval mode."""
    torch.manual_seed(seed)
    return SmallCnn(num_outputs).eval()


def calibrate_batchnorm(model: nn.Module, signals: torch.Tensor) -> nn.Module:
    """Set BatchNorm running statistics from `signals`, so a random network's activations stay in range.

    Without it a random 101-layer network in eval mode (mean 0, variance 1 statistics) can blow
    its logits up to inf, which the metric rightly rejects.
    """
    norms = [module for module in model.modules() if isinstance(module, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return model
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # cumulative average over the calibration batch
    model.train()
    with torch.no_grad():
        model(signals)
    return model.eval()


def flops_per_record(model: nn.Module, samples: int = SAMPLES) -> int:
    """Floating-point operations of one record's forward pass (multiply-add = 2), by FlopCounterMode.

    FlopCounterMode counts matrix products and convolutions; the LSTM's recurrent products run
    inside one fused aten op it does not count, so they are added here from the LSTM's sizes.
    """
    from torch.utils.flop_counter import FlopCounterMode

    example = torch.zeros(1, len(LEADS), samples)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(example)
    total = counter.get_total_flops()
    for module in model.modules():
        if isinstance(module, nn.LSTM) and not _lstm_counted(counter):
            directions = 2 if module.bidirectional else 1
            gates = 4 * module.hidden_size
            per_step = 2 * gates * (module.input_size + module.hidden_size)
            total += directions * module.num_layers * samples * per_step
    return int(total)


def _lstm_counted(counter: Any) -> bool:
    counts = counter.get_flop_counts().get("Global", {})
    return any("lstm" in str(op).lower() for op in counts)


def checkpoint_metadata(kind: str, num_outputs: int) -> dict[str, Any]:
    """FORMATS.md metadata for a benchmark checkpoint."""
    return {
        "name": f"bench-{kind}",
        "description": f"MELEP paper's {kind} architecture, random weights, for benchmarks only",
        "labels": [f"source{index:02d}" for index in range(num_outputs)],
        "sampling_rate": SAMPLING_RATE,
        "samples": SAMPLES,
        "leads": list(LEADS),
        "layout": "NCT",
        "output": "logits",
        "normalization": "none",
        "dtype": "float32",
    }


def export_checkpoint(
    model: nn.Module, directory: Path, name: str, metadata: dict[str, Any], *, formats: tuple[str, ...] = ("ts", "onnx")
) -> dict[str, Path]:
    """Write `name.ts` (TorchScript, scripted) and/or `name.onnx` with the metadata embedded.

    The ONNX graph has a dynamic batch axis (input `signals`, output `logits`).
    """
    directory.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    text = json.dumps(metadata)
    example = torch.zeros(2, len(LEADS), metadata.get("samples", SAMPLES))
    written: dict[str, Path] = {}
    if "ts" in formats:
        path = directory / f"{name}.ts"
        scripted = torch.jit.script(model)
        torch.jit.save(scripted, str(path), _extra_files={"melep.json": text})
        written["ts"] = path
    if "onnx" in formats:
        import onnx

        path = directory / f"{name}.onnx"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                model,
                (example,),
                str(path),
                input_names=["signals"],
                output_names=["logits"],
                dynamic_axes={"signals": {0: "batch"}, "logits": {0: "batch"}},
                opset_version=17,
                dynamo=False,
            )
        proto = onnx.load(str(path))
        entry = proto.metadata_props.add()
        entry.key, entry.value = "melep", text
        onnx.save(proto, str(path))
        written["onnx"] = path
    return written


def build(kind: str, num_outputs: int = DEFAULT_OUTPUTS, calibration: torch.Tensor | None = None) -> nn.Module:
    """One paper model by name, random weights (seed 0), in eval mode, BatchNorm calibrated on `calibration`."""
    torch.manual_seed(0)
    model = MODELS[kind](num_outputs).eval()
    return model if calibration is None else calibrate_batchnorm(model, calibration)


if __name__ == "__main__":
    import sys

    import _common

    for name, files in _common.export_paper_models(tuple(MODELS), Path(sys.argv[1]), quick=False).items():
        print(f"{name}: {files['gflop_per_record']:.2f} GFLOP per record; wrote {files['ts']}, {files['onnx']}")
