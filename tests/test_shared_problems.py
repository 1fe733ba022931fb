"""A problem of the target or the machine is one error (exit 2), not one error row per checkpoint; lead names."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import h5py
import pytest

from melep_cli.cli import run

SAMPLE = Path(__file__).resolve().parents[1] / "sample_data"
TARGET = SAMPLE / "ptbxl_target.h5"
CHECKPOINTS = SAMPLE / "checkpoints"
STANDARD = "I,II,III,aVR,aVL,aVF,V1,V2,V3,V4,V5,V6"


def _with_leads(tmp_path: Path, names: list[str], keep: int | None = None) -> Path:
    """The sample target with its leads renamed (and only the first `keep` of them)."""
    path = tmp_path / "target.h5"
    shutil.copy(TARGET, path)
    with h5py.File(path, "r+") as handle:
        if keep is not None:
            signals = handle["signals"][:, :, :keep]
            attributes = dict(handle["signals"].attrs)
            del handle["signals"]
            handle.create_dataset("signals", data=signals).attrs.update(attributes)
        handle.attrs["leads"] = names
    return path


def _ranked(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict | None, list[str]]:
    code = run(["rank", "-c", str(CHECKPOINTS), *argv, "-f", "json"])
    captured = capsys.readouterr()
    return code, json.loads(captured.out) if captured.out else None, captured.err.splitlines()


def test_leads_no_checkpoint_finds_are_one_target_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = _with_leads(tmp_path, [f"L{index}" for index in range(1, 13)])
    code, document, err = _ranked(capsys, "-t", str(target))
    assert code == 2 and document is None
    assert len(err) == 1 and err[0].startswith(f"melep: error: {target}: the target has no lead 'I'"), err
    assert "every checkpoint (5) failed alike" in err[0]


def test_a_six_lead_target_is_one_target_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = _with_leads(tmp_path, STANDARD.split(",")[:6], keep=6)
    code, _, err = _ranked(capsys, "-t", str(target))
    assert code == 2 and len(err) == 1 and "no lead 'V1'" in err[0], err


def test_lead_names_and_the_usual_aliases_give_the_scores_of_the_standard_names(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, expected, _ = _ranked(capsys, "-t", str(TARGET), "-q")
    scores = {entry["checkpoint"]: entry["melep"] for entry in expected["results"]}  # type: ignore[index]
    renamed = _with_leads(tmp_path, [f"L{index}" for index in range(1, 13)])
    code, document, _ = _ranked(capsys, "-t", str(renamed), "--lead-names", STANDARD, "-q")
    assert code == 0 and {e["checkpoint"]: e["melep"] for e in document["results"]} == scores  # type: ignore[index]
    # CODE-15% writes DI, DII, DIII and upper-case AVR, AVL, AVF: understood without --lead-names.
    code15 = ["DI", "DII", "DIII", "AVR", "AVL", "AVF", "V1", "V2", "V3", "V4", "V5", "V6"]
    (tmp_path / "code15").mkdir()
    aliased = _with_leads(tmp_path / "code15", code15)
    code, document, _ = _ranked(capsys, "-t", str(aliased), "-q")
    assert code == 0 and {e["checkpoint"]: e["melep"] for e in document["results"]} == scores  # type: ignore[index]


def test_lead_names_of_the_wrong_count_are_one_error(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _ranked(capsys, "-t", str(TARGET), "--lead-names", "I,II,III", "-q")
    assert code == 2 and len(err) == 1 and "3 lead names given" in err[0] and "has 12 leads" in err[0], err


def test_a_lead_only_one_checkpoint_wants_fails_that_checkpoint_alone(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "checkpoints"
    shutil.copytree(CHECKPOINTS, folder)
    leads = "I,II,III,aVR,aVL,aVF,V1,V2,V3,V4,V5,V7"  # twelve, as the model takes, but one the target lacks
    assert run(["annotate", str(folder / "ptbxl_rhythm_bilstm.pt"), "--leads", leads, "-q"]) == 0
    capsys.readouterr()
    code = run(["rank", "-c", str(folder), "-t", str(TARGET), "-f", "json"])
    captured = capsys.readouterr()
    assert code == 1
    failed = [entry for entry in json.loads(captured.out)["results"] if entry["status"] != "ok"]
    assert [entry["checkpoint"] for entry in failed] == ["ptbxl_rhythm_bilstm"]
    assert [line for line in captured.err.splitlines() if "V7" in line] != []


def test_a_device_the_machine_lacks_is_one_error_with_strict_device(capsys: pytest.CaptureFixture[str]) -> None:
    torch = pytest.importorskip("torch")
    onnxruntime = pytest.importorskip("onnxruntime")
    if torch.cuda.is_available() or "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("this machine has CUDA")
    code, document, err = _ranked(capsys, "-t", str(TARGET), "--device", "cuda", "--strict-device", "--no-cache")
    assert code == 2 and document is None
    assert len(err) == 1 and "device cuda with strict_device, but" in err[0] and "every checkpoint" in err[0], err
