"""`--output` (and `convert`'s OUTPUT) as a user meets it: never over an input, checked before any work,
the format taken from the extension, and one stderr line saying where the result went."""

from __future__ import annotations

import importlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from melep_cli.cli import run
from melep_cli.cli.app import OutputFormat, check_output_path, output_format_for
from melep_cli.errors import UsageError

SAMPLE = Path(__file__).resolve().parents[1] / "sample_data"
TARGET = SAMPLE / "ptbxl_target.h5"
ONNX = SAMPLE / "checkpoints" / "ptbxl_superclass_resnet1d.onnx"


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, list[str]]:
    """Exit code, stdout and the stderr lines of `melep ARGV`."""
    code = run(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err.splitlines()


def _refused(code: int, err: list[str], *fragments: str) -> None:
    """Exit 2 and exactly one `melep: error:` line holding every fragment."""
    assert code == 2, err
    assert len(err) == 1 and err[0].startswith("melep: error: "), err
    for fragment in fragments:
        assert fragment in err[0], (fragment, err)


@pytest.fixture()
def no_work(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Replace every command's work with a recorder: a refused --output must never get that far."""
    called: list[str] = []

    def recorder(name: str):
        def work(*args, **kwargs):
            called.append(name)
            raise AssertionError(f"{name} ran although --output was refused")

        return work

    monkeypatch.setattr(importlib.import_module("melep_cli.cli.rank"), "rank", recorder("rank"))
    monkeypatch.setattr(importlib.import_module("melep_cli.cli.score"), "score", recorder("score"))
    monkeypatch.setattr(importlib.import_module("melep_cli.cli.inspect"), "inspect_path", recorder("inspect"))
    monkeypatch.setattr(importlib.import_module("melep_cli.cli.convert"), "convert", recorder("convert"))
    return called


@pytest.fixture()
def arrays(tmp_path: Path) -> dict[str, Path]:
    """Small score inputs: logits.npy, labels.npy and data.h5 holding both."""
    import h5py

    rng = np.random.default_rng(3)
    labels = rng.integers(0, 2, size=(60, 2)).astype(np.uint8)
    logits = rng.normal(size=(60, 3)) + labels[:, [0, 1, 0]]
    np.save(tmp_path / "logits.npy", logits)
    np.save(tmp_path / "labels.npy", labels)
    with h5py.File(tmp_path / "data.h5", "w") as handle:
        handle["outputs"] = logits
        handle["labels"] = labels
    return {"logits": tmp_path / "logits.npy", "labels": tmp_path / "labels.npy", "h5": tmp_path / "data.h5"}


# ----- item 1: an input is never overwritten ---------------------------------------------------------
def test_rank_refuses_to_write_over_its_target(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], no_work: list[str]
) -> None:
    victim = tmp_path / "victim.h5"
    shutil.copyfile(TARGET, victim)
    before = victim.read_bytes()
    code, out, err = _run(capsys, "rank", "-c", str(ONNX), "-t", str(victim), "-o", str(victim))
    _refused(code, err, str(victim), "is an input of this command", "--output")
    assert out == "" and victim.read_bytes() == before and no_work == []


def test_rank_refuses_to_write_over_a_checkpoint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], no_work: list[str]
) -> None:
    checkpoint = tmp_path / "a.onnx"
    shutil.copyfile(ONNX, checkpoint)
    before = checkpoint.read_bytes()
    code, _, err = _run(capsys, "rank", "-c", str(checkpoint), "-t", str(TARGET), "-o", str(checkpoint))
    _refused(code, err, str(checkpoint), "input")
    assert checkpoint.read_bytes() == before and no_work == []


def test_a_symlink_or_hard_link_to_an_input_counts_as_the_input(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], no_work: list[str]
) -> None:
    victim = tmp_path / "victim.h5"
    shutil.copyfile(TARGET, victim)
    before = victim.read_bytes()
    symlink, hard_link = tmp_path / "link.json", tmp_path / "hard.json"
    symlink.symlink_to(victim)
    os.link(victim, hard_link)
    for output in (symlink, hard_link):
        code, _, err = _run(capsys, "rank", "-c", str(ONNX), "-t", str(victim), "-o", str(output))
        _refused(code, err, str(output), "input")
    assert victim.read_bytes() == before and symlink.is_symlink() and no_work == []


