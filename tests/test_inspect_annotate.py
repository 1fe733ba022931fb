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
    with pytest.raises(CheckpointError, match="outputs 5 scores per record but its metadata names 3 labels"):
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
        (["--labels", "a,b"], 1, "outputs 5 scores per record but its metadata names 2 labels"),
        (["--remove", "colour"], 2, "unknown metadata key 'colour'"),
        (["--source-prevalence", "a,b"], 2, "--source-prevalence"),
    ],
)
def test_cli_annotate_errors_are_one_line(tmp_path, models, capsys, extra, code, message):
    path = copy_to(models["conv"].onnx, tmp_path)
    assert run(["annotate", str(path), *extra]) == code
    assert message in one_error_line(capsys.readouterr().err)


def test_annotate_refuses_an_unknown_remove_key_naming_the_parameter(tmp_path, models):
    """The library checks `remove` (a typo would otherwise keep the key): the CLI only shows it as --remove."""
    path = copy_to(models["conv"].onnx, tmp_path)
    before = path.read_bytes()
    with pytest.raises(UsageError, match=r"^remove: unknown metadata key 'colour' \(known: labels, ") as raised:
        annotate_checkpoint(path, remove=["colour"])
    assert raised.value.parameter == "remove" and path.read_bytes() == before


def test_annotate_output_suffix_error_names_the_parameter_and_the_cli_flag(tmp_path, models, capsys):
    path = copy_to(models["conv"].onnx, tmp_path)
    with pytest.raises(UsageError, match=r"^output: .*model\.bin: a onnx checkpoint needs one of \.onnx"):
        annotate_checkpoint(path, output=tmp_path / "model.bin", labels=LABELS)
    assert run(["annotate", str(path), "--labels", ",".join(LABELS), "-o", str(tmp_path / "model.bin")]) == 2
    assert one_error_line(capsys.readouterr().err).startswith("melep: error: --output: ")


def test_inspect_path_tells_a_checkpoint_from_a_target(tmp_path, models):
    from melep_cli.inspecting import inspect_path
    from melep_cli.targets import TargetOptions

    assert inspect_path(models["conv"].onnx, device="cpu")["kind"] == "checkpoint"
    target = Path(__file__).resolve().parents[1] / "sample_data" / "ptbxl_target.h5"
    described = inspect_path(target, target_options=TargetOptions(labels=["MI"]))
    assert described["kind"] == "target" and [label["name"] for label in described["labels"]] == ["MI"]
    (tmp_path / "records").mkdir()
    with pytest.raises(UsageError, match="neither a checkpoint"):
        inspect_path(tmp_path / "records")
    with pytest.raises(UsageError, match="no such file or directory"):
        inspect_path(tmp_path / "missing")


