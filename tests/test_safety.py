"""Safety: pickles never loaded by any command, atomic outputs under Ctrl-C, out-of-memory retries, bounded memory.

The SIGINT test runs the real CLI in a subprocess; the 100,000-record test streams a generated
file through `melep rank` and bounds the Python/numpy memory it peaks at.
"""

from __future__ import annotations

import importlib
import json
import os
import pickle
import signal
import subprocess
import sys
import threading
import time
import tracemalloc
from pathlib import Path

import h5py
import numpy as np
import pytest
from bad_inputs.make_corpus import CreatesAFile, MeanHead, _save_script, _swap_data_pkl, malicious_pickle

from melep_cli.checkpoints.checkpoint import Checkpoint
from melep_cli.cli import run
from melep_cli.ranking import rank

torch = pytest.importorskip("torch")
onnxruntime = pytest.importorskip("onnxruntime")

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "sample_data"
TARGET = SAMPLE / "ptbxl_target.h5"
CHECKPOINTS = SAMPLE / "checkpoints"
GOOD_ONNX = CHECKPOINTS / "ptbxl_superclass_resnet1d.onnx"


# ----- pickles are never unpickled ------------------------------------------------------------------
def _payload(kind: str, path: Path, marker: Path, folder: Path) -> Path:
    """A checkpoint at `path` whose unpickling would create `marker`."""
    if kind == "torch.save":
        torch.save(CreatesAFile(marker), path)
    elif kind == "pickle":
        path.write_bytes(malicious_pickle(marker))
    else:  # a real TorchScript archive with its data.pkl swapped for the malicious pickle
        source = _save_script(MeanHead(), folder / "source.pt")
        _swap_data_pkl(source, path, malicious_pickle(marker, protocol=2))
        source.unlink()
    return path


