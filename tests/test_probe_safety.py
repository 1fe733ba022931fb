"""Layout probing never hands a frozen TorchScript module an input it may crash on (issue 15, item 8).

On torch 2.13 a frozen scripted Conv1d was seen to die with SIGSEGV on the wrong channel count where the unfrozen
module raises a RuntimeError: one such checkpoint took `melep rank` down with every other checkpoint. Probing
now runs on the unfrozen module, and the first weighted layer's shape picks the layout without running the
wrong one when it can.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from conftest import _networks

from melep_cli.checkpoints import inspect_checkpoint, load_checkpoint
from melep_cli.checkpoints.checkpoint import MetadataConflict
from melep_cli.errors import CheckpointError

torch = pytest.importorskip("torch")

ROOT = Path(__file__).resolve().parents[1]
TARGET = ROOT / "sample_data" / "ptbxl_target.h5"
GOOD = ROOT / "sample_data" / "checkpoints" / "ptbxl_superclass_resnet1d.onnx"


class ScriptedConv(torch.nn.Module):
    """Conv1d over 12 leads, global average pooling, a linear head: (batch, 12, time) -> (batch, 5)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv1d(12, 8, kernel_size=7, padding=3)
        self.head = torch.nn.Linear(8, 5)

    def forward(self, ecg: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.conv(ecg)).mean(dim=2))


#: The batch-first LSTM of the shared fixtures: (batch, time, 12) -> (batch, 3).
BatchFirstLstm = _networks()[1]


def save_scripted(module: torch.nn.Module, path: Path, metadata: dict | None = None) -> Path:
    """torch.jit.script + torch.jit.save, optionally with melep.json; no metadata at all by default."""
    torch.manual_seed(0)
    extra = {"melep.json": json.dumps(metadata)} if metadata is not None else {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.script(module.eval()), str(path), _extra_files=extra)
    return path


def melep(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """`python -m melep_cli ARGS` in a fresh interpreter: a crash there is an exit status, not a lost test run."""
    environment = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "melep_cli", *args],
        cwd=cwd,
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
    )


class _Refuses:
    """Stands in for the frozen module: a probe that calls it fails the test instead of risking a crash."""

    def __call__(self, tensor: torch.Tensor) -> torch.Tensor:
        raise AssertionError(f"the frozen module was run on {tuple(tensor.shape)}")


class _Recording:
    """Wraps a module and records the shape of every input it is given."""

    def __init__(self, module: object) -> None:
        self.module = module
        self.shapes: list[tuple[int, ...]] = []

    def __call__(self, tensor: torch.Tensor) -> torch.Tensor:
        self.shapes.append(tuple(tensor.shape))
        return self.module(tensor)


# ----- end to end, in subprocesses ------------------------------------------------------------------
def test_a_scripted_conv_without_metadata_is_ranked_beside_a_good_checkpoint(tmp_path):
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    save_scripted(ScriptedConv(), folder / "scripted.pt")
    (folder / GOOD.name).write_bytes(GOOD.read_bytes())
    ranked = melep("rank", "-c", str(folder), "-t", str(TARGET), "--no-cache", "-f", "json", cwd=tmp_path)
    assert ranked.returncode == 0, (ranked.returncode, ranked.stderr[-2000:])
    results = {result["checkpoint"]: result for result in json.loads(ranked.stdout)["results"]}
    assert {name: result["status"] for name, result in results.items()} == {"scripted": "ok", GOOD.stem: "ok"}

    cache = tmp_path / "cache"
    forwarded = melep(
        "forward",
        "-c",
        str(folder / "scripted.pt"),
        "-t",
        str(TARGET),
        "--cache",
        str(cache),
        "-f",
        "json",
        cwd=tmp_path,
    )
    assert forwarded.returncode == 0, (forwarded.returncode, forwarded.stderr[-2000:])
    (result,) = json.loads(forwarded.stdout)["results"]
    assert [spec["layout"] for spec in result["input_specs"]] == ["NCT"]


@pytest.mark.parametrize("command", ["inspect", "annotate"])
def test_inspect_and_annotate_of_a_scripted_conv_without_metadata_never_crash(tmp_path, command):
    path = save_scripted(ScriptedConv(), tmp_path / "scripted.pt")
    args = (
        ["inspect", str(path), "-f", "json", "--device", "cpu"]
        if command == "inspect"
        else ["annotate", str(path), "--labels", "a,b,c,d,e"]
    )
    finished = melep(*args, cwd=tmp_path)
    assert finished.returncode == 0, (finished.returncode, finished.stderr[-2000:])
    if command == "inspect":
        described = json.loads(finished.stdout)
        assert described["metadata"]["layout"] == "NCT" and described["output"]["width"] == 5