# ----- annotate and inspect check the metadata against the model, as rank does (issue 15, item 5) ----------
class _TenScores(torch.nn.Module):
    """Conv1d over 12 leads into 10 scores: (batch, 12, time) -> (batch, 10)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv1d(12, 10, kernel_size=5, padding=2)

    def forward(self, ecg: torch.Tensor) -> torch.Tensor:
        return self.conv(ecg).mean(dim=2)


def ten_scores(folder: Path, name: str = "ann.pt", metadata: dict | None = None) -> Path:
    """The 10-score model scripted and saved (with melep.json when `metadata` is given)."""
    path = folder / name
    extra = {"melep.json": json.dumps(metadata)} if metadata is not None else {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.script(_TenScores().eval()), str(path), _extra_files=extra)
    return path


@pytest.mark.parametrize("layout", [None, "NCT"])
def test_cli_annotate_refuses_labels_the_torchscript_output_width_rules_out(tmp_path, capsys, layout):
    path = ten_scores(tmp_path)
    before = path.read_bytes()
    bad = tmp_path / "bad.pt"
    options = ["--layout", layout] if layout else []
    assert run(["annotate", str(path), "--labels", "A,B", *options, "-o", str(bad)]) == 1
    line = one_error_line(capsys.readouterr().err)
    assert "ann.pt: outputs 10 scores per record but its metadata names 2 labels" in line
    assert not bad.exists() and path.read_bytes() == before
    assert sorted(entry.name for entry in tmp_path.iterdir()) == ["ann.pt"]
    assert run(["annotate", str(path), "--labels", ",".join(f"L{index}" for index in range(10)), "-o", str(bad)]) == 0


@pytest.mark.parametrize("layout", [None, "NCT"])
def test_cli_inspect_refuses_labels_the_torchscript_output_width_rules_out(tmp_path, capsys, layout):
    metadata = {"labels": ["A", "B"], **({"layout": layout} if layout else {})}
    path = ten_scores(tmp_path, "bad.pt", metadata)
    assert run(["inspect", str(path), "--device", "cpu"]) == 1
    captured = capsys.readouterr()
    line = one_error_line(captured.err)
    assert "bad.pt: outputs 10 scores per record but its metadata names 2 labels" in line
    assert captured.out == ""
    with pytest.raises(CheckpointError, match="outputs 10 scores per record but its metadata names 2"):
        inspect_checkpoint(path, device="cpu")


def test_cli_inspect_of_several_reports_the_contradicted_one_and_describes_the_others(tmp_path, models, capsys):
    path = ten_scores(tmp_path, "bad.pt", {"labels": ["A", "B"]})
    assert run(["inspect", str(models["conv"].onnx), str(path), "--device", "cpu", "-f", "json"]) == 1
    captured = capsys.readouterr()
    assert "bad.pt: outputs 10 scores" in one_error_line(captured.err)
    assert [document.get("status", "ok") for document in json.loads(captured.out)] == ["ok", "error"]


@pytest.mark.parametrize(
    ("source", "options", "message"),
    [
        ("conv", ["--leads", "I,II,III"], "the ONNX input shape [batch, 12, time] has no axis of the 3 leads"),
        ("conv_static", ["--samples", "500"], "metadata samples 500 but the ONNX input shape [1, 12, 1000] fixes 1000"),
        ("conv", ["--layout", "NTC"], "metadata layout NTC but the ONNX input shape [batch, 12, time]"),
        ("conv", ["--dtype", "float64"], "metadata dtype float64 but the ONNX input is declared float32"),
        ("conv", ["--labels", "a,b"], "outputs 5 scores per record but its metadata names 2 labels"),
    ],
)
def test_cli_annotate_and_inspect_refuse_what_the_onnx_model_contradicts(
    tmp_path, models, capsys, source, options, message
):
    path = copy_to(models[source].onnx, tmp_path, "model.onnx")
    before = path.read_bytes()
    assert run(["annotate", str(path), *options]) == 1
    line = one_error_line(capsys.readouterr().err)
    assert "model.onnx: " in line and message in line
    assert path.read_bytes() == before and sorted(entry.name for entry in tmp_path.iterdir()) == ["model.onnx"]
    key = {"--leads": "leads", "--samples": "samples", "--layout": "layout", "--dtype": "dtype", "--labels": "labels"}
    value: object = options[1]
    if options[0] in ("--leads", "--labels"):
        value = options[1].split(",")
    elif options[0] == "--samples":
        value = int(options[1])
    (tmp_path / "model.json").write_text(json.dumps({key[options[0]]: value}))
    assert run(["inspect", str(path), "--device", "cpu"]) == 1
    line = one_error_line(capsys.readouterr().err)
    assert "model.onnx: " in line and message in line


def test_annotate_refuses_a_torchscript_layout_the_model_does_not_run(tmp_path, models, capsys):
    path = copy_to(models["conv"].torchscript, tmp_path)
    before = path.read_bytes()
    assert run(["annotate", str(path), "--layout", "NTC"]) == 1
    line = one_error_line(capsys.readouterr().err)
    assert "conv.pt: metadata layout NTC does not run" in line and "but NCT does" in line
    assert path.read_bytes() == before
    (tmp_path / "conv.json").write_text(json.dumps({"layout": "NTC"}))
    assert run(["inspect", str(path), "--device", "cpu"]) == 1
    assert "conv.pt: metadata layout NTC does not run" in one_error_line(capsys.readouterr().err)


def test_annotate_refuses_leads_the_first_layer_cannot_take(tmp_path, capsys):
    class EightLeads(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv1d(8, 2, kernel_size=3)

        def forward(self, ecg: torch.Tensor) -> torch.Tensor:
            return self.conv(ecg).mean(dim=2)

    path = tmp_path / "eight.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.script(EightLeads()), str(path))
    twelve = "I,II,III,aVR,aVL,aVF,V1,V2,V3,V4,V5,V6"
    assert run(["annotate", str(path), "--leads", twelve]) == 1
    line = one_error_line(capsys.readouterr().err)
    assert "eight.pt: " in line and "first layer (Conv1d) takes 8 channels" in line and "12 leads" in line
    assert run(["annotate", str(path), "--leads", "I,II,III,V1,V2,V3,V4,V5"]) == 0


def test_annotate_still_writes_with_a_warning_when_the_zero_record_cannot_run(tmp_path, melep_log):
    """A model that needs a length the metadata does not give yet: nothing contradicts, so it is written."""

    class Fixed(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.head = torch.nn.Linear(12 * 250, 4)

        def forward(self, ecg: torch.Tensor) -> torch.Tensor:
            return self.head(ecg.flatten(1))

    path = tmp_path / "fixed.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.script(Fixed()), str(path))
    result = annotate_checkpoint(path, labels=["a", "b"])
    assert result.document == {"labels": ["a", "b"]}
    assert any("labels not checked against the model" in record.getMessage() for record in melep_log.records)
    with pytest.raises(CheckpointError, match="outputs 4 scores per record but its metadata names 2"):
        annotate_checkpoint(path, samples=250, layout="NCT")  # now it runs: the stored labels are checked


# ----- inspect prints user strings literally, never as Rich markup (issue 15, item 3) ---------------------
def test_cli_inspect_prints_brackets_in_paths_names_and_labels(tmp_path, models, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "250")
    path = copy_to(models["conv"].onnx, tmp_path, "model[v2].onnx")
    labels = ["[bold]A", "B[/]", "C[red]", "[D]", "E"]
    (tmp_path / "model[v2].json").write_text(
        json.dumps({"labels": labels, "name": "net [b]x[/b]", "description": "[i]d[/i]", "colour[x]": 1})
    )
    assert run(["inspect", str(path), "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert str(path) in out
    assert "model[v2] (onnx)" in out and "net [b]x[/b]" in out
    assert ", ".join(labels) in out
    assert "[i]d[/i]" in out and "colour[x]" in out
    assert "shape [batch, 12, time]" in out


def test_cli_inspect_of_a_target_prints_brackets_literally(tmp_path, capsys, monkeypatch):
    import h5py

    monkeypatch.setenv("COLUMNS", "250")
    path = tmp_path / "target[v2].h5"
    rng = np.random.default_rng(0)
    with h5py.File(path, "w") as file:
        file["signals"] = rng.normal(size=(20, 1000, 12)).astype(np.float32)
        file["labels"] = (rng.random((20, 2)) < 0.5).astype(np.int8)
        file["signals"].attrs["sampling_rate"] = 100
        file["labels"].attrs["label_names"] = ["[bold]AF", "NSR[/]"]
    code = run(["inspect", str(path), "--min-positives", "1"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert f"Target {path}" in out
    assert "[bold]AF" in out and "NSR[/]" in out


def test_cli_annotate_prints_brackets_literally(tmp_path, models, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "250")
    monkeypatch.chdir(tmp_path)  # a short relative path: Rich wraps a title to the table's width
    copy_to(models["conv"].onnx, tmp_path, "model[v2].onnx")
    assert run(["annotate", "model[v2].onnx", "--labels", "[bold]A,B,C,D,E", "--name", "n[x]"]) == 0
    out = capsys.readouterr().out
    assert "model[v2].onnx" in out and "[bold]A, B, C, D, E" in out and "n[x]" in out