@pytest.mark.parametrize("kind", ["torch.save", "pickle", "torchscript-zip"])
def test_rank_never_unpickles_and_ranks_the_good_checkpoint_beside(
    kind: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    marker = tmp_path / "UNPICKLED"
    evil = _payload(kind, tmp_path / "evil.pt", marker, tmp_path)
    code = run(["rank", "-c", str(evil), "-c", str(GOOD_ONNX), "-t", str(TARGET), "-f", "json", "--device", "cpu"])
    captured = capsys.readouterr()
    assert code == 1
    assert not marker.exists()
    results = json.loads(captured.out)["results"]
    assert [(entry["checkpoint"], entry["status"]) for entry in results] == [(GOOD_ONNX.stem, "ok"), ("evil", "error")]
    assert "evil.pt" in results[1]["error"] and "Traceback" not in captured.err
    if kind != "torchscript-zip":  # a pickle is not listed as the TorchScript its suffix suggests
        assert results[1]["format"] == "pickle (refused)"


# `melep inspect` / `melep annotate` with a torch.save pickle: tests/test_inspect_annotate.py.
@pytest.mark.parametrize("kind", ["pickle", "torchscript-zip"])
@pytest.mark.parametrize("command", ["inspect", "annotate"])
def test_inspect_and_annotate_never_unpickle(
    command: str, kind: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    marker = tmp_path / "UNPICKLED"
    evil = _payload(kind, tmp_path / "evil.pt", marker, tmp_path)
    before = evil.read_bytes()
    argv = ["inspect", str(evil)] if command == "inspect" else ["annotate", str(evil), "--labels", "a,b,c,d,e"]
    code = run(argv)
    err = capsys.readouterr().err.splitlines()
    assert code == 1
    assert len(err) == 1 and err[0].startswith("melep: error: ") and "evil.pt" in err[0], err
    assert not marker.exists()
    assert evil.read_bytes() == before


@pytest.mark.parametrize("position", ["outputs", "labels"])
def test_score_never_unpickles_an_object_npy(position: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    marker = tmp_path / "UNPICKLED"
    evil = tmp_path / "evil.npy"
    np.save(evil, np.array([CreatesAFile(marker)], dtype=object), allow_pickle=True)
    marker.unlink(missing_ok=True)  # np.save ran __reduce__ only to describe the object, not to call it
    good = tmp_path / "good.npy"
    np.save(good, np.eye(2))
    argv = ["score", str(evil), str(good)] if position == "outputs" else ["score", str(good), str(evil)]
    code = run(argv)
    err = capsys.readouterr().err.splitlines()
    assert code == 2
    assert len(err) == 1 and "evil.npy" in err[0] and "not a numeric .npy array" in err[0], err
    assert not marker.exists()


# ----- Ctrl-C: exit 130, no partial output, no hanging decode thread --------------------------------
# The real CLI (`python -m melep_cli`), with Checkpoint.predict wrapped to announce the first forward pass.
_CHILD = """
import runpy, sys
from pathlib import Path
import melep_cli.checkpoints.checkpoint as module
started, original = Path(sys.argv[1]), module.Checkpoint.predict_outputs
def predict_outputs(self, *args, **kwargs):
    started.touch()
    return original(self, *args, **kwargs)
module.Checkpoint.predict_outputs = predict_outputs
sys.argv = ["melep", *sys.argv[2:]]
runpy.run_module("melep_cli", run_name="__main__")
"""


def test_sigint_during_the_forward_pass_exits_130_and_leaves_no_output(tmp_path: Path) -> None:
    started, output = tmp_path / "forward-pass-started", tmp_path / "out" / "ranking.json"
    output.parent.mkdir()
    argv = ["rank", "-c", str(CHECKPOINTS), "-t", str(TARGET), "--batch-size", "1", "--device", "cpu"]
    argv += ["--format", "json", "--output", str(output), "--quiet"]
    environment = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(started), *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=environment,
    )
    try:
        deadline = time.monotonic() + 120
        while not started.exists() and child.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert started.exists(), "the forward pass never started"
        time.sleep(0.3)  # well inside the pass: five checkpoints, 300 records, one record per batch
        child.send_signal(signal.SIGINT)
        out, err = child.communicate(timeout=60)  # a hanging decode thread would time out here
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == 130, err
    assert err == "melep: error: interrupted\n"
    assert out == ""
    assert list(output.parent.iterdir()) == [], "neither the output file nor a temporary file may remain"


def test_an_interrupted_rank_stops_its_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    """The one producer thread (decode and prepare) is stopped and joined when the pass is interrupted."""
    forward_module = importlib.import_module("melep_cli.forward_pass")
    threads: list[threading.Thread] = []

    class Recorded(threading.Thread):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            threads.append(self)

    calls = []
    original = Checkpoint.predict_outputs

    def interrupted(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    monkeypatch.setattr(forward_module.threading, "Thread", Recorded)
    monkeypatch.setattr(Checkpoint, "predict_outputs", interrupted)
    with pytest.raises(KeyboardInterrupt):
        rank([GOOD_ONNX], TARGET, device="cpu", batch_size=8, cache=None)
    assert [thread.name for thread in threads] == ["melep-producer"]
    assert not [thread.name for thread in threads if thread.is_alive()]


# ----- out of memory: halve the batch and go on ---------------------------------------------------
def test_out_of_memory_during_rank_halves_the_batch_once_and_scores_the_same(
    monkeypatch: pytest.MonkeyPatch, melep_log: pytest.LogCaptureFixture
) -> None:
    expected = rank([GOOD_ONNX], TARGET, device="cpu", cache=None).ok[0].melep
    original = onnxruntime.InferenceSession.run
    sizes: list[int] = []

    def run_within_16(self, output_names, feed, *args, **kwargs):
        batch = len(next(iter(feed.values())))
        sizes.append(batch)
        if batch > 16:  # what onnxruntime raises when its arena cannot grow
            raise RuntimeError("[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION : Failed to allocate memory for 2 GiB")
        return original(self, output_names, feed, *args, **kwargs)

    monkeypatch.setattr(onnxruntime.InferenceSession, "run", run_within_16)
    melep_log.clear()
    report = rank([GOOD_ONNX], TARGET, device="cpu", batch_size=64, cache=None)
    assert [outcome.status for outcome in report.outcomes] == ["ok"]
    assert report.ok[0].melep == pytest.approx(expected, rel=1e-6)
    assert report.target.records == 300
    records = {id(record): record for record in melep_log.records}.values()  # caplog may see a record twice
    warnings = [record.getMessage() for record in records if "out of memory" in record.getMessage()]
    assert len(warnings) == 2 and "retrying with 32" in warnings[0] and "retrying with 16" in warnings[1], warnings
    assert sizes[:3] == [64, 32, 16], sizes
    assert max(sizes[3:]) == 16, "later batches start from the size that fitted"


# ----- 100,000 records: signals streamed, only the n x Z outputs kept ------------------------------
def test_ranking_100k_records_keeps_memory_far_below_the_signals(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The producer may hold AHEAD_BYTES (128 MiB) ahead: a smaller budget here, so that a target of a size a
    # test can afford still tells streaming from keeping the signals.
    monkeypatch.setattr(importlib.import_module("melep_cli.forward_pass"), "AHEAD_BYTES", 16 * 2**20)
    n, samples, leads = 100_000, 100, 12
    path = tmp_path / "big.h5"
    pattern = (np.sin(np.linspace(0, 6, samples))[None, :, None] * 1000 + np.arange(leads)).astype(np.int16)
    block = np.repeat(pattern, 10_000, axis=0)
    block[:, 0, :] += (np.arange(10_000, dtype=np.int16) % 7)[:, None]
    with h5py.File(path, "w") as handle:
        signals = handle.create_dataset(
            "signals", (n, samples, leads), dtype=np.int16, chunks=(1000, samples, leads), compression="gzip"
        )
        for start in range(0, n, 10_000):
            signals[start : start + 10_000] = block
        signals.attrs["sampling_rate"] = 100
        labels = np.stack([np.arange(n) % 5 == 0, np.arange(n) % 3 == 0], axis=1).astype(np.uint8)
        handle.create_dataset("labels", data=labels).attrs["label_names"] = ["A", "B"]
    checkpoint = _save_script(
        MeanHead(outputs=4), tmp_path / "small.pt", {"labels": ["w", "x", "y", "z"], "layout": "NCT", "samples": 100}
    )
    whole_float32 = n * samples * leads * 4  # 480 MB: what keeping the signals would take
    torch.set_num_threads(1)
    tracemalloc.start()
    try:
        code = run(["rank", "-c", str(checkpoint), "-t", str(path), "--batch-size", "256", "-f", "json", "-q"])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    document = json.loads(capsys.readouterr().out)
    assert code == 0
    assert document["target"]["records"] == n
    assert document["results"][0]["status"] == "ok"
    # Measured about 35 MiB: the decode budget, batches in flight, the record ids, the n x Z outputs, the metric.
    assert peak < whole_float32 / 5, f"peak {peak / 2**20:.0f} MiB while ranking {whole_float32 / 2**20:.0f} MiB"


def test_the_corpus_pickles_are_what_they_claim(tmp_path: Path) -> None:
    """Guard for the tests above: loading the payload with pickle really would create the marker."""
    marker = tmp_path / "UNPICKLED"
    handle = pickle.loads(malicious_pickle(marker))
    handle.close()
    assert marker.exists()


# ----- no output file from a failed command -----------------------------------------------------
@pytest.mark.parametrize("command", ["score", "rank", "inspect", "convert"])
def test_a_failed_command_leaves_no_output_file(
    command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = tmp_path / "broken.h5"
    broken.write_bytes(TARGET.read_bytes()[:5000])
    output = tmp_path / "result" / ("out.h5" if command == "convert" else "out.json")
    output.parent.mkdir()
    argv = {
        "score": ["score", f"{broken}:outputs", f"{broken}:labels", "-o", str(output)],
        "rank": ["rank", "-c", str(GOOD_ONNX), "-t", str(broken), "-o", str(output)],
        "inspect": ["inspect", str(broken), "-o", str(output)],
        "convert": ["convert", str(broken), str(output)],
    }[command]
    code = run(argv)
    err = capsys.readouterr().err.splitlines()
    assert code == 2
    assert len(err) == 1 and err[0].startswith("melep: error: ") and "broken.h5" in err[0], err
    assert not output.exists()
    assert not output.parent.exists() or not list(output.parent.iterdir())
