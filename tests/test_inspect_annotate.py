"""`melep inspect` and `melep annotate`: library functions and the CLI (exit codes, one-line errors)."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest

from melep_cli.checkpoints import annotate_checkpoint, inspect_checkpoint, load_checkpoint
from melep_cli.cli import run
from melep_cli.errors import CheckpointError, UsageError

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")

LABELS = ["NORM", "MI", "STTC", "CD", "HYP"]


def copy_to(source: Path, folder: Path, name: str | None = None) -> Path:
    return Path(shutil.copy(source, folder / (name or source.name)))


def one_error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert lines[0].startswith("melep: error: ")
    return lines[0]


class _CreatesAFile:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


# ----- library: round trips ----------------------------------------------------------------------
@pytest.mark.parametrize("checkpoint_format", ["onnx", "torchscript"])
def test_annotate_then_inspect_round_trips_the_metadata(tmp_path, models, checkpoint_format):
    source = models["conv"].onnx if checkpoint_format == "onnx" else models["conv"].torchscript
    path = copy_to(source, tmp_path)
    result = annotate_checkpoint(
        path,
        labels=LABELS,
        sampling_rate=500,
        samples=5000,
        leads=["I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6"],
        layout="NCT",
        activation="probabilities",
        normalization="minmax",
        source_prevalence=[0.4, 0.2, 0.2, 0.15, 0.1],
        name="Tiny conv",
        description="a test network",
    )
    assert result.path == path and result.previous_origin == "none"
    described = inspect_checkpoint(path, device="cpu")
    metadata = described["metadata"]
    assert described["format"] == checkpoint_format
    assert metadata["labels"] == LABELS
    assert (metadata["sampling_rate"], metadata["samples"], metadata["layout"]) == (500, 5000, "NCT")
    assert (metadata["output"], metadata["normalization"], metadata["name"]) == ("probabilities", "minmax", "Tiny conv")
    assert metadata["source_prevalence"] == [0.4, 0.2, 0.2, 0.15, 0.1]
    assert set(described["defaulted"]) == {"dtype", "scores_output"}  # only these were left out
    assert described["defaulted"]["scores_output"].endswith("(the only output)")
    assert described["outputs"] == [
        {
            "name": "scores" if checkpoint_format == "onnx" else "output",
            "shape": ["batch", 5] if checkpoint_format == "onnx" else [1, 5],
            "dtype": "float32",
            "role": "scores",
        }
    ]
    assert described["output"]["width"] == 5
    assert described["device"] == "cpu"
    assert "melep" in described["metadata_origin"] or "melep.json" in described["metadata_origin"]


def test_annotation_keeps_the_weights_and_other_extra_files(tmp_path, models, eager):
    path = tmp_path / "model.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(models["conv"].module, torch.randn(1, 12, 100))
        torch.jit.save(traced, str(path), _extra_files={"training.txt": "epochs=3"})
    annotate_checkpoint(path, labels=LABELS, layout="NCT")
    extra = {"training.txt": "", "melep.json": ""}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.load(str(path), _extra_files=extra)
    assert extra["training.txt"] == b"epochs=3"
    assert json.loads(extra["melep.json"]) == {"labels": LABELS, "layout": "NCT"}
    inputs = np.random.default_rng(0).normal(size=(3, 12, 300)).astype(np.float32)
    checkpoint = load_checkpoint(path, device="cpu", warn_defaults=False)
    np.testing.assert_allclose(checkpoint.predict(inputs), eager(models["conv"], inputs), atol=1e-4)


def test_annotation_keeps_other_onnx_metadata_props(tmp_path, models):
    path = copy_to(models["conv"].onnx, tmp_path)
    model = onnx.load(str(path))
    model.metadata_props.add(key="author", value="someone")
    onnx.save(model, str(path))
    annotate_checkpoint(path, labels=LABELS)
    props = {prop.key: prop.value for prop in onnx.load(str(path)).metadata_props}
    assert props["author"] == "someone"
    assert json.loads(props["melep"]) == {"labels": LABELS}


def test_existing_metadata_is_merged_and_given_keys_win(tmp_path, models):
    path = copy_to(models["conv"].onnx, tmp_path)
    annotate_checkpoint(path, labels=LABELS, sampling_rate=100, normalization="zscore")
    result = annotate_checkpoint(path, sampling_rate=500, description="retrained")
    assert result.document == {
        "labels": LABELS,
        "sampling_rate": 500,
        "normalization": "zscore",
        "description": "retrained",
    }
    result = annotate_checkpoint(path, remove=["normalization"])
    assert "normalization" not in result.document
    result = annotate_checkpoint(path, replace=True, name="fresh")
    assert result.document == {"name": "fresh"}


def test_a_sidecar_is_merged_into_the_file(tmp_path, models, melep_log):
    path = copy_to(models["lstm"].torchscript, tmp_path)
    path.with_suffix(".json").write_text(json.dumps({"labels": ["a", "b", "c"], "layout": "NTC"}))
    result = annotate_checkpoint(path, sampling_rate=250)
    assert result.previous_origin.startswith("sidecar")
    assert result.document == {"labels": ["a", "b", "c"], "sampling_rate": 250, "layout": "NTC"}
    assert any("sidecar is now ignored" in record.getMessage() for record in melep_log.records)


def test_annotate_to_a_new_file_leaves_the_original_untouched(tmp_path, models):
    path = copy_to(models["conv"].onnx, tmp_path)
    before = path.read_bytes()
    (tmp_path / "out").mkdir()  # atomic writes create no directories
    result = annotate_checkpoint(path, labels=LABELS, output=tmp_path / "out" / "labelled.onnx")
    assert path.read_bytes() == before
    assert load_checkpoint(result.path, device="cpu", warn_defaults=False).labels == tuple(LABELS)
    with pytest.raises(UsageError, match=r"needs one of \.onnx"):
        annotate_checkpoint(path, labels=LABELS, output=tmp_path / "labelled.pt")


def test_annotate_leaves_no_temporary_files(tmp_path, models):
    path = copy_to(models["conv"].torchscript, tmp_path)
    annotate_checkpoint(path, labels=LABELS)
    assert sorted(entry.name for entry in tmp_path.iterdir()) == ["conv.pt"]


def test_annotate_checks_values_and_the_static_output_width(tmp_path, models):
    path = copy_to(models["conv"].onnx, tmp_path)
    before = path.read_bytes()
    with pytest.raises(UsageError, match="metadata key 'samples'"):
        annotate_checkpoint(path, samples=0)
    with pytest.raises(UsageError, match="metadata key 'layout'"):
        annotate_checkpoint(path, layout="TCN")
    with pytest.raises(CheckpointError, match="3 labels given but the model outputs 5"):
        annotate_checkpoint(path, labels=["a", "b", "c"])
    with pytest.raises(CheckpointError, match="'source_prevalence' has 2 values but 'labels' has 5"):
        annotate_checkpoint(path, labels=LABELS, source_prevalence=[0.1, 0.2])
    assert path.read_bytes() == before


def test_inspect_marks_defaults_and_probes_torchscript(models):
    described = inspect_checkpoint(models["lstm"].torchscript, device="cpu")
    assert described["format"] == "torchscript"
    assert described["metadata"]["layout"] == "NTC"
    assert described["metadata"]["labels"] == ["out0", "out1", "out2"]
    assert described["output"]["width"] == 3
    assert "probed" in described["defaulted"]["layout"]
    assert set(described["defaulted"]) >= {"labels", "sampling_rate", "leads", "output", "normalization"}
    assert described["input"] == {"name": "ecg", "shape": None, "dtype": "float32"}


def test_inspect_reports_the_onnx_input(models):
    described = inspect_checkpoint(models["conv"].onnx, device="cpu")
    assert described["input"] == {"name": "ecg", "shape": ["batch", 12, "time"], "dtype": "float32"}
    assert described["output"] == {"name": "scores", "width": 5}
    assert described["provider"] == "CPUExecutionProvider"
    assert "ONNX input shape" in described["defaulted"]["layout"]


# ----- pickles never unpickled, whatever the command ---------------------------------------------
@pytest.mark.parametrize("command", ["inspect", "annotate"])
def test_pickles_are_refused_by_inspect_and_annotate_without_unpickling(tmp_path, capsys, command):
    marker = tmp_path / "unpickled"
    path = tmp_path / "model.pth"
    torch.save(_CreatesAFile(marker), path)
    argv = ["inspect", str(path)] if command == "inspect" else ["annotate", str(path), "--labels", "a"]
    assert run(argv) == 1
    line = one_error_line(capsys.readouterr().err)
    assert "model.pth: refused" in line and "torch.jit.save" in line
    assert not marker.exists()
    with pytest.raises(CheckpointError):
        inspect_checkpoint(path) if command == "inspect" else annotate_checkpoint(path, labels=["a"])
    assert not marker.exists()


# ----- CLI ---------------------------------------------------------------------------------------
def test_cli_inspect_table_and_json(models, capsys):
    assert run(["inspect", str(models["conv"].onnx), "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "onnx" in out and "ecg" in out and "(default)" in out and "CPUExecutionProvider" in out
    assert run(["inspect", str(models["conv"].onnx), "--device", "cpu", "--format", "json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["kind"] == "checkpoint" and document["output"]["width"] == 5


def test_cli_inspect_several_with_one_broken(tmp_path, models, capsys):
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"\x08garbage")
    code = run(["inspect", str(models["lstm"].onnx), str(broken), "--device", "cpu", "-f", "json"])
    captured = capsys.readouterr()
    assert code == 1
    assert "broken.onnx" in one_error_line(captured.err)
    documents = json.loads(captured.out)
    assert [document.get("status", "ok") for document in documents] == ["ok", "error"]


def test_cli_inspect_csv_has_one_row_per_checkpoint(models, capsys):
    assert run(["inspect", str(models["conv"].onnx), str(models["lstm"].onnx), "-f", "csv", "--device", "cpu"]) == 0
    rows = capsys.readouterr().out.strip().splitlines()
    assert len(rows) == 3 and rows[0].startswith("name,path,status,format")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["inspect", "nowhere.onnx"], "nowhere.onnx: no such file"),
        (["inspect", "--device", "tpu", "x.onnx"], "--device"),
    ],
)
def test_cli_inspect_usage_errors(argv, message, capsys):
    assert run(argv) == 2
    assert message in one_error_line(capsys.readouterr().err)


def test_cli_inspect_a_path_that_is_not_a_checkpoint(tmp_path, capsys):
    (tmp_path / "records").mkdir()
    assert run(["inspect", str(tmp_path / "records")]) == 2
    assert "neither a checkpoint" in one_error_line(capsys.readouterr().err)


def test_cli_annotate_writes_and_inspect_reads_back(tmp_path, models, capsys):
    path = copy_to(models["conv"].torchscript, tmp_path)
    argv = ["annotate", str(path), "--labels", ",".join(LABELS), "--layout", "nct", "--activation", "logits"]
    assert run([*argv, "--sampling-rate", "100", "--leads", "I,II,III,aVR,aVL,aVF,V1,V2,V3,V4,V5,V6"]) == 0
    capsys.readouterr()
    assert run(["inspect", str(path), "-f", "json", "--device", "cpu"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["metadata"]["labels"] == LABELS and document["metadata"]["layout"] == "NCT"
    assert document["metadata"]["sampling_rate"] == 100
    assert "labels" not in document["defaulted"] and "layout" not in document["defaulted"]


def test_cli_annotate_from_json_and_output_file(tmp_path, models, capsys):
    path = copy_to(models["conv"].onnx, tmp_path)
    sidecar = tmp_path / "meta.json"
    sidecar.write_text(json.dumps({"labels": LABELS, "normalization": "zscore"}))
    new = tmp_path / "annotated.onnx"
    assert run(["annotate", str(path), "--from-json", str(sidecar), "--name", "x", "-o", str(new), "-f", "json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document == {"path": str(new), "metadata": {"labels": LABELS, "normalization": "zscore", "name": "x"}}


@pytest.mark.parametrize(
    ("extra", "code", "message"),
    [
        (["--layout", "TNC"], 2, "--layout"),
        (["--samples", "0"], 2, "--samples"),
        (["--sampling-rate", "-5"], 2, "'sampling_rate'"),
        (["--labels", "a,b"], 1, "2 labels given but the model outputs 5"),
        (["--remove", "colour"], 2, "unknown metadata key 'colour'"),
        (["--source-prevalence", "a,b"], 2, "--source-prevalence"),
    ],
)
def test_cli_annotate_errors_are_one_line(tmp_path, models, capsys, extra, code, message):
    path = copy_to(models["conv"].onnx, tmp_path)
    assert run(["annotate", str(path), *extra]) == code
    assert message in one_error_line(capsys.readouterr().err)
