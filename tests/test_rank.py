"""`melep rank` end to end on the real sample data and checkpoints shipped in sample_data/."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest

from melep_cli import melep
from melep_cli.checkpoints import DEFAULT_BATCH_SIZE, load_checkpoint
from melep_cli.cli import run
from melep_cli.preprocess import prepare
from melep_cli.ranking import rank
from melep_cli.targets import TargetOptions, convert, open_target

SAMPLE = Path(__file__).resolve().parents[1] / "sample_data"
TARGET = SAMPLE / "ptbxl_target.h5"
CHECKPOINTS = SAMPLE / "checkpoints"
CINC = SAMPLE / "cinc_wfdb"
TIMING_KEYS = {"seconds"}


def _rank_json(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict, str]:
    code = run(["rank", *args, "--format", "json"])
    captured = capsys.readouterr()
    return code, json.loads(captured.out), captured.err


@pytest.fixture(scope="module")
def ranked() -> dict:
    """One full run over every sample checkpoint (module-scoped: the forward passes are the slow part)."""
    from io import StringIO
    from unittest import mock

    out = StringIO()
    with mock.patch("sys.stdout", out):
        code = run(["rank", "-c", str(CHECKPOINTS), "-t", str(TARGET), "-f", "json", "--pairs", "-q"])
    return {"code": code, "document": json.loads(out.getvalue())}


def test_rank_exits_0_and_follows_the_json_schema(ranked: dict) -> None:
    assert ranked["code"] == 0
    document = ranked["document"]
    target = document["target"]
    assert target["path"] == str(TARGET)
    assert target["records"] >= 300
    assert len(target["labels"]) == len(target["prevalence"]) >= 5
    assert {"NORM", "MI", "STTC", "HYP", "CD"} <= set(target["labels"])
    assert document["weighting"] == "prevalence"
    results = document["results"]
    assert len(results) == len(list(CHECKPOINTS.iterdir())) >= 4
    assert {entry["format"] for entry in results} == {"onnx", "torchscript"}
    for position, entry in enumerate(results, start=1):
        assert entry["rank"] == position
        assert entry["status"] == "ok"
        assert set(entry) >= {"checkpoint", "path", "format", "melep", "per_label", "source_labels", "seconds"}
        assert Path(entry["path"]).exists()
        assert isinstance(entry["melep"], float) and np.isfinite(entry["melep"])
        assert list(entry["per_label"]) == target["labels"]
        assert all(value is not None for value in entry["per_label"].values())
        assert np.array(entry["phi"]).shape == (len(target["labels"]), len(entry["source_labels"]))
    scores = [entry["melep"] for entry in results]
    assert scores == sorted(scores)


def test_ranking_equals_the_core_metric_on_each_checkpoints_own_outputs(ranked: dict) -> None:
    """Recompute every score without rank: read the whole target, one forward pass, melep()."""
    with h5py.File(TARGET) as handle:
        signals = handle["signals"][()].astype(np.float32)
        rate = float(handle.attrs.get("sampling_rate", handle["signals"].attrs.get("sampling_rate")))
    target = open_target(TARGET)
    labels = target.labels
    leads = next(iter(target.batches(1))).leads
    for entry in ranked["document"]["results"]:
        checkpoint = load_checkpoint(entry["path"], device="cpu")
        spec = checkpoint.input_spec(sampling_rate=rate, samples=signals.shape[1])
        outputs = checkpoint.predict(prepare(signals, rate, leads, spec), batch_size=len(signals))
        expected = melep(outputs, labels, activation=checkpoint.activation, label_names=target.label_names)
        assert entry["melep"] == pytest.approx(expected.score, rel=1e-5), entry["checkpoint"]
        for name, value in zip(target.label_names, expected.per_label):
            assert entry["per_label"][name] == pytest.approx(value, rel=1e-5)


def test_a_superclass_model_ranks_first_on_superclass_labels(capsys: pytest.CaptureFixture[str]) -> None:
    """Plausibility on real data: models trained on the target's own label set transfer best."""
    code, document, _ = _rank_json(
        capsys, "-c", str(CHECKPOINTS), "-t", str(TARGET), "--labels", "NORM,MI,STTC,HYP,CD", "-q"
    )
    assert code == 0
    assert "superclass" in document["results"][0]["checkpoint"]
    assert document["target"]["labels"] == ["NORM", "MI", "STTC", "HYP", "CD"]


