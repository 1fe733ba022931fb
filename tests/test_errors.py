"""Library errors name Python parameters; the CLI names the flags of the command that ran."""

from __future__ import annotations

from pathlib import Path

import pytest

from melep_cli.cli import run
from melep_cli.errors import TargetError, UsageError

SAMPLE = Path(__file__).resolve().parents[1] / "sample_data"
TARGET = SAMPLE / "ptbxl_target.h5"
ONNX = SAMPLE / "checkpoints" / "ptbxl_superclass_resnet1d.onnx"


def test_the_parameter_starts_the_message_and_the_hint_ends_it() -> None:
    error = UsageError("no fold in ''", parameter="folds", hint="pass {folds} like '9,10'")
    assert str(error) == "folds: no fold in ''; pass folds like '9,10'"
    assert error.parameter == "folds" and error.detail == "no fold in ''"
    flags = {"folds": "--folds"}
    assert error.naming(flags.__getitem__) == "--folds: no fold in ''; pass --folds like '9,10'"


def test_an_error_without_parameter_or_hint_is_its_message() -> None:
    error = TargetError("x.h5: no such file or directory")
    assert str(error) == error.naming(lambda name: "--" + name) == "x.h5: no such file or directory"


def _error_line(capsys: pytest.CaptureFixture[str]) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


def test_the_cli_names_the_running_command_s_flags(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert run(["rank", "-c", str(ONNX), "-t", str(TARGET), "--device", "tpu", "-q"]) == 2
    assert _error_line(capsys).startswith("melep: error: --device: expected auto")
    assert run(["convert", str(TARGET), str(tmp_path / "o.h5"), "--resample", "-5", "-q"]) == 2
    assert _error_line(capsys) == "melep: error: --resample: must be a positive number of Hz, got -5.0"
    assert run(["inspect", str(TARGET), "--folds", "3-1", "-q"]) == 2
    assert _error_line(capsys) == "melep: error: --folds: range '3-1' runs backwards"


def test_a_hint_names_the_flag_of_another_option(capsys: pytest.CaptureFixture[str]) -> None:
    """No label reaches --min-positives: the hint names --min-positives and --labels, as the user types them."""
    assert run(["rank", "-c", str(ONNX), "-t", str(TARGET), "--min-positives", "100000", "-q"]) == 2
    assert _error_line(capsys).endswith("; lower --min-positives or pass --labels")