# ----- the probe runs on the unfrozen module, and only in the layout the first layer takes ------------
def test_probing_never_runs_the_frozen_module(tmp_path):
    checkpoint = load_checkpoint(
        save_scripted(ScriptedConv(), tmp_path / "scripted.pt"), device="cpu", warn_defaults=False
    )
    backend = checkpoint._backend
    frozen = backend.module
    backend.module = _Refuses()
    checkpoint.probe_layout(np.zeros((1, 12, 300), dtype=np.float32))
    assert checkpoint.layout == "NCT" and checkpoint.output_width == 5
    backend.module = frozen  # forward passes after the probe run the frozen module
    assert checkpoint.predict(np.zeros((3, 12, 300), dtype=np.float32)).shape == (3, 5)


@pytest.mark.parametrize(
    ("module", "layout", "width"),
    [(ScriptedConv(), "NCT", 5), (BatchFirstLstm(), "NTC", 3)],
)
def test_the_first_layer_picks_the_layout_without_running_the_other(tmp_path, module, layout, width):
    checkpoint = load_checkpoint(save_scripted(module, tmp_path / "model.pt"), device="cpu", warn_defaults=False)
    backend = checkpoint._backend
    backend.module = _Refuses()
    recording = _Recording(backend._probe_module)
    backend._probe_module = recording
    checkpoint.probe_layout(np.zeros((1, 12, 300), dtype=np.float32))
    assert (checkpoint.layout, checkpoint.output_width) == (layout, width)
    assert recording.shapes == [(1, 12, 300) if layout == "NCT" else (1, 300, 12)]
    assert "first layer" in checkpoint.default_notes()["layout"]


def test_without_a_telling_first_layer_both_layouts_are_probed_unfrozen(tmp_path):
    class Transposing(torch.nn.Module):
        """Takes (batch, time, 12) and transposes before its conv: the conv's 12 channels do not mean NCT."""

        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv1d(12, 4, kernel_size=3)

        def forward(self, ecg: torch.Tensor) -> torch.Tensor:
            return self.conv(ecg.transpose(1, 2)).mean(dim=2)

    checkpoint = load_checkpoint(save_scripted(Transposing(), tmp_path / "t.pt"), device="cpu", warn_defaults=False)
    checkpoint._backend.module = _Refuses()
    checkpoint.probe_layout(np.zeros((1, 12, 300), dtype=np.float32))
    assert (checkpoint.layout, checkpoint.output_width) == ("NTC", 4)


def test_a_layout_from_metadata_is_tried_on_the_unfrozen_module_first(tmp_path):
    """Metadata layout NTC on a conv that takes NCT: the frozen module never sees the wrong channel count."""
    path = save_scripted(ScriptedConv(), tmp_path / "wrong.pt", {"layout": "NTC"})
    checkpoint = load_checkpoint(path, device="cpu", warn_defaults=False)
    checkpoint._backend.module = _Refuses()
    with pytest.raises(
        MetadataConflict, match=r"wrong\.pt: metadata layout NTC does not run.*but NCT does.*--layout NCT"
    ):
        checkpoint.predict(np.zeros((2, 300, 12), dtype=np.float32))


def test_the_unfrozen_module_is_let_go_after_the_first_forward_pass(tmp_path):
    path = save_scripted(ScriptedConv(), tmp_path / "good.pt", {"layout": "NCT"})
    checkpoint = load_checkpoint(path, device="cpu", warn_defaults=False)
    assert checkpoint._backend._probe_module is not None
    checkpoint.predict(np.zeros((2, 12, 300), dtype=np.float32))
    assert checkpoint._backend._probe_module is None


def test_a_first_layer_taking_other_channels_than_the_leads_is_named(tmp_path):
    class EightLeads(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv1d(8, 2, kernel_size=3)

        def forward(self, ecg: torch.Tensor) -> torch.Tensor:
            return self.conv(ecg).mean(dim=2)

    checkpoint = load_checkpoint(save_scripted(EightLeads(), tmp_path / "eight.pt"), device="cpu", warn_defaults=False)
    checkpoint._backend.module = _Refuses()
    with pytest.raises(
        CheckpointError, match=r"eight\.pt: .*first layer \(Conv1d\) takes 8 channels, not the default 12 leads"
    ):
        checkpoint.probe_layout(np.zeros((1, 12, 100), dtype=np.float32))
    assert inspect_checkpoint(tmp_path / "eight.pt", device="cpu")["metadata"]["layout"] is None