def test_score_refuses_to_write_over_its_arrays(
    arrays: dict[str, Path], capsys: pytest.CaptureFixture[str], no_work: list[str]
) -> None:
    logits, labels, h5 = arrays["logits"], arrays["labels"], arrays["h5"]
    before = {path: path.read_bytes() for path in (logits, labels, h5)}
    code, _, err = _run(capsys, "score", str(logits), str(labels), "-o", str(logits))
    _refused(code, err, str(logits), "input")
    code, _, err = _run(capsys, "score", str(logits), str(labels), "-o", str(labels))
    _refused(code, err, str(labels), "input")
    # FILE:DATASET reads FILE.
    code, _, err = _run(capsys, "score", f"{h5}:outputs", f"{h5}:labels", "-o", str(h5))
    _refused(code, err, str(h5), "input")
    assert {path: path.read_bytes() for path in before} == before and no_work == []


def test_inspect_refuses_to_write_over_what_it_inspects(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], no_work: list[str]
) -> None:
    checkpoint = tmp_path / "b.onnx"
    shutil.copyfile(ONNX, checkpoint)
    before = checkpoint.read_bytes()
    code, _, err = _run(capsys, "inspect", str(TARGET), str(checkpoint), "-o", str(checkpoint))
    _refused(code, err, str(checkpoint), "input")
    assert checkpoint.read_bytes() == before and no_work == []


def test_files_read_from_an_input_directory_are_protected(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], no_work: list[str]
) -> None:
    checkpoints = tmp_path / "ckpts"
    checkpoints.mkdir()
    shutil.copyfile(ONNX, checkpoints / "a.onnx")
    sidecar = checkpoints / "a.json"
    sidecar.write_text('{"name": "a"}')
    records = tmp_path / "wfdb"
    records.mkdir()
    (records / "r1.hea").write_text("r1 12 500 5000\n")
    cases = [
        ["rank", "-c", str(checkpoints), "-t", str(TARGET), "-o", str(checkpoints / "a.onnx")],
        ["rank", "-c", str(checkpoints), "-t", str(TARGET), "-o", str(sidecar)],
        ["rank", "-c", str(checkpoints / "a.onnx"), "-t", str(TARGET), "-o", str(sidecar)],
        ["rank", "-c", str(ONNX), "-t", str(records), "-o", str(records / "r1.hea")],
    ]
    before = {path: path.read_bytes() for path in (checkpoints / "a.onnx", sidecar, records / "r1.hea")}
    for argv in cases:
        code, _, err = _run(capsys, *argv)
        _refused(code, err, argv[-1])
    assert {path: path.read_bytes() for path in before} == before and no_work == []


def test_the_directory_rule(tmp_path: Path) -> None:
    """Inside an input directory only existing files of a suffix the command reads (and sidecars) are refused."""
    directory = tmp_path / "data"
    (directory / "sub").mkdir(parents=True)
    for name in ("m.onnx", "m.json", "sub/r.hea", "sub/r.mat", "old-ranking.json", "notes.txt"):
        (directory / name).write_text("x")
    for name in ("m.onnx", "m.json", "sub/r.hea", "sub/r.mat"):
        with pytest.raises(UsageError, match="choose another --output"):
            check_output_path(directory / name, [directory])
    for name in ("old-ranking.json", "notes.txt", "new.onnx", "sub/new.hea"):
        check_output_path(directory / name, [directory])  # a result file, or nothing there yet
    check_output_path(tmp_path / "m.onnx", [directory])  # outside the directory


