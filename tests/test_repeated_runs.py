"""Commands that once crashed now and then (an import racing on a worker thread; a thread still inside a runtime
when the interpreter exits), run many times in fresh processes: the same exit code and output every time."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import h5py
import pytest

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "sample_data"
CHECKPOINTS = SAMPLE / "checkpoints"
SHARED_CINC = REPO.parent / "shared" / "data" / "cinc2021"


def _runs(argv: list[str], times: int) -> list[subprocess.CompletedProcess[str]]:
    """`melep argv` in `times` fresh interpreters, two at a time (the forward passes run: --no-cache)."""
    environment = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "melep_cli", *argv]

    def once(_: int) -> subprocess.CompletedProcess[str]:
        return subprocess.run(command, capture_output=True, text=True, env=environment, cwd=REPO, timeout=300)

    with ThreadPoolExecutor(max_workers=2) as pool:
        return list(pool.map(once, range(times)))


def _same_every_time(runs: list[subprocess.CompletedProcess[str]], code: int) -> None:
    assert [run.returncode for run in runs] == [code] * len(runs), [run.stderr[-500:] for run in runs]
    assert len({_without_seconds(run.stdout) for run in runs}) == 1
    assert all("terminate called" not in run.stderr and "Traceback" not in run.stderr for run in runs)


def _without_seconds(text: str) -> str:
    """JSON output with its timings taken out (everything else must be identical); other text as it is."""
    if not text.startswith("{"):
        return text

    def strip(value):
        if isinstance(value, dict):
            return {key: strip(item) for key, item in value.items() if key not in ("seconds", "created")}
        return [strip(item) for item in value] if isinstance(value, list) else value

    return json.dumps(strip(json.loads(text)))


def _scores(run: subprocess.CompletedProcess[str]) -> dict[str, float]:
    return {entry["checkpoint"]: entry["melep"] for entry in json.loads(run.stdout)["results"]}


def test_a_misspelt_target_is_one_error_line_and_exit_2_every_time() -> None:
    runs = _runs(["rank", "-c", "sample_data/checkpoints", "-t", "sample_data/ptbxl_target.h55"], times=12)
    _same_every_time(runs, 2)
    assert {run.stderr for run in runs} == {"melep: error: sample_data/ptbxl_target.h55: no such file or directory\n"}


def test_a_broken_target_file_is_one_error_line_and_exit_2_every_time(tmp_path: Path) -> None:
    broken = tmp_path / "broken.h5"
    broken.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 64)  # an HDF5 signature, nothing after it
    runs = _runs(["rank", "-c", str(CHECKPOINTS), "-t", str(broken), "--no-cache"], times=8)
    _same_every_time(runs, 2)
    (line,) = {run.stderr for run in runs}
    assert line.startswith("melep: error: ") and "broken.h5" in line and line.count("\n") == 1


def test_a_target_that_fails_while_decoding_is_one_error_every_time(tmp_path: Path) -> None:
    """Every record unusable: the error comes from the producer thread, after the models loaded."""
    target = tmp_path / "flat.h5"
    shutil.copy(SAMPLE / "ptbxl_target.h5", target)
    with h5py.File(target, "r+") as handle:
        handle["signals"][...] = 0
    runs = _runs(["rank", "-c", str(CHECKPOINTS), "-t", str(target), "--no-cache", "-q"], times=8)
    _same_every_time(runs, 2)
    assert all("no usable record" in run.stderr for run in runs)


def test_sample_challenge_mat_records_rank_the_same_every_time() -> None:
    """The shipped CinC sample: .mat records (scipy.io) at 500 Hz (resampled: scipy.signal), five checkpoints."""
    argv = ["rank", "-c", "sample_data/checkpoints", "-t", "sample_data/cinc_wfdb", "--min-positives", "2"]
    runs = _runs([*argv, "--no-cache", "-q", "-f", "json"], times=6)
    _same_every_time(runs, 0)
    assert len(_scores(runs[0])) == 5


def test_the_shared_challenge_records_rank_the_same_every_time() -> None:
    if not SHARED_CINC.is_dir():
        pytest.skip(f"PhysioNet/CinC 2021 records not found at {SHARED_CINC}")
    argv = ["rank", "-c", "sample_data/checkpoints/ptbxl_form_resnet1d.pt", "-t", str(SHARED_CINC), "-q"]
    runs = _runs([*argv, "--no-cache", "-f", "json"], times=5)
    _same_every_time(runs, 0)
    assert list(_scores(runs[0])) == ["ptbxl_form_resnet1d"]