def test_a_corrupt_checkpoint_gets_an_error_row_and_the_rest_are_ranked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    candidates = tmp_path / "ckpts"
    candidates.mkdir()
    onnx_files = sorted(CHECKPOINTS.glob("*.onnx"))
    for path in onnx_files:
        shutil.copy(path, candidates / path.name)
    (candidates / "broken.onnx").write_bytes(onnx_files[0].read_bytes()[:2000])
    code, document, err = _rank_json(capsys, "-c", str(candidates), "-t", str(TARGET))
    assert code == 1
    results = document["results"]
    assert [entry["status"] for entry in results] == ["ok"] * len(onnx_files) + ["error"]
    broken = results[-1]
    assert broken["checkpoint"] == "broken" and broken["rank"] is None
    assert "broken.onnx" in broken["error"]
    assert "broken.onnx" in err and "Traceback" not in err


def test_wfdb_and_hdf5_forms_of_the_same_records_give_the_same_scores(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    converted = tmp_path / "cinc.h5"
    convert(CINC, converted, target_options=TargetOptions(min_positives=2))
    checkpoint = str(next(CHECKPOINTS.glob("*.onnx")))
    options = ["-c", checkpoint, "--min-positives", "2", "-q"]
    code_wfdb, from_wfdb, _ = _rank_json(capsys, *options, "-t", str(CINC))
    code_hdf5, from_hdf5, _ = _rank_json(capsys, *options, "-t", str(converted))
    assert code_wfdb == code_hdf5 == 0
    assert from_wfdb["target"]["labels"] == from_hdf5["target"]["labels"]
    assert from_wfdb["target"]["records"] == from_hdf5["target"]["records"] == len(list(CINC.glob("*.hea")))
    wfdb_entry, hdf5_entry = from_wfdb["results"][0], from_hdf5["results"][0]
    assert wfdb_entry["melep"] == pytest.approx(hdf5_entry["melep"], rel=1e-6)


def test_the_same_inputs_give_the_same_json_apart_from_timing(capsys: pytest.CaptureFixture[str]) -> None:
    options = [item for path in sorted(CHECKPOINTS.glob("*.onnx")) for item in ("-c", str(path))]
    options += ["-t", str(TARGET), "-q"]
    _, first, _ = _rank_json(capsys, *options, "--no-cache")
    _, second, _ = _rank_json(capsys, *options, "--batch-size", "37", "--no-cache")

    def without_timing(document: dict) -> dict:
        document = json.loads(json.dumps(document))
        for key in ("seconds", "created", "command"):  # when and how it ran, not what it found
            document.pop(key)
        for entry in document["results"]:
            for key in TIMING_KEYS:
                entry.pop(key)
        return document

    a, b = without_timing(first), without_timing(second)
    for entry_a, entry_b in zip(a["results"], b["results"]):
        assert entry_a.pop("melep") == pytest.approx(entry_b.pop("melep"), rel=1e-6)
        entry_a.pop("per_label"), entry_b.pop("per_label")
    assert a == b


def test_the_target_is_decoded_once_for_all_checkpoints(monkeypatch: pytest.MonkeyPatch) -> None:
    target = open_target(TARGET)
    calls = []
    original = target.batches

    def counting(batch_size: int):
        calls.append(batch_size)
        return original(batch_size)

    monkeypatch.setattr(target, "batches", counting)
    report = rank([CHECKPOINTS], target, device="cpu")
    assert len(report.ok) >= 4
    assert calls == [DEFAULT_BATCH_SIZE]  # one pass over the target, in batches of the CPU default


def test_csv_table_and_output_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    checkpoint = str(next(CHECKPOINTS.glob("*.onnx")))
    output = tmp_path / "out" / "rank.csv"
    output.parent.mkdir()
    code = run(["rank", "-c", checkpoint, "-t", str(TARGET), "-f", "csv", "--per-label", "-o", str(output), "-q"])
    assert code == 0
    assert capsys.readouterr().out == ""
    header, row = output.read_text().strip().splitlines()
    assert header.startswith("rank,checkpoint,path,format,status,melep")
    assert "per_label.NORM" in header
    assert row.startswith("1,")
    code = run(["rank", "-c", checkpoint, "-t", str(TARGET), "--per-label", "-q"])
    table = capsys.readouterr().out
    assert code == 0
    assert "MELEP ranking" in table and Path(checkpoint).stem in table and "Per target label" in table


def test_bad_target_and_usage_errors_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cases = [
        (["-c", str(CHECKPOINTS), "-t", str(tmp_path / "missing.h5")], "missing.h5"),
        (["-c", str(tmp_path / "nothing"), "-t", str(TARGET)], "nothing"),
        (["-c", str(CHECKPOINTS), "-t", str(TARGET), "--labels", "NOPE"], "NOPE"),
        (["-c", str(CHECKPOINTS), "-t", str(TARGET), "--pairs", "-f", "csv"], "--pairs"),
    ]
    for args, fragment in cases:
        code = run(["rank", *args])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2, args
        assert len(err) == 1 and err[0].startswith("melep: error: ") and fragment in err[0], err


def test_a_checkpoint_wanting_a_lead_the_target_lacks_fails_alone(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "checkpoints"
    shutil.copytree(CHECKPOINTS, folder)
    leads = "I,II,III,aVR,aVL,aVF,V1,V2,V3,V4,V5,V7"
    assert run(["annotate", str(folder / "ptbxl_superclass_resnet1d.onnx"), "--leads", leads, "-q"]) == 0
    capsys.readouterr()
    code, document, err = _rank_json(capsys, "-c", str(folder), "-t", str(TARGET))
    assert code == 1
    failed = [entry for entry in document["results"] if entry["status"] != "ok"]
    assert [entry["checkpoint"] for entry in failed] == ["ptbxl_superclass_resnet1d"]
    assert "no lead 'V7'" in failed[0]["error"]
    assert (
        len([entry for entry in document["results"] if entry["status"] == "ok"]) == len(list(CHECKPOINTS.iterdir())) - 1
    )
    assert "V7" in err


def test_an_option_no_checkpoint_can_take_stops_the_run(tmp_path: Path) -> None:
    from melep_cli import UsageError

    with pytest.raises(UsageError, match=r"^device: "):
        rank([CHECKPOINTS], TARGET, device="tpu")


def test_labels_the_default_selection_leaves_out_are_named_with_why(
    capsys: pytest.CaptureFixture[str], melep_log: pytest.LogCaptureFixture
) -> None:
    """The sample target has AFIB in 14 and PVC in 12 of its 300 records: below --min-positives 20."""
    code, document, err = _rank_json(
        capsys, "-c", str(next(CHECKPOINTS.glob("*.onnx"))), "-t", str(TARGET), "--min-positives", "20", "--no-cache"
    )
    assert code == 0
    excluded = {entry["label"]: entry["reason"] for entry in document["target"]["excluded_labels"]}
    assert excluded == {"AFIB": "fewer than 20 positives (14 of 300)", "PVC": "fewer than 20 positives (12 of 300)"}
    assert "AFIB" not in document["target"]["labels"] and "NORM" in document["target"]["labels"]
    warnings = [line for line in err.splitlines() if "left out of the ranking" in line]
    assert len(warnings) == 1 and "AFIB: fewer than 20 positives (14 of 300)" in warnings[0]
    _, everything, _ = _rank_json(capsys, "-c", str(next(CHECKPOINTS.glob("*.onnx"))), "-t", str(TARGET), "-q")
    assert everything["target"]["excluded_labels"] == []
