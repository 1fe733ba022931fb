"""Checkpoints annotated for each published convention rank on the sample target with the scores an
independent preprocessing of the same records gives; windows aggregate the raw outputs; bad values are
one clear error naming the key in annotate, inspect and rank; a new filter is a new store entry."""

from __future__ import annotations

import json
import shutil
import warnings
from fractions import Fraction
from pathlib import Path

import h5py
import numpy as np
import pytest
from scipy.signal import butter, resample_poly, sosfiltfilt

import melep_cli
from melep_cli.cli import run

torch = pytest.importorskip("torch")

SAMPLE_TARGET = Path(__file__).resolve().parents[1] / "sample_data" / "ptbxl_target.h5"
LABELS = ["NORM", "MI", "STTC", "HYP", "CD"]
CODE_LEADS = ["DI", "DII", "DIII", "AVR", "AVL", "AVF", "V1", "V2", "V3", "V4", "V5", "V6"]


def _scaler() -> dict[str, list[float]]:
    """A per-lead StandardScaler fitted on records 200-299 of the sample target (the 'training set')."""
    with h5py.File(SAMPLE_TARGET) as handle:
        training = handle["signals"][200:].astype(np.float64)
    return {"mean": training.mean(axis=(0, 1)).tolist(), "std": training.std(axis=(0, 1)).tolist()}


#: The metadata of each published convention (as docs/checkpoints.md shows them), and the layout the model takes.
CONVENTIONS = {
    "ptbxl-benchmark": {
        "sampling_rate": 100,
        "samples": 250,
        "windows": {"stride": 125, "aggregate": "max"},
        "normalization": "scaler",  # filled with _scaler()
        "layout": "NCT",
    },
    "st-mem": {
        "sampling_rate": 250,
        "samples": 2250,
        "filter": {"highpass": 0.67, "lowpass": 40},
        "normalization": "zscore",
        "layout": "NCT",
    },
    "ecg-fm": {
        "sampling_rate": 500,
        "samples": 2500,
        "windows": {"stride": 2500, "aggregate": "mean"},
        "normalization": "zscore",
        "layout": "NCT",
    },
    "hubert-ecg": {"sampling_rate": 100, "samples": 500, "layout": "NT", "normalization": "minmax"},
    "ecgfounder": {"sampling_rate": 500, "samples": 5000, "normalization": "zscore-record", "layout": "NCT"},
    "code": {"sampling_rate": 400, "samples": 4096, "leads": CODE_LEADS, "scale": 10, "layout": "NTC"},
}


class _Net(torch.nn.Module):
    """Conv, ReLU, mean and max over time, linear: (batch, 12, T) in the layout `layout` -> (batch, 5) logits."""

    def __init__(self, layout: str) -> None:
        super().__init__()
        self.layout = layout
        self.conv = torch.nn.Conv1d(12, 8, kernel_size=7, padding=3)
        self.head = torch.nn.Linear(16, 5)

    def forward(self, ecg: torch.Tensor) -> torch.Tensor:
        if self.layout == "NTC":
            ecg = ecg.transpose(1, 2)
        elif self.layout == "NT":
            ecg = ecg.reshape(ecg.shape[0], 12, -1)
        hidden = torch.relu(self.conv(ecg))
        return self.head(torch.cat([hidden.mean(dim=2), hidden.amax(dim=2)], dim=1))


class _WindowMean(torch.nn.Module):
    """The input's mean amplitude and its negation (batch, 2), and each lead's mean as features (batch, 12)."""

    def forward(self, ecg: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean = ecg.mean(dim=(1, 2))
        return torch.stack([mean, -mean], dim=1), ecg.mean(dim=2)


def _save(module: torch.nn.Module, path: Path) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.script(module.eval()), str(path))
    return path


def _metadata(name: str) -> dict:
    document = {**CONVENTIONS[name], "labels": list("abcde"), "output": "logits"}
    if document.get("normalization") == "scaler":
        document["normalization"] = _scaler()
    return document


def _records() -> tuple[np.ndarray, np.ndarray]:
    """Every record of the sample target (300, 1000, 12) in float64 mV, and the LABELS columns (300, 5)."""
    with h5py.File(SAMPLE_TARGET) as handle:
        names = [str(item) for item in handle["labels"].attrs["label_names"]]
        labels = handle["labels"][:][:, [names.index(label) for label in LABELS]]
        return handle["signals"][:].astype(np.float64), labels


