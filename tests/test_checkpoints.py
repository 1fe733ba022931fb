"""Checkpoints: discovery, safe loading, metadata, layouts, checked batched forward passes, devices."""

from __future__ import annotations

import json
import pickle
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest

from melep_cli.checkpoints import (
    detect_format,
    discover_checkpoints,
    is_checkpoint_path,
    load_checkpoint,
    parse_device,
    unique_names,
)
from melep_cli.checkpoints import devices as devices_module
from melep_cli.errors import CheckpointError, InputError, UsageError
from melep_cli.preprocess import STANDARD_LEADS, prepare

torch = pytest.importorskip("torch")
onnxruntime = pytest.importorskip("onnxruntime")

CUDA_TORCH = torch.cuda.is_available()
CUDA_ONNX = "CUDAExecutionProvider" in onnxruntime.get_available_providers()


def scripted(module: torch.nn.Module, path: Path, extra: dict[str, str] | None = None) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.script(module), str(path), _extra_files=extra or {})
    return path


def write_sidecar(checkpoint: Path, document: object) -> Path:
    sidecar = checkpoint.with_suffix(".json")
    sidecar.write_text(json.dumps(document))
    return sidecar


def copy_to(source: Path, folder: Path, name: str | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return Path(shutil.copy(source, folder / (name or source.name)))


@pytest.fixture(scope="module")
def real_batch(ptbxl_dir, read_ptbxl):
    """Eight real PTB-XL records at 100 Hz: (8, 1000, 12) and their lead names."""
    records = [read_ptbxl(ecg_id, 100) for ecg_id in range(1, 9)]
    return np.stack([signals for signals, _ in records]), records[0][1]


# ----- discovery ---------------------------------------------------------------------------------
def test_discovery_of_a_directory_skips_sidecars_other_files_and_subdirectories(tmp_path, models):
    copy_to(models["conv"].onnx, tmp_path)
    copy_to(models["conv"].torchscript, tmp_path, "conv_ts.pth")
    (tmp_path / "conv.json").write_text("{}")
    (tmp_path / "notes.txt").write_text("hello")
    copy_to(models["lstm"].onnx, tmp_path / "deeper")
    found = discover_checkpoints([tmp_path])
    assert [path.name for path in found] == ["conv.onnx", "conv_ts.pth"]
    found = discover_checkpoints([tmp_path], recursive=True)
    assert sorted(path.name for path in found) == ["conv.onnx", "conv_ts.pth", "lstm.onnx"]


def test_discovery_takes_files_keeps_order_and_drops_repeats(tmp_path, models):
    onnx = copy_to(models["conv"].onnx, tmp_path)
    script = copy_to(models["lstm"].torchscript, tmp_path, "lstm.torchscript")
    assert discover_checkpoints([script, onnx, tmp_path / "." / "conv.onnx"]) == [script, onnx]


def test_discovery_errors_name_the_path(tmp_path, capsys):
    with pytest.raises(UsageError, match=r"missing\.onnx: no such file"):
        discover_checkpoints([tmp_path / "missing.onnx"])
    (tmp_path / "weights.bin").write_bytes(b"x")
    with pytest.raises(UsageError, match=r"weights\.bin: not a checkpoint file"):
        discover_checkpoints([tmp_path / "weights.bin"])
    with pytest.raises(UsageError, match=r"no checkpoints.* in it; pass recursive to search subdirectories$"):
        discover_checkpoints([tmp_path])
    # the CLI names the flag
    from melep_cli.cli import run

    assert run(["forward", "-c", str(tmp_path), "-t", str(tmp_path), "--cache", str(tmp_path / "c"), "-q"]) == 2
    assert "; pass --recursive to search subdirectories" in capsys.readouterr().err


def test_is_checkpoint_path(tmp_path, models):
    onnx = copy_to(models["conv"].onnx, tmp_path, "MODEL.ONNX")
    assert is_checkpoint_path(onnx)
    assert not is_checkpoint_path(write_sidecar(onnx, {}))
    assert not is_checkpoint_path(tmp_path)
    assert not is_checkpoint_path(tmp_path / "absent.pt")


def test_unique_names_widen_only_clashing_stems():
    paths = [Path("/m/a/model.onnx"), Path("/m/b/model.onnx"), Path("/m/a/model.pt"), Path("/m/a/other.pt")]
    assert unique_names(paths) == ["a/model", "b/model", "model.pt", "other"]
    assert unique_names([Path("/x/net.onnx"), Path("/y/net.onnx")]) == ["x/net", "y/net"]
    assert unique_names([Path("/x/net.onnx")]) == ["net"]


# ----- safe loading ------------------------------------------------------------------------------
class _CreatesAFile:
    """Unpickling this creates a file: the proof that something was unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


@pytest.mark.parametrize("saver", ["torch.save", "pickle"])
def test_a_malicious_pickle_is_refused_unread(tmp_path, saver):
    marker = tmp_path / "unpickled"
    path = tmp_path / "model.pt"
    if saver == "torch.save":
        torch.save(_CreatesAFile(marker), path)
    else:
        path.write_bytes(pickle.dumps(_CreatesAFile(marker)))
    with pytest.raises(CheckpointError, match=r"model\.pt: refused.*torch\.jit\.save"):
        load_checkpoint(path)
    assert not marker.exists()


def test_a_state_dict_is_refused_with_the_export_hint(tmp_path, models):
    path = tmp_path / "weights.pth"
    torch.save(models["conv"].module.state_dict(), path)
    with pytest.raises(CheckpointError) as raised:
        load_checkpoint(path)
    message = str(raised.value)
    assert "weights.pth" in message and "state_dict" in message
    assert "torch.jit.trace" in message and "torch.onnx.export" in message
    assert "\n" not in message


class PickledNet(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.head = torch.nn.Linear(12, 2)


def test_a_pickled_module_is_refused_naming_its_class(tmp_path):
    path = tmp_path / "whole.pt"
    torch.save(PickledNet(), path)
    with pytest.raises(CheckpointError, match=r"pickled object.*PickledNet"):
        load_checkpoint(path)


def test_format_comes_from_the_content(tmp_path, models):
    assert detect_format(models["conv"].torchscript) == "torchscript"
    assert detect_format(models["conv"].onnx) == "onnx"
    renamed = copy_to(models["conv"].torchscript, tmp_path, "conv.onnx")  # TorchScript under an .onnx name
    assert detect_format(renamed) == "torchscript"
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a model")
    with pytest.raises(CheckpointError, match=r"junk\.pt: not a TorchScript archive"):
        load_checkpoint(junk)
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"\x08\x07garbage")
    with pytest.raises(CheckpointError, match=r"broken\.onnx: not a loadable ONNX model"):
        load_checkpoint(broken)


# ----- the same weights in both formats ----------------------------------------------------------
@pytest.mark.parametrize("name", ["conv", "dense64", "lstm"])
def test_torchscript_and_onnx_exports_give_the_same_outputs_on_real_records(name, models, real_batch, eager):
    signals, leads = real_batch
    exported = models[name]
    outputs = {}
    for path in (exported.torchscript, exported.onnx):
        checkpoint = load_checkpoint(path, device="cpu", warn_defaults=False)
        spec = checkpoint.input_spec(sampling_rate=100, samples=1000)
        if checkpoint.needs_probe:
            assert checkpoint.format == "torchscript"
            checkpoint.probe_layout(prepare(signals[:1], 100, leads, spec))
            spec = checkpoint.input_spec(sampling_rate=100, samples=1000)
        assert spec.layout == exported.layout
        assert spec.dtype == exported.dtype
        inputs = prepare(signals, 100, leads, spec)
        outputs[checkpoint.format] = checkpoint.predict(inputs, batch_size=3)
        assert outputs[checkpoint.format].shape == (8, exported.labels)
        assert checkpoint.labels == tuple(f"out{index}" for index in range(exported.labels))
    reference = eager(exported, inputs)
    np.testing.assert_allclose(outputs["torchscript"], outputs["onnx"], atol=1e-4, rtol=0)
    np.testing.assert_allclose(outputs["onnx"], reference, atol=1e-4, rtol=0)


def test_onnx_input_shape_fixes_layout_dtype_and_static_length(models):
    checkpoint = load_checkpoint(models["conv_static"].onnx, device="cpu", warn_defaults=False)
    assert checkpoint.format == "onnx" and checkpoint.device == "cpu"
    assert checkpoint.layout == "NCT" and checkpoint.metadata.samples == 1000
    assert checkpoint.static_batch == 1 and checkpoint.output_width == 5
    notes = checkpoint.default_notes()
    assert "ONNX input shape" in notes["layout"] and "static length" in notes["samples"]
    spec = checkpoint.input_spec(sampling_rate=500, samples=5000)
    assert (spec.samples, spec.sampling_rate) == (1000, 500)


def test_a_fixed_batch_onnx_model_runs_any_batch_size(models, eager):
    rng = np.random.default_rng(0)
    inputs = rng.normal(size=(5, 12, 1000)).astype(np.float32)
    checkpoint = load_checkpoint(models["conv_static"].onnx, device="cpu", warn_defaults=False)
    np.testing.assert_allclose(checkpoint.predict(inputs, batch_size=64), eager(models["conv"], inputs), atol=1e-4)


def test_lstm_layout_comes_from_the_onnx_shape_and_from_probing_torchscript(models):
    onnx = load_checkpoint(models["lstm"].onnx, device="cpu", warn_defaults=False)
    assert onnx.layout == "NTC" and not onnx.needs_probe
    script = load_checkpoint(models["lstm"].torchscript, device="cpu", warn_defaults=False)
    assert script.needs_probe
    with pytest.raises(CheckpointError, match="layout unknown"):
        script.predict(np.zeros((1, 1000, 12), dtype=np.float32))
    script.probe_layout(np.zeros((1, 12, 200), dtype=np.float32))
    assert script.layout == "NTC" and script.output_width == 3
    assert "probed" in script.default_notes()["layout"]


def test_input_spec_converts_the_record_length_to_the_model_rate(tmp_path, models):
    path = copy_to(models["conv"].onnx, tmp_path)
    write_sidecar(path, {"sampling_rate": 500, "leads": list(STANDARD_LEADS[:12]), "normalization": "zscore"})
    checkpoint = load_checkpoint(path, device="cpu", warn_defaults=False)
    spec = checkpoint.input_spec(sampling_rate=100, samples=1000)
    assert (spec.sampling_rate, spec.samples, spec.normalization, spec.layout) == (500, 5000, "zscore", "NCT")


# ----- probing -----------------------------------------------------------------------------------
class _AnyLayout(torch.nn.Module):
    def forward(self, ecg: torch.Tensor) -> torch.Tensor:
        return ecg.mean(dim=2).mean(dim=1, keepdim=True).repeat(1, 2)


class _EightLeads(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv1d(8, 2, 3)

    def forward(self, ecg: torch.Tensor) -> torch.Tensor:
        return self.conv(ecg).mean(dim=2)


def test_probing_asks_for_metadata_when_both_layouts_run(tmp_path):
    checkpoint = load_checkpoint(scripted(_AnyLayout(), tmp_path / "any.pt"), device="cpu", warn_defaults=False)
    with pytest.raises(CheckpointError, match=r"any\.pt: runs in both layouts.*--layout"):
        checkpoint.probe_layout(np.ones((1, 12, 100), dtype=np.float32))


def test_probing_asks_for_metadata_when_no_layout_runs(tmp_path):
    checkpoint = load_checkpoint(scripted(_EightLeads(), tmp_path / "eight.pt"), device="cpu", warn_defaults=False)
    with pytest.raises(CheckpointError, match=r"eight\.pt: runs in neither layout.*8 channels"):
        checkpoint.probe_layout(np.ones((1, 12, 100), dtype=np.float32))


# ----- checked outputs ---------------------------------------------------------------------------
def test_wrong_output_width_fails_naming_the_checkpoint(tmp_path, models):
    onnx = copy_to(models["conv"].onnx, tmp_path)
    write_sidecar(onnx, {"labels": ["a", "b", "c"]})
    with pytest.raises(CheckpointError, match=r"conv\.onnx: outputs 5 scores per record but its metadata names 3"):
        load_checkpoint(onnx, device="cpu")
    script = copy_to(models["conv"].torchscript, tmp_path)
    write_sidecar(script, {"labels": ["a", "b", "c"], "layout": "NCT"})
    checkpoint = load_checkpoint(script, device="cpu")
    with pytest.raises(CheckpointError, match=r"conv\.pt: outputs 5 scores per record but its metadata names 3"):
        checkpoint.predict(np.zeros((2, 12, 100), dtype=np.float32))


class _NanForNegative(torch.nn.Module):
    def forward(self, ecg: torch.Tensor) -> torch.Tensor:
        scores = ecg.mean(dim=2)[:, :2]
        return torch.where(scores[:, :1] < 0, torch.full_like(scores, float("nan")), scores)


def test_nan_outputs_fail_naming_the_checkpoint(tmp_path):
    path = scripted(_NanForNegative(), tmp_path / "unstable.pt", {"melep.json": '{"layout": "NCT"}'})
    checkpoint = load_checkpoint(path, device="cpu", warn_defaults=False)
    inputs = np.ones((4, 12, 10), dtype=np.float32)
    assert checkpoint.predict(inputs).shape == (4, 2)
    inputs[1] = -1
    with pytest.raises(CheckpointError, match=r"unstable\.pt: NaN or infinite outputs for 1 of 4 records"):
        checkpoint.predict(inputs)


class _ScoresAndFeatures(torch.nn.Module):
    def forward(self, ecg: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = ecg.mean(dim=2)
        return features[:, :4], features


def test_a_tuple_output_uses_its_first_element(tmp_path):
    path = scripted(_ScoresAndFeatures(), tmp_path / "pair.pt", {"melep.json": '{"layout": "NCT"}'})
    checkpoint = load_checkpoint(path, device="cpu", warn_defaults=False)
    assert checkpoint.predict(np.ones((3, 12, 10), dtype=np.float32)).shape == (3, 4)
    assert (checkpoint.scores_output, checkpoint.features_output, checkpoint.output_names) == ("0", None, ("0", "1"))


def test_a_tuple_element_is_picked_by_scores_output_and_features_output(tmp_path):
    metadata = json.dumps({"layout": "NCT", "scores_output": 1, "features_output": "0"})
    path = scripted(_ScoresAndFeatures(), tmp_path / "pair.pt", {"melep.json": metadata})
    checkpoint = load_checkpoint(path, device="cpu", warn_defaults=False)
    inputs = np.random.default_rng(0).normal(size=(3, 12, 10)).astype(np.float32)
    prediction = checkpoint.predict_outputs(inputs)
    np.testing.assert_allclose(prediction.scores, inputs.mean(axis=2), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(prediction.features, inputs.mean(axis=2)[:, :4], rtol=1e-5, atol=1e-6)
    assert (checkpoint.scores_output, checkpoint.features_output, checkpoint.output_width) == ("1", "0", 12)


class _OutOfMemoryAbove4(torch.nn.Module):
    def forward(self, ecg: torch.Tensor) -> torch.Tensor:
        if ecg.shape[0] > 4:
            raise RuntimeError("CUDA out of memory. Tried to allocate 20.00 GiB")
        return ecg.mean(dim=2)[:, :3]


def test_out_of_memory_halves_the_batch_and_warns(tmp_path, melep_log):
    path = scripted(_OutOfMemoryAbove4(), tmp_path / "greedy.pt", {"melep.json": '{"layout": "NCT"}'})
    checkpoint = load_checkpoint(path, device="cpu", warn_defaults=False)
    inputs = np.arange(11 * 12 * 5, dtype=np.float32).reshape(11, 12, 5)
    outputs = checkpoint.predict(inputs, batch_size=16)
    np.testing.assert_allclose(outputs, inputs.mean(axis=2)[:, :3], rtol=1e-6)
    assert checkpoint.batch_size == 4
    messages = [record.getMessage() for record in melep_log.records]
    assert any("out of memory" in message and "retrying with 8" in message for message in messages)
    assert any("retrying with 4" in message for message in messages)


# ----- metadata ----------------------------------------------------------------------------------
def test_metadata_of_the_wrong_type_is_an_error_naming_the_key(tmp_path, models):
    path = copy_to(models["conv"].onnx, tmp_path)
    sidecar = write_sidecar(path, {"labels": ["a", "b", "c", "d", "e"], "samples": "5000"})
    with pytest.raises(CheckpointError, match=r"conv\.onnx: metadata key 'samples' must be a positive integer"):
        load_checkpoint(path, device="cpu")
    for document, key in [
        ({"sampling_rate": True}, "sampling_rate"),
        ({"leads": "I,II"}, "leads"),
        ({"layout": "TNC"}, "layout"),
        ({"output": "sigmoid"}, "output"),
        ({"labels": ["a", "a", "b", "c", "d"]}, "labels"),
        ({"source_prevalence": [0.5, 2]}, "source_prevalence"),
    ]:
        sidecar.write_text(json.dumps(document))
        with pytest.raises(CheckpointError, match=f"metadata key '{key}'"):
            load_checkpoint(path, device="cpu")
    sidecar.write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_checkpoint(path, device="cpu")


def test_unknown_metadata_keys_warn_and_defaults_are_listed(tmp_path, models, melep_log):
    path = copy_to(models["conv"].onnx, tmp_path)
    write_sidecar(path, {"labels": ["NORM", "MI", "STTC", "CD", "HYP"], "framework": "pytorch", "samples": None})
    checkpoint = load_checkpoint(path, device="cpu")
    messages = [record.getMessage() for record in melep_log.records]
    assert any("unknown metadata key 'framework'" in message for message in messages)
    defaults = next(message for message in messages if "assuming" in message)
    assert "sampling_rate=the target's rate" in defaults and "labels=" not in defaults
    assert checkpoint.labels == ("NORM", "MI", "STTC", "CD", "HYP")
    assert "samples" in checkpoint.metadata.defaulted  # JSON null counts as absent
    assert "labels" not in checkpoint.metadata.defaulted
    assert checkpoint.metadata.origin.startswith("sidecar")


def test_embedded_metadata_wins_over_the_sidecar(tmp_path, models, melep_log):
    path = scripted(
        _AnyLayout(), tmp_path / "both.pt", {"melep.json": json.dumps({"layout": "NTC", "labels": ["x", "y"]})}
    )
    write_sidecar(path, {"layout": "NCT"})
    checkpoint = load_checkpoint(path, device="cpu")
    assert checkpoint.layout == "NTC" and checkpoint.labels == ("x", "y")
    assert "melep.json" in checkpoint.metadata.origin
    assert any("sidecar" in record.getMessage() and "ignored" in record.getMessage() for record in melep_log.records)


def test_metadata_leads_must_fit_the_onnx_input(tmp_path, models):
    path = copy_to(models["conv"].onnx, tmp_path)
    write_sidecar(path, {"leads": ["I", "II"], "layout": "NCT"})
    with pytest.raises(CheckpointError, match=r"conv\.onnx: the ONNX input shape .* has 12 leads"):
        load_checkpoint(path, device="cpu")


# ----- devices -----------------------------------------------------------------------------------
def test_device_names_are_checked():
    assert parse_device(" CUDA:1 ") == "cuda:1"
    with pytest.raises(UsageError, match=r"^device: expected auto") as raised:
        parse_device("gpu")
    assert raised.value.parameter == "device"


@pytest.mark.skipif(CUDA_ONNX, reason="tests the fallback without onnxruntime's CUDA provider")
def test_onnx_cuda_request_without_cuda_falls_back_or_fails_strictly(models, melep_log, monkeypatch):
    monkeypatch.setattr(devices_module, "_warned", set())
    checkpoint = load_checkpoint(models["conv"].onnx, device="cuda", warn_defaults=False)
    assert checkpoint.device == "cpu" and checkpoint.provider == "CPUExecutionProvider"
    assert any("CUDAExecutionProvider" in record.getMessage() for record in melep_log.records)
    with pytest.raises(CheckpointError, match=r"conv\.onnx: device cuda with strict_device, but"):
        load_checkpoint(models["conv"].onnx, device="cuda", strict_device=True)
    assert load_checkpoint(models["conv"].onnx, device="auto", warn_defaults=False).device == "cpu"


@pytest.mark.skipif(CUDA_TORCH, reason="tests the fallback without a CUDA device")
def test_torchscript_cuda_request_without_cuda_falls_back_or_fails_strictly(models, melep_log, monkeypatch):
    monkeypatch.setattr(devices_module, "_warned", set())
    checkpoint = load_checkpoint(models["conv"].torchscript, device="cuda", warn_defaults=False)
    assert checkpoint.device == "cpu"
    assert any("no CUDA device" in record.getMessage() for record in melep_log.records)
    with pytest.raises(CheckpointError, match=r"conv\.pt: device cuda with strict_device, but"):
        load_checkpoint(models["conv"].torchscript, device="cuda", strict_device=True)


@pytest.mark.cuda
@pytest.mark.skipif(not CUDA_TORCH, reason="needs a CUDA GPU for torch")
def test_torchscript_on_cuda_matches_cpu(models):
    rng = np.random.default_rng(0)
    inputs = rng.normal(size=(6, 12, 1000)).astype(np.float32)
    cpu = load_checkpoint(models["conv"].torchscript, device="cpu", warn_defaults=False)
    gpu = load_checkpoint(models["conv"].torchscript, device="cuda", strict_device=True, warn_defaults=False)
    assert gpu.device == "cuda:0"
    for checkpoint in (cpu, gpu):
        checkpoint.probe_layout(inputs[:1])
    np.testing.assert_allclose(gpu.predict(inputs), cpu.predict(inputs), atol=1e-4)


@pytest.mark.cuda
@pytest.mark.skipif(not CUDA_ONNX, reason="needs onnxruntime's CUDAExecutionProvider")
def test_onnx_on_cuda_matches_cpu(models):
    rng = np.random.default_rng(0)
    inputs = rng.normal(size=(6, 12, 1000)).astype(np.float32)
    cpu = load_checkpoint(models["conv"].onnx, device="cpu", warn_defaults=False)
    gpu = load_checkpoint(models["conv"].onnx, device="cuda", strict_device=True, warn_defaults=False)
    assert gpu.device == "cuda:0" and gpu.provider == "CUDAExecutionProvider"
    np.testing.assert_allclose(gpu.predict(inputs), cpu.predict(inputs), atol=1e-4)


def test_probe_example_must_be_one_record(models):
    checkpoint = load_checkpoint(models["lstm"].torchscript, device="cpu", warn_defaults=False)
    with pytest.raises(InputError, match="one record"):
        checkpoint.probe_layout(np.zeros((2, 12, 100), dtype=np.float32))


def test_threads_help_says_what_the_threads_are_for(capsys, monkeypatch):
    """--threads sets the forward pass's CPU threads; one producer thread decodes and prepares, whatever it is."""
    from melep_cli.cli import run

    monkeypatch.setenv("COLUMNS", "400")  # one line per option
    assert run(["rank", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "CPU threads of each forward pass (torch and ONNX Runtime intra-op threads" in text
    assert "decoded and prepared on one producer thread" in text
    assert "at most 4" not in text and "preparing inputs ahead" not in text
