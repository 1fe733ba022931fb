"""`--precision`: 16-bit forward passes where the device is fast at them, float32 everywhere else."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import melep_cli.checkpoints.devices as devices_module
from melep_cli.checkpoints import load_checkpoint
from melep_cli.checkpoints.backends import quiet_torch_jit
from melep_cli.cli import run
from melep_cli.errors import UsageError
from melep_cli.ranking import rank

SAMPLE = Path(__file__).resolve().parents[1] / "sample_data"
TARGET = SAMPLE / "ptbxl_target.h5"
CHECKPOINTS = SAMPLE / "checkpoints"
RESNET_TS = CHECKPOINTS / "ptbxl_form_resnet1d.pt"
RESNET_ONNX = CHECKPOINTS / "ptbxl_superclass_resnet1d.onnx"


@pytest.fixture
def bf16_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pretend the CPU has bfloat16 instructions (torch emulates them where it has not: slower, same numbers)."""
    monkeypatch.setattr(devices_module, "cpu_has_bfloat16", lambda: True)
    monkeypatch.setattr(devices_module, "_warned", set())


def test_bfloat16_ranks_a_torchscript_resnet_close_to_float32(bf16_cpu: None) -> None:
    exact = rank([RESNET_TS], TARGET, device="cpu")
    fast = rank([RESNET_TS], TARGET, device="cpu", precision="bfloat16")
    [exact_outcome], [fast_outcome] = exact.outcomes, fast.outcomes
    assert exact_outcome.precision == "float32"
    assert fast_outcome.status == "ok" and fast_outcome.precision == "bfloat16"
    # bfloat16 keeps ~3 significant digits of each logit; MELEP averages them away to far less than the
    # gaps between candidate models (0.003 to 0.05 on the sample checkpoints).
    assert fast_outcome.melep != exact_outcome.melep
    assert fast_outcome.melep == pytest.approx(exact_outcome.melep, abs=1e-3)


def test_bfloat16_outputs_track_float32_outputs(bf16_cpu: None) -> None:
    exact = load_checkpoint(RESNET_TS, device="cpu", warn_defaults=False)
    fast = load_checkpoint(RESNET_TS, device="cpu", warn_defaults=False, precision="bfloat16")
    assert fast.precision == "bfloat16"
    inputs = np.random.default_rng(0).normal(0, 0.3, (4, 12, 1000)).astype(np.float32)
    reference, approximate = exact.predict(inputs), fast.predict(inputs)
    assert approximate.dtype == np.float32 and approximate.shape == reference.shape
    assert np.abs(approximate - reference).max() <= 0.05 * np.abs(reference).max()


def test_onnx_checkpoints_stay_float32_with_one_warning(bf16_cpu: None, melep_log) -> None:
    exact = rank([RESNET_ONNX], TARGET, device="cpu")
    asked = rank([RESNET_ONNX], TARGET, device="cpu", precision="bfloat16")
    assert asked.outcomes[0].precision == "float32"
    assert asked.outcomes[0].melep == exact.outcomes[0].melep
    warnings = {record.getMessage() for record in melep_log.records if "precision" in record.getMessage()}
    assert warnings == {"precision bfloat16 applies to TorchScript checkpoints; ONNX checkpoints run as exported"}


def test_a_cpu_without_bfloat16_instructions_runs_float32(monkeypatch: pytest.MonkeyPatch, melep_log) -> None:
    monkeypatch.setattr(devices_module, "cpu_has_bfloat16", lambda: False)
    monkeypatch.setattr(devices_module, "_warned", set())
    checkpoint = load_checkpoint(RESNET_TS, device="cpu", warn_defaults=False, precision="bfloat16")
    assert checkpoint.precision == "float32"
    assert any("no bfloat16 instructions" in record.getMessage() for record in melep_log.records)


def test_float16_needs_cuda(monkeypatch: pytest.MonkeyPatch, melep_log) -> None:
    monkeypatch.setattr(devices_module, "_warned", set())
    checkpoint = load_checkpoint(RESNET_TS, device="cpu", warn_defaults=False, precision="float16")
    assert checkpoint.precision == "float32"
    assert any("float16 needs CUDA" in record.getMessage() for record in melep_log.records)


class _FixedFloat32(torch.nn.Module):
    """A model that builds a float32 tensor inside: it cannot run with 16-bit weights and inputs."""

    def __init__(self) -> None:
        super().__init__()
        self.head = torch.nn.Linear(12, 3)

    def forward(self, ecg: torch.Tensor) -> torch.Tensor:
        pooled = ecg.mean(dim=2)
        mix = torch.eye(12, dtype=torch.float32)
        return self.head(torch.mm(pooled, mix))


def test_a_model_that_fails_in_bfloat16_falls_back_to_float32(tmp_path: Path, bf16_cpu: None, melep_log) -> None:
    path = tmp_path / "fixed_float32.ts"
    torch.manual_seed(0)
    with quiet_torch_jit():
        torch.jit.save(torch.jit.script(_FixedFloat32().eval()), str(path))
    (tmp_path / "fixed_float32.ts.json").write_text(json.dumps({"layout": "NCT", "output": "logits"}))
    exact = rank([path], TARGET, device="cpu")
    fast = rank([path], TARGET, device="cpu", precision="bfloat16")
    assert fast.outcomes[0].status == "ok"
    assert fast.outcomes[0].precision == "float32"
    assert fast.outcomes[0].melep == exact.outcomes[0].melep
    messages = {record.getMessage() for record in melep_log.records}
    assert sum("cannot run in bfloat16" in message and "running in float32" in message for message in messages) == 1


def test_precision_shows_in_json_and_table(bf16_cpu: None, capsys: pytest.CaptureFixture[str]) -> None:
    common = ["rank", "-c", str(RESNET_TS), "-c", str(RESNET_ONNX), "-t", str(TARGET), "--device", "cpu"]
    assert run([*common, "--precision", "bfloat16", "--format", "json", "--quiet"]) == 0
    results = {entry["checkpoint"]: entry for entry in json.loads(capsys.readouterr().out)["results"]}
    assert results["ptbxl_form_resnet1d"]["precision"] == "bfloat16"
    assert results["ptbxl_superclass_resnet1d"]["precision"] == "float32"
    assert run([*common, "--precision", "bfloat16", "--quiet"]) == 0
    table = capsys.readouterr().out
    assert "torchscript bfloat16" in table
    assert "onnx bfloat16" not in table


def test_unknown_precision_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["rank", "-c", str(RESNET_TS), "-t", str(TARGET), "--precision", "int8"]) == 2
    assert "int8" in capsys.readouterr().err
    with pytest.raises(UsageError, match=r"^precision: expected one of"):
        rank([RESNET_TS], TARGET, precision="fp8")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("precision", ["float16", "bfloat16"])
def test_16_bit_precisions_run_on_cuda(precision: str) -> None:
    exact = rank([RESNET_TS], TARGET, device="cuda")
    fast = rank([RESNET_TS], TARGET, device="cuda", precision=precision)
    assert fast.outcomes[0].device.startswith("cuda") and fast.outcomes[0].precision == precision
    assert fast.outcomes[0].melep == pytest.approx(exact.outcomes[0].melep, abs=1e-3)