def _independent_inputs(records: np.ndarray, metadata: dict) -> tuple[np.ndarray, list[int]]:
    """The convention's preprocessing written out here: model inputs (one per window) and windows per record."""
    rate, samples = metadata["sampling_rate"], metadata["samples"]
    ratio = Fraction(rate, 100)
    x = resample_poly(records, ratio.numerator, ratio.denominator, axis=1) if rate != 100 else records
    if "filter" in metadata:
        band = metadata["filter"]
        sos = butter(4, [band["highpass"], band["lowpass"]], btype="bandpass", fs=rate, output="sos")
        x = sosfiltfilt(sos, x, axis=1)
    if "windows" in metadata:
        stride = metadata["windows"]["stride"]
        starts = list(range(0, x.shape[1] - samples + 1, stride))
        pieces = [x[:, start : start + samples] for start in starts]
        x = np.stack(pieces, axis=1).reshape(-1, samples, 12)
        counts = [len(starts)] * len(records)
    else:
        x = x[:, :samples]
        counts = [1] * len(records)
    kept = x.shape[1]
    x = x * metadata.get("scale", 1)
    normalization = metadata.get("normalization", "none")
    if isinstance(normalization, dict):
        x = (x - np.array(normalization["mean"])) / np.array(normalization["std"])
    elif normalization == "zscore":
        x = (x - x.mean(axis=1, keepdims=True)) / x.std(axis=1, keepdims=True)
    elif normalization == "zscore-record":
        x = (x - x.mean(axis=(1, 2), keepdims=True)) / x.std(axis=(1, 2), keepdims=True)
    elif normalization == "minmax":
        low, high = x.min(axis=1, keepdims=True), x.max(axis=1, keepdims=True)
        x = 2 * (x - low) / (high - low) - 1
    padded = np.zeros((len(x), samples, 12))
    padded[:, :kept] = x
    layout = metadata["layout"]
    if layout == "NCT":
        padded = padded.transpose(0, 2, 1)
    elif layout == "NT":
        padded = padded.transpose(0, 2, 1).reshape(len(x), 12 * samples)
    return np.ascontiguousarray(padded, dtype=np.float32), counts


def _aggregate(outputs: np.ndarray, counts: list[int], how: str) -> np.ndarray:
    rows, start = [], 0
    for count in counts:
        part = outputs[start : start + count]
        rows.append(part.max(axis=0) if how == "max" else part.mean(axis=0))
        start += count
    return np.stack(rows)


@pytest.mark.parametrize("name", list(CONVENTIONS))
def test_a_checkpoint_of_each_convention_ranks_as_an_independent_preprocessing_gives(name, tmp_path):
    torch.manual_seed(0)
    module = _Net(CONVENTIONS[name]["layout"])
    path = _save(module, tmp_path / f"{name}.pt")
    metadata = _metadata(name)
    melep_cli.annotate_checkpoint(path, metadata=metadata)

    report = melep_cli.rank(
        [path],
        SAMPLE_TARGET,
        cache=None,
        device="cpu",
        batch_size=150,  # fewer, larger forward passes: the scores do not depend on it
        target_options=melep_cli.TargetOptions(labels=LABELS),
        bootstrap=melep_cli.BootstrapSettings(resamples=0),
    )
    (outcome,) = report.outcomes
    assert outcome.status == "ok", outcome.error

    records, labels = _records()
    inputs, counts = _independent_inputs(records, metadata)
    with torch.inference_mode():
        outputs = module(torch.from_numpy(inputs)).numpy()
    if "windows" in metadata:
        outputs = _aggregate(outputs, counts, metadata["windows"]["aggregate"])
    expected = melep_cli.melep(outputs, labels, activation="logits").score
    assert outcome.melep == pytest.approx(expected, abs=1e-5, rel=1e-5)


@pytest.mark.parametrize("aggregate", ["mean", "max"])
def test_window_outputs_are_aggregated_per_record(aggregate, tmp_path):
    path = _save(_WindowMean(), tmp_path / "window_mean.pt")
    document = {"sampling_rate": 100, "samples": 250, "windows": {"stride": 100, "aggregate": aggregate}}
    labels = {"layout": "NCT", "labels": ["mean", "minus"], "scores_output": 0, "features_output": 1}
    melep_cli.annotate_checkpoint(path, metadata={**document, **labels})
    report = melep_cli.forward([path], SAMPLE_TARGET, cache=None, device="cpu", batch_size=7)
    (result,) = report.results
    assert result.status == "ok", result.error
    records, _ = _records()
    starts = range(0, 1000 - 250 + 1, 100)  # 0, 100, ..., 700: 8 windows
    means = np.stack([records[:, start : start + 250].mean(axis=(1, 2)) for start in starts], axis=1)
    reduce = means.max if aggregate == "max" else means.mean
    np.testing.assert_allclose(result.outputs[:, 0], reduce(axis=1), atol=1e-5)
    # the raw outputs are aggregated: max of the negation is minus the min, not minus the max
    other = (-means).max(axis=1) if aggregate == "max" else -means.mean(axis=1)
    np.testing.assert_allclose(result.outputs[:, 1], other, atol=1e-5)
    assert result.outputs.shape == (300, 2) and len(result.record_ids) == 300
    lead_means = np.stack([records[:, start : start + 250].mean(axis=1) for start in starts], axis=1)
    expected = lead_means.max(axis=1) if aggregate == "max" else lead_means.mean(axis=1)
    np.testing.assert_allclose(result.features, expected, atol=1e-5)  # features: (300, 12), aggregated alike


