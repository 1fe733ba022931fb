"""`melep score` through the CLI: formats, options, and one clear line for every bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from melep_cli import melep
from melep_cli.cli import run


@pytest.fixture()
def problem(tmp_path: Path) -> dict:
    rng = np.random.default_rng(7)
    labels = rng.integers(0, 2, size=(90, 3)).astype(np.uint8)
    logits = rng.normal(size=(90, 4)) + labels[:, [0, 1, 2, 0]] * 1.5
    np.save(tmp_path / "logits.npy", logits)
    np.save(tmp_path / "labels.npy", labels)
    header = "AF,IAVB,RBBB"
    np.savetxt(tmp_path / "labels.csv", labels, delimiter=",", fmt="%d", header=header, comments="")
    with h5py.File(tmp_path / "data.h5", "w") as handle:
        handle["outputs"] = logits
        handle["labels"] = labels
        handle["labels"].attrs["label_names"] = ["AF", "IAVB", "RBBB"]
    return {"dir": tmp_path, "labels": labels, "logits": logits}


def _score(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = run(["score", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_json_output_has_the_documented_keys(problem: dict, capsys: pytest.CaptureFixture[str]) -> None:
    d = problem["dir"]
    code, out, err = _score(capsys, str(d / "logits.npy"), str(d / "labels.csv"), "--format", "json", "--pairs")
    assert code == 0, err
    document = json.loads(out)
    expected = melep(problem["logits"], problem["labels"], activation="logits")
    assert document["melep"] == pytest.approx(expected.score, rel=1e-12)
    assert document["weighting"] == "prevalence"
    assert document["records"] == 90
    assert list(document["per_label"]) == ["AF", "IAVB", "RBBB"]
    assert np.array(document["phi"]).shape == (3, 4)
    assert document["source_labels"] == ["out0", "out1", "out2", "out3"]


def test_hdf5_datasets_and_names(problem: dict, capsys: pytest.CaptureFixture[str]) -> None:
    d = problem["dir"]
    code, out, _ = _score(
        capsys, f"{d}/data.h5:outputs", f"{d}/data.h5:labels", "-f", "json", "--source-names", "a,b,c,d"
    )
    assert code == 0
    document = json.loads(out)
    assert list(document["per_label"]) == ["AF", "IAVB", "RBBB"]
    assert document["source_labels"] == ["a", "b", "c", "d"]


def test_weighting_and_activation_options_change_the_score(problem: dict, capsys: pytest.CaptureFixture[str]) -> None:
    d = problem["dir"]
    paper = json.loads(_score(capsys, str(d / "logits.npy"), str(d / "labels.npy"), "-f", "json", "-w", "paper")[1])
    expected = melep(problem["logits"], problem["labels"], activation="logits", weighting="paper")
    assert paper["melep"] == pytest.approx(expected.score, rel=1e-12)
    softmax = json.loads(_score(capsys, str(d / "logits.npy"), str(d / "labels.npy"), "-f", "json", "-a", "softmax")[1])
    expected = melep(problem["logits"], problem["labels"], activation="softmax")
    assert softmax["melep"] == pytest.approx(expected.score, rel=1e-12)


def test_table_shows_score_per_label_and_pairs(problem: dict, capsys: pytest.CaptureFixture[str]) -> None:
    d = problem["dir"]
    code, out, _ = _score(capsys, str(d / "logits.npy"), str(d / "labels.csv"), "--per-label", "--pairs")
    assert code == 0
    expected = melep(problem["logits"], problem["labels"], activation="logits")
    assert f"{expected.score:.4f}" in out
    assert "Per target label" in out and "IAVB" in out
    assert "phi(y, z)" in out and "out3" in out


def test_csv_output_is_one_row_with_per_label_columns(problem: dict, capsys: pytest.CaptureFixture[str]) -> None:
    d = problem["dir"]
    code, out, _ = _score(capsys, str(d / "logits.npy"), str(d / "labels.csv"), "-f", "csv", "--per-label")
    assert code == 0
    header, row = out.strip().splitlines()
    assert header.split(",")[:4] == ["melep", "weighting", "activation", "records"]
    assert "per_label.RBBB" in header
    assert float(row.split(",")[0]) == pytest.approx(
        melep(problem["logits"], problem["labels"], activation="logits").score
    )


def test_output_file_is_written(problem: dict, capsys: pytest.CaptureFixture[str]) -> None:
    d = problem["dir"]
    target = d / "out" / "score.json"
    target.parent.mkdir()  # --output creates no directory
    code, out, _ = _score(capsys, str(d / "logits.npy"), str(d / "labels.npy"), "-f", "json", "-o", str(target))
    assert code == 0 and out == ""
    assert json.loads(target.read_text())["records"] == 90


def _write_bad(d: Path) -> dict[str, tuple[list[str], str]]:
    """Bad input name -> (score arguments, a fragment the one-line error must contain)."""
    np.save(d / "nan.npy", np.array([[0.1, np.nan], [0.2, 0.3], [0.4, 0.5]]))
    np.save(d / "three.npy", np.zeros((3, 2)))
    np.save(d / "cube.npy", np.zeros((3, 2, 2)))
    np.save(d / "labels3.npy", np.array([[0], [1], [0]]))
    np.save(d / "nonbinary.npy", np.array([[0], [3], [1]]))
    (d / "text.csv").write_text("a,b\n1,x\n")
    (d / "notnpy.npy").write_text("hello")
    good = str(d / "logits.npy")
    return {
        "missing file": ([str(d / "nope.npy"), good], "nope.npy: no such file"),
        "wrong shape": ([str(d / "cube.npy"), str(d / "labels3.npy")], "shape (3, 2, 2)"),
        "nan": ([str(d / "nan.npy"), str(d / "labels3.npy")], "non-finite"),
        "labels not 0/1": ([str(d / "three.npy"), str(d / "nonbinary.npy")], "0 or 1: found 3.0"),
        "mismatched n": ([good, str(d / "labels3.npy")], "has 90 records"),
        "csv not numbers": ([str(d / "text.csv"), good], "'x' is not a number"),
        "not npy": ([str(d / "notnpy.npy"), good], "notnpy.npy"),
        "unknown type": ([str(d / "labels.csv") + ".txt", good], "no such file"),
        "hdf5 without dataset": ([str(d / "data.h5"), good], "name the dataset"),
        "hdf5 missing dataset": ([f"{d}/data.h5:nothing", good], "no dataset 'nothing'"),
        "bad weighting": ([good, str(d / "labels.npy"), "-w", "bogus"], "bogus"),
    }


def test_every_bad_input_gives_one_line_and_exit_2(problem: dict, capsys: pytest.CaptureFixture[str]) -> None:
    for name, (args, fragment) in _write_bad(problem["dir"]).items():
        code, out, err = _score(capsys, *args)
        assert code == 2, name
        lines = err.strip().splitlines()
        assert len(lines) == 1, (name, err)
        assert lines[0].startswith("melep: error: "), (name, err)
        assert fragment in lines[0], (name, err)
        assert "Traceback" not in err and out == ""


def test_the_installed_command_exits_2_without_a_traceback(problem: dict) -> None:
    d = problem["dir"]
    completed = subprocess.run(
        [sys.executable, "-m", "melep_cli", "score", str(d / "nope.npy"), str(d / "labels.npy")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert completed.returncode == 2
    assert completed.stderr.strip() == f"melep: error: {d / 'nope.npy'}: no such file"


def test_debug_shows_the_traceback(problem: dict, capsys: pytest.CaptureFixture[str]) -> None:
    d = problem["dir"]
    code, _, err = _score(capsys, str(d / "nope.npy"), str(d / "labels.npy"), "--debug")
    assert code == 2
    assert "Traceback" in err