def test_convert_refuses_a_link_to_its_source(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], no_work: list[str]
) -> None:
    source = tmp_path / "source.h5"
    shutil.copyfile(TARGET, source)
    before = source.read_bytes()
    hard_link = tmp_path / "copy.h5"
    os.link(source, hard_link)
    code, _, err = _run(capsys, "convert", str(source), str(hard_link))
    _refused(code, err, str(hard_link), "input")
    assert source.read_bytes() == before and no_work == []


def _command_argv(command: str, arrays: dict[str, Path]) -> list[str]:
    """A working `melep COMMAND ...` without -o, for the output-path checks."""
    return {
        "rank": ["rank", "-c", str(ONNX), "-t", str(TARGET)],
        "score": ["score", str(arrays["logits"]), str(arrays["labels"])],
        "inspect": ["inspect", str(ONNX)],
    }[command]


# ----- item 13: a directory or a missing parent is a usage error, found before any work ------------------
@pytest.mark.parametrize("command", ["rank", "score", "inspect"])
def test_an_existing_directory_as_output_is_refused_first(
    command: str, tmp_path: Path, arrays: dict[str, Path], capsys: pytest.CaptureFixture[str], no_work: list[str]
) -> None:
    argv = _command_argv(command, arrays)
    out_dir = tmp_path / "results"
    out_dir.mkdir()
    code, out, err = _run(capsys, *argv, "-o", str(out_dir))
    _refused(code, err, str(out_dir), "is a directory")
    assert out == "" and list(out_dir.iterdir()) == [] and no_work == []


@pytest.mark.parametrize("command", ["rank", "score", "inspect"])
def test_a_missing_parent_directory_is_refused_first_and_not_created(
    command: str, tmp_path: Path, arrays: dict[str, Path], capsys: pytest.CaptureFixture[str], no_work: list[str]
) -> None:
    argv = _command_argv(command, arrays)
    missing = tmp_path / "nowhere" / "deeper"
    code, _, err = _run(capsys, *argv, "-o", str(missing / "out.json"))
    _refused(code, err, str(missing), "no such directory")
    assert not (tmp_path / "nowhere").exists() and no_work == []


def test_convert_checks_its_output_first(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], no_work: list[str]
) -> None:
    code, _, err = _run(capsys, "convert", str(TARGET), str(tmp_path))
    _refused(code, err, str(tmp_path), "is a directory")
    missing = tmp_path / "nowhere"
    code, _, err = _run(capsys, "convert", str(TARGET), str(missing / "out.h5"))
    _refused(code, err, str(missing), "no such directory")
    assert not missing.exists() and no_work == []


def test_atomic_write_text_creates_no_directory_for_the_cli(tmp_path: Path) -> None:
    """emit writes with make_parents=False: a directory gone since the check is an error, not recreated."""
    from melep_cli.atomic import atomic_write_text

    missing = tmp_path / "gone"
    with pytest.raises(UsageError, match="no such directory"):
        atomic_write_text(missing / "out.json", "{}", make_parents=False)
    with pytest.raises(UsageError, match="is a directory"):
        atomic_write_text(tmp_path, "{}")
    assert not missing.exists()


# ----- item 14: the format follows the extension ----------------------------------------------------
def test_the_extension_chooses_the_format(arrays: dict[str, Path], tmp_path: Path, capsys) -> None:
    inputs = [str(arrays["logits"]), str(arrays["labels"])]
    assert run(["score", *inputs, "-f", "csv"]) == 0
    csv_on_stdout = capsys.readouterr().out
    for name, check in [
        ("out.json", lambda text: json.loads(text)["records"] == 60),
        ("OUT.JSON", lambda text: json.loads(text)["records"] == 60),
        ("out.csv", lambda text: text == csv_on_stdout),
        ("out.txt", lambda text: "MELEP" in text and not text.lstrip().startswith("{")),
        ("out.md", lambda text: "MELEP" in text and not text.lstrip().startswith("{")),
        ("out.result", lambda text: "MELEP" in text and not text.lstrip().startswith("{")),
    ]:
        output = tmp_path / name
        code, out, err = _run(capsys, "score", *inputs, "-o", str(output), "-q")
        assert code == 0 and out == "" and err == [], err
        assert check(output.read_text()), (name, output.read_text()[:200])