def test_annotate_options_write_every_new_key_and_inspect_lists_them(tmp_path, capsys):
    path = _save(_Net("NCT"), tmp_path / "options.pt")
    scaler = tmp_path / "scaler.json"
    scaler.write_text(json.dumps(_scaler()))
    arguments = ["annotate", str(path), "--sampling-rate", "100", "--samples", "250", "--layout", "NCT"]
    arguments += ["--windows-stride", "125", "--aggregate", "max", "--filter", "0.5,", "--filter-order", "2"]
    arguments += ["--scale", "1000", "--scaler", str(scaler), "--missing-leads", "zero", "-f", "json"]
    assert run(arguments) == 0
    written = json.loads(capsys.readouterr().out)["metadata"]
    assert written["windows"] == {"stride": 125, "aggregate": "max"}
    assert written["filter"] == {"highpass": 0.5, "order": 2}
    assert written["scale"] == 1000 and written["missing_leads"] == "zero"
    assert written["normalization"] == _scaler()
    assert run(["annotate", str(path), "--crop", "center", "--remove", "windows", "-q"]) == 0
    capsys.readouterr()
    assert run(["inspect", str(path), "--device", "cpu", "-f", "json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["metadata"]["crop"] == "center" and document["metadata"]["windows"] is None
    assert [step["what"] for step in document["preprocessing"]][2:5] == [
        "zero-phase Butterworth high-pass 0.5 Hz, order 2",
        "250 samples from the center",
        "zeros at the end, up to the length",
    ]


def test_an_onnx_model_with_a_flat_input_is_layout_nt(tmp_path):
    """A 2-axis ONNX input (batch, leads x time) is layout NT; its length gives samples; it ranks as TorchScript."""
    from conftest import export_onnx

    torch.manual_seed(1)
    module = _Net("NT").eval()
    onnx_path = export_onnx(module, torch.randn(2, 12 * 500), tmp_path / "flat.onnx", dynamic=False)
    script_path = _save(module, tmp_path / "flat.pt")
    metadata = {"sampling_rate": 100, "labels": list("abcde"), "normalization": "minmax"}
    melep_cli.annotate_checkpoint(onnx_path, metadata=metadata)
    melep_cli.annotate_checkpoint(script_path, metadata={**metadata, "samples": 500, "layout": "NT"})
    checkpoint = melep_cli.load_checkpoint(onnx_path, device="cpu", warn_defaults=False)
    assert (checkpoint.layout, checkpoint.metadata.samples) == ("NT", 500)
    report = melep_cli.forward([onnx_path, script_path], SAMPLE_TARGET, cache=None, device="cpu")
    flat, scripted = report.results
    assert flat.status == scripted.status == "ok", (flat.error, scripted.error)
    np.testing.assert_allclose(flat.outputs, scripted.outputs, atol=1e-4)
    with pytest.raises(melep_cli.CheckpointError, match="layout NCT"):
        melep_cli.annotate_checkpoint(onnx_path, layout="NCT")


def test_refiltering_a_checkpoint_is_a_store_miss(tmp_path):
    path = _save(_Net("NCT"), tmp_path / "filtered.pt")
    base = {"sampling_rate": 100, "samples": 1000, "layout": "NCT", "labels": list("abcde")}
    melep_cli.annotate_checkpoint(path, metadata={**base, "filter": {"highpass": 0.5, "lowpass": 40}})
    cache = tmp_path / "cache"
    first = melep_cli.forward([path], SAMPLE_TARGET, cache=cache, device="cpu").results[0]
    again = melep_cli.forward([path], SAMPLE_TARGET, cache=cache, device="cpu").results[0]
    assert not first.cached and again.cached
    melep_cli.annotate_checkpoint(path, filter={"highpass": 1.0, "lowpass": 40})
    refiltered = melep_cli.forward([path], SAMPLE_TARGET, cache=cache, device="cpu").results[0]
    assert not refiltered.cached
    assert np.abs(refiltered.outputs - first.outputs).max() > 1e-4
    assert refiltered.input_specs[0]["filter"] == [1.0, 40.0, 4]


def _one_error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip() and not line.startswith("melep: warning")]
    assert len(lines) == 1, stderr
    assert lines[0].startswith("melep: error: ")
    assert "Traceback" not in stderr
    return lines[0]


BAD_VALUES = [
    ({"windows": {"stride": 0}}, ["--windows-stride", "0"], "'windows'"),
    ({"normalization": {"mean": [0.0] * 11, "std": [1.0] * 11}}, None, "'normalization'"),
    ({"filter": {"highpass": 0.5, "lowpass": 50}}, ["--filter", "0.5,50"], "'filter'"),
    ({"crop": "middle"}, ["--crop", "middle"], "'crop'"),
]


@pytest.mark.parametrize(("bad", "options", "key"), BAD_VALUES)
def test_bad_values_are_one_error_naming_the_key_in_annotate_inspect_and_rank(bad, options, key, tmp_path, capsys):
    path = _save(_Net("NCT"), tmp_path / "model.pt")
    good = {"sampling_rate": 100, "samples": 250, "layout": "NCT", "labels": list("abcde")}
    before = path.read_bytes()

    # annotate: options, or a JSON object with the value
    document = tmp_path / "bad.json"
    document.write_text(json.dumps({**good, **bad}))
    arguments = ["annotate", str(path), *(options or ["--from-json", str(document)])]
    if options:
        arguments += ["--from-json", str(tmp_path / "good.json")]
        (tmp_path / "good.json").write_text(json.dumps(good))
    code = run(arguments)
    line = _one_error_line(capsys.readouterr().err)
    assert code != 0 and (key in line or key.strip("'") in line), line
    assert path.read_bytes() == before  # nothing written

    # inspect and rank: the same value in a sidecar
    shutil.copy(document, path.with_suffix(".json"))
    code = run(["inspect", str(path), "--device", "cpu"])
    line = _one_error_line(capsys.readouterr().err)
    assert code != 0 and key in line, line
    code = run(["rank", "-c", str(path), "-t", str(SAMPLE_TARGET), "--device", "cpu", "--labels", ",".join(LABELS)])
    captured = capsys.readouterr()
    assert code != 0
    assert key in captured.err and "Traceback" not in captured.err, captured.err


def test_lowpass_above_the_target_rate_nyquist_fails_in_rank_when_the_model_keeps_the_target_rate(tmp_path, capsys):
    """No sampling_rate: the filter meets the target's 100 Hz only in rank; one error naming the key."""
    path = _save(_Net("NCT"), tmp_path / "native.pt")
    melep_cli.annotate_checkpoint(path, samples=1000, layout="NCT", filter={"lowpass": 60})
    code = run(["rank", "-c", str(path), "-t", str(SAMPLE_TARGET), "--device", "cpu", "--labels", ",".join(LABELS)])
    err = capsys.readouterr().err
    assert code != 0
    assert "'filter' lowpass 60 Hz is at or above the Nyquist frequency 50 Hz" in err, err
    assert "Traceback" not in err


def test_inspect_shows_the_chain_in_order_and_how_code_leads_match_the_target(tmp_path, capsys):
    path = _save(_Net("NTC"), tmp_path / "code.pt")
    melep_cli.annotate_checkpoint(path, metadata=_metadata("code"))
    assert run(["inspect", str(path), str(SAMPLE_TARGET), "--device", "cpu", "--format", "json"]) == 0
    checkpoint, target = json.loads(capsys.readouterr().out)
    steps = [step["step"] for step in checkpoint["preprocessing"]]
    assert steps == ["leads", "resample", "crop", "pad", "scale", "normalize", "layout", "cast"]
    (lead_set,) = checkpoint["leads_in_targets"][0]["lead_sets"]
    assert [(entry["lead"], entry["target_lead"]) for entry in lead_set][:4] == [
        ("DI", "I"),
        ("DII", "II"),
        ("DIII", "III"),
        ("AVR", "aVR"),
    ]
    assert {entry["lead"]: entry["standard"] for entry in target["lead_matching"]}["aVF"] == "aVF"
    assert run(["inspect", str(path), str(SAMPLE_TARGET), "--device", "cpu"]) == 0
    table = capsys.readouterr().out
    assert "DI <- I" in table and "3. crop: 4096 samples from the start" in table


def test_the_documented_metadata_of_each_convention_is_the_one_ranked_here():
    """docs/checkpoints.md shows one JSON object per convention: the ones this file ranks (the scaler elided)."""
    text = (Path(__file__).resolve().parents[1] / "docs" / "checkpoints.md").read_text(encoding="utf-8")
    section = text[text.index("## Published conventions") :]
    section = section[: section.index("\n## ", 1)]
    blocks = [json.loads(block.split("```", 1)[0]) for block in section.split("```json\n")[1:]]
    assert len(blocks) == len(CONVENTIONS)
    for block, (name, expected) in zip(blocks, CONVENTIONS.items()):
        if expected.get("normalization") == "scaler":
            assert set(block["normalization"]) == {"mean", "std"}, name
            block["normalization"] = "scaler"
        assert block == expected, name