def test_a_format_contradicting_the_extension_is_a_usage_error(
    arrays: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str], no_work: list[str]
) -> None:
    inputs = [str(arrays["logits"]), str(arrays["labels"])]
    for fmt, name in [("csv", "x.json"), ("json", "x.csv"), ("table", "x.json")]:
        output = tmp_path / name
        code, _, err = _run(capsys, "score", *inputs, "--format", fmt, "-o", str(output))
        _refused(code, err, str(output), f"--format {fmt}")
        assert not output.exists()
    assert no_work == []


def test_an_explicit_format_agreeing_with_the_extension_or_a_text_file_is_kept(
    arrays: dict[str, Path], tmp_path: Path, capsys
) -> None:
    inputs = [str(arrays["logits"]), str(arrays["labels"])]
    assert run(["score", *inputs, "-f", "json", "-o", str(tmp_path / "a.json"), "-q"]) == 0
    assert json.loads((tmp_path / "a.json").read_text())["records"] == 60
    # .txt and .md say "text", not which text: --format json wins.
    assert run(["score", *inputs, "-f", "json", "-o", str(tmp_path / "a.txt"), "-q"]) == 0
    assert json.loads((tmp_path / "a.txt").read_text())["records"] == 60


def test_output_format_for() -> None:
    assert output_format_for(None, None) is OutputFormat.table
    assert output_format_for(OutputFormat.csv, None) is OutputFormat.csv
    assert output_format_for(None, Path("r.json")) is OutputFormat.json
    assert output_format_for(None, Path("r.CSV")) is OutputFormat.csv
    assert output_format_for(None, Path("r.markdown")) is OutputFormat.table
    assert output_format_for(None, Path("r.h5")) is OutputFormat.table
    assert output_format_for(OutputFormat.json, Path("r.md")) is OutputFormat.json
    with pytest.raises(UsageError, match="--format csv"):
        output_format_for(OutputFormat.csv, Path("r.json"))


def test_rank_writes_json_for_a_json_file_and_applies_its_own_csv_rules(tmp_path: Path, capsys) -> None:
    output = tmp_path / "ranking.json"
    code, out, err = _run(capsys, "rank", "-c", str(ONNX), "-t", str(TARGET), "--device", "cpu", "-o", str(output))
    assert code == 0 and out == "", err
    assert json.loads(output.read_text())["results"][0]["status"] == "ok"
    assert [line for line in err if not line.startswith("melep: warning: ")] == [f"melep: wrote {output} (json)"]
    # The inferred csv meets rank's own rule: --pairs cannot be CSV.
    code, _, err = _run(capsys, "rank", "-c", str(ONNX), "-t", str(TARGET), "--pairs", "-o", str(tmp_path / "r.csv"))
    _refused(code, err, "--pairs")


# ----- item 15: one line says where the result went -----------------------------------------------
def test_writing_a_file_says_so_on_stderr_unless_quiet(arrays: dict[str, Path], tmp_path: Path, capsys) -> None:
    inputs = [str(arrays["logits"]), str(arrays["labels"])]
    output = tmp_path / "score.csv"
    code, out, err = _run(capsys, "score", *inputs, "-o", str(output))
    assert code == 0 and out == ""
    assert err == [f"melep: wrote {output} (csv)"]
    code, out, err = _run(capsys, "score", *inputs, "-o", str(output), "--quiet")
    assert code == 0 and out == "" and err == []
    code, out, err = _run(capsys, "score", *inputs)
    assert code == 0 and "MELEP" in out and err == []  # stdout: nothing to announce
    output = tmp_path / "inspect.txt"
    code, out, err = _run(capsys, "inspect", str(ONNX), "--device", "cpu", "-o", str(output))
    assert code == 0 and out == "" and output.is_file()
    assert err == [f"melep: wrote {output} (table)"]
