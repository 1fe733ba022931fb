"""Stage 1 (`forward`): the producer thread, the outputs store, re-ranking from stored outputs."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import h5py
import numpy as np
import pytest

import melep_cli.forward_pass as forward_module
from melep_cli import TargetOptions, forward, load_checkpoint, open_target, prepare, rank
from melep_cli.cli import run
from melep_cli.preprocess import STANDARD_LEADS, InputSpec
from melep_cli.store import OutputsStore

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "sample_data"
TARGET = SAMPLE / "ptbxl_target.h5"
CHECKPOINTS = SAMPLE / "checkpoints"
ONNX = CHECKPOINTS / "ptbxl_superclass_resnet1d.onnx"
TORCHSCRIPT = CHECKPOINTS / "ptbxl_form_resnet1d.pt"


def _scores(report) -> dict[str, tuple[str, float | None]]:
    return {outcome.name: (outcome.status, outcome.melep) for outcome in report.outcomes}


def _entries(cache: Path) -> list[Path]:
    return OutputsStore(cache).entries()


# ----- the producer: one thread, ahead by a budget, stopped on every way out ------------------------------
def _counted(batches, produced: list[int]):
    for batch in batches:
        produced.append(len(batch))
        yield batch


def test_the_producer_runs_ahead_within_its_budget_and_prepares_what_inline_preparing_gives() -> None:
    target = open_target(TARGET)
    specs = [
        InputSpec(100, 1000, STANDARD_LEADS, "NCT", "zscore", "float32"),
        InputSpec(250, None, STANDARD_LEADS[:6], "NTC", "none", "float64"),
    ]
    per_batch = 32 * 1000 * 12 * 4 * 2 + 32 * 6 * 2500 * 8  # signals, the first input, the second input
    parts = [(spec, None) for spec in specs]
    for budget, expected_ahead in ((1, 3), (4 * per_batch, 5), (1 << 40, 10)):
        produced: list[int] = []
        producer = forward_module._Producer(_counted(target.batches(32), produced), lambda batch: parts, budget)
        if expected_ahead < 10:  # blocked, nothing consumed yet: it holds exactly what the budget allows
            assert producer.waiting_for_room.wait(timeout=60)
        else:  # the whole target fits: it decodes everything and finishes
            producer._thread.join(timeout=60)
        # Held ahead: two items at least, else what the budget holds; plus the one decoded and waiting for room.
        assert len(produced) == expected_ahead, (budget, produced)
        consumed = 0
        for batch, prepared in producer:
            assert set(prepared) == set(parts)
            for spec in specs:
                np.testing.assert_array_equal(
                    prepared[spec, None], prepare(batch.signals, batch.sampling_rate, batch.leads, spec)
                )
            consumed += len(batch)
        assert consumed == sum(produced) == len(target)
        producer.close()
    assert "melep-producer" not in [thread.name for thread in threading.enumerate()]


def test_closing_the_producer_early_stops_its_thread() -> None:
    producer = forward_module._Producer(open_target(TARGET).batches(8), lambda batch: [], budget=1)
    first, _ = next(iter(producer))
    assert len(first) == 8
    producer.close()
    assert "melep-producer" not in [thread.name for thread in threading.enumerate()]


def test_a_preparing_error_fails_only_the_checkpoints_of_that_spec(tmp_path: Path) -> None:
    folder = tmp_path / "checkpoints"
    shutil.copytree(CHECKPOINTS, folder)
    leads = "I,II,III,aVR,aVL,aVF,V1,V2,V3,V4,V5,V7"  # a lead the target lacks: preparing raises
    assert run(["annotate", str(folder / "ptbxl_superclass_resnet1d.onnx"), "--leads", leads, "-q"]) == 0
    report = rank([folder], TARGET, cache=None)
    failed = [outcome for outcome in report.outcomes if outcome.status != "ok"]
    assert [outcome.name for outcome in failed] == ["ptbxl_superclass_resnet1d"]
    assert "no lead 'V7'" in (failed[0].error or "")
    assert len(report.ok) == len(list(CHECKPOINTS.iterdir())) - 1


def test_scores_do_not_depend_on_preparing_on_the_producer(monkeypatch: pytest.MonkeyPatch) -> None:
    # The CinC records are at 500 Hz: every sample checkpoint's input is resampled, in several specs.
    ahead = rank(
        [CHECKPOINTS], SAMPLE / "cinc_wfdb", target_options=TargetOptions(min_positives=2), batch_size=4, cache=None
    )
    monkeypatch.setattr(forward_module._Specs, "for_batch", lambda self, batch: [])  # everything prepared inline
    inline = rank(
        [CHECKPOINTS], SAMPLE / "cinc_wfdb", target_options=TargetOptions(min_positives=2), batch_size=4, cache=None
    )
    assert len(ahead.ok) == len(ahead.outcomes) >= 4
    assert _scores(ahead) == _scores(inline)


def test_a_bad_target_is_reported_before_any_checkpoint_loads(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from melep_cli import TargetError

    loads: list[Path] = []
    monkeypatch.setattr(forward_module, "load_checkpoint", lambda path, **options: loads.append(path))
    with pytest.raises(TargetError, match=r"missing\.h5: no such file"):
        rank([CHECKPOINTS], tmp_path / "missing.h5")
    assert loads == []
    assert not [thread.name for thread in threading.enumerate() if thread.name.startswith("melep-")]


# ----- the outputs store ---------------------------------------------------------------------------------
def test_a_rank_fills_the_store_and_a_rank_on_other_labels_runs_no_forward_pass(
    monkeypatch: pytest.MonkeyPatch, _own_cache: Path
) -> None:
    first = rank([CHECKPOINTS], TARGET)
    assert first.forward_passes == len(first.outcomes) == len(_entries(_own_cache)) == 5
    assert not any(outcome.cached for outcome in first.outcomes)

    loads: list[Path] = []
    monkeypatch.setattr(forward_module, "load_checkpoint", lambda path, **options: loads.append(path))
    target = open_target(TARGET, labels=["MI", "AFIB", "NORM"])
    monkeypatch.setattr(target, "batches", lambda *args: pytest.fail("a cached rank decoded the signals"))
    again = rank([CHECKPOINTS], target, weighting="uniform")
    assert loads == [] and again.forward_passes == 0
    assert all(outcome.cached and outcome.entry is not None for outcome in again.outcomes)
    monkeypatch.undo()

    fresh = rank(
        [CHECKPOINTS],
        TARGET,
        target_options=TargetOptions(labels=["MI", "AFIB", "NORM"]),
        weighting="uniform",
        cache=None,
    )
    assert _scores(again) == _scores(fresh)  # exactly: the same outputs, the same metric
    for cached, computed in zip(again.outcomes, fresh.outcomes):
        np.testing.assert_array_equal(cached.result.phi, computed.result.phi)
    assert again.target.records == fresh.target.records == 300
    assert again.target.labels == ("MI", "AFIB", "NORM")


def test_stored_outputs_are_what_the_checkpoint_emits_for_those_records(_own_cache: Path) -> None:
    report = forward([ONNX, TORCHSCRIPT], TARGET)
    target = open_target(TARGET)
    signals = np.concatenate([batch.signals for batch in target.batches(300)])
    for result in report.results:
        assert result.status == "ok" and result.entry is not None and result.entry.parent.parent == _own_cache
        with h5py.File(result.entry, "r") as handle:
            stored = handle["outputs"][()]
            ids = [value.decode() for value in handle["record_ids"][()]]
            attributes = dict(handle.attrs)
        assert ids == target.record_ids
        checkpoint = load_checkpoint(result.path, device="cpu", warn_defaults=False)
        spec = checkpoint.input_spec(sampling_rate=100, samples=1000)
        emitted = checkpoint.predict(prepare(signals, 100, target.leads, spec), batch_size=300)
        np.testing.assert_allclose(stored, emitted, rtol=1e-5, atol=1e-6)
        assert stored.dtype == emitted.dtype  # before any activation, as the model emitted them
        assert attributes["checkpoint_path"] == str(result.path.resolve())
        assert attributes["target_path"] == str(TARGET.resolve())
        assert json.loads(attributes["input_specs"])[0]["layout"] == checkpoint.layout
        assert attributes["precision"] == "float32" and attributes["melep_version"]


def test_a_damaged_entry_is_recomputed_with_one_warning_and_replaced(
    _own_cache: Path, melep_log: pytest.LogCaptureFixture
) -> None:
    expected = _scores(rank([ONNX], TARGET))
    (entry,) = _entries(_own_cache)
    data = entry.read_bytes()
    for damaged in (data[: len(data) // 2], b"", b"not an HDF5 file" * 10):
        entry.write_bytes(damaged)
        melep_log.clear()
        report = rank([ONNX], TARGET)
        assert report.forward_passes == 1 and _scores(report) == expected
        warnings = {record.getMessage() for record in melep_log.records if "damaged cache entry" in record.getMessage()}
        assert len(warnings) == 1 and str(entry) in warnings.pop()
        assert rank([ONNX], TARGET).forward_passes == 0  # replaced by a good entry


def test_a_changed_checkpoint_target_or_option_is_a_miss(tmp_path: Path) -> None:
    checkpoint, target = tmp_path / "model.onnx", tmp_path / "target.h5"
    shutil.copy(ONNX, checkpoint)
    shutil.copy(TARGET, target)
    assert rank([checkpoint], target).forward_passes == 1
    assert rank([checkpoint], target).forward_passes == 0
    assert rank([checkpoint], target, precision="bfloat16").forward_passes == 1  # another precision
    # Metadata written into the checkpoint (its bytes change): a miss, and the new labels are used.
    assert run(["annotate", str(checkpoint), "--labels", "A,B,C,D,E", "-q"]) == 0
    report = rank([checkpoint], target)
    assert report.forward_passes == 1 and report.ok[0].result.source_names == ("A", "B", "C", "D", "E")
    # The target rewritten: a miss.
    with h5py.File(target, "r+") as handle:
        handle["signals"][0] = handle["signals"][0] * 2
    assert rank([checkpoint], target).forward_passes == 1
    assert rank([checkpoint], target).forward_passes == 0


def test_another_record_selection_is_a_miss(ptbxl_dir: Path) -> None:
    assert rank([ONNX], ptbxl_dir, target_options=TargetOptions(folds="10")).forward_passes == 1
    assert (
        rank(
            [ONNX], ptbxl_dir, target_options=TargetOptions(folds="10", ptbxl_labels="form", min_positives=3)
        ).forward_passes
        == 0
    )
    report = rank([ONNX], ptbxl_dir, target_options=TargetOptions(folds="9"))
    assert report.forward_passes == 1
    assert report.ok[0].melep != rank([ONNX], ptbxl_dir, target_options=TargetOptions(folds="10")).ok[0].melep


def test_no_cache_stores_nothing(_own_cache: Path) -> None:
    report = rank([ONNX], TARGET, cache=None)
    assert report.cache is None and report.forward_passes == 1 and _entries(_own_cache) == []


def test_two_ranks_at_once_on_one_cache_both_finish_with_the_same_results(tmp_path: Path) -> None:
    """Two real processes fill the same empty store at once; then a third reads it: all agree with --no-cache."""
    cache = tmp_path / "shared-cache"
    argv = [sys.executable, "-m", "melep_cli", "rank", "-c", str(CHECKPOINTS), "-t", str(TARGET), "-f", "json", "-q"]
    environment = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    children = [
        subprocess.Popen([*argv, "--cache", str(cache)], stdout=subprocess.PIPE, text=True, env=environment)
        for _ in range(2)
    ]
    documents = []
    for child in children:
        out, _ = child.communicate(timeout=300)
        assert child.returncode == 0
        documents.append(json.loads(out))
    reread = subprocess.run([*argv, "--cache", str(cache)], capture_output=True, text=True, env=environment)
    uncached = subprocess.run([*argv, "--no-cache"], capture_output=True, text=True, env=environment)
    documents += [json.loads(reread.stdout), json.loads(uncached.stdout)]
    assert documents[2]["forward_passes"] == 0
    scores = [{entry["checkpoint"]: entry["melep"] for entry in document["results"]} for document in documents]
    assert scores[0] == scores[1] == scores[2] == scores[3] and len(scores[0]) == 5
    assert len(_entries(cache)) == 5
    assert not [path for path in (cache / "outputs").iterdir() if path.suffix != ".h5"]  # no temporary left


def test_strict_mode_sees_records_skipped_in_a_stored_pass(tmp_path: Path) -> None:
    from melep_cli import TargetError

    target = tmp_path / "target.h5"
    shutil.copy(TARGET, target)
    with h5py.File(target, "r+") as handle:
        handle["signals"][3] = 0  # flat on every lead: skipped
    report = rank([ONNX], target)
    skipped_id = open_target(target).record_ids[3]
    assert report.target.records == 299 and report.target.skipped == [(skipped_id, "flat on every lead")]
    cached = rank([ONNX], target)
    assert cached.forward_passes == 0 and cached.target.skipped == report.target.skipped
    assert cached.target.records == report.target.records
    with pytest.raises(TargetError, match="strict mode"):
        rank([ONNX], target, target_options=TargetOptions(strict=True))


# ----- the commands --------------------------------------------------------------------------------------
def test_forward_then_rank_then_cache_list_and_clear(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cache = tmp_path / "cache"
    assert run(["forward", "-c", str(CHECKPOINTS), "-t", str(TARGET), "--cache", str(cache), "-f", "json", "-q"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["forward_passes"] == 5 and document["cache"] == str(cache)
    assert all(entry["status"] == "ok" and Path(entry["entry"]).is_file() for entry in document["results"])
    assert {entry["records"] for entry in document["results"]} == {300}

    assert run(["rank", "-c", str(CHECKPOINTS), "-t", str(TARGET), "--cache", str(cache), "-f", "json", "-q"]) == 0
    ranked = json.loads(capsys.readouterr().out)
    assert ranked["forward_passes"] == 0 and all(entry["cached"] for entry in ranked["results"])

    assert run(["cache", "list", "--cache", str(cache), "-f", "json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert len(listed["entries"]) == 5
    assert {entry["target"] for entry in listed["entries"]} == {str(TARGET.resolve())}
    assert {Path(entry["checkpoint"]).name for entry in listed["entries"]} == {p.name for p in CHECKPOINTS.iterdir()}
    assert all(entry["status"] == "ok" and entry["bytes"] > 0 for entry in listed["entries"])

    assert run(["cache", "clear", "--cache", str(cache)]) == 0
    assert "removed 5 cache entries" in capsys.readouterr().err
    assert _entries(cache) == []
    assert run(["rank", "-c", str(ONNX), "-t", str(TARGET), "--cache", str(cache), "--no-cache", "-q"]) == 2
    assert "contradict" in capsys.readouterr().err


def test_scores_do_not_depend_on_the_batch_size_when_records_differ_in_length(models) -> None:
    """A model that takes each record at its own length (no `samples`): 10 and 12 s CinC records are never
    zero-padded to their batch mates' length, so every batch size gives the outputs of each record run alone."""
    cinc = SAMPLE / "cinc_wfdb"
    checkpoint = models["conv"].onnx  # dynamic time axis, global average pooling: padding would change it
    runs = {
        size: forward([checkpoint], cinc, target_options=TargetOptions(min_positives=2), batch_size=size, cache=None)
        for size in (1, 5, 12)
    }
    alone = runs[1].results[0]
    lengths = {batch.ids[0]: len(batch.signals[0]) for batch in open_target(cinc, min_positives=2).batches(1)}
    assert len(set(lengths.values())) > 1  # the sample really mixes lengths
    for size in (5, 12):
        result = runs[size].results[0]
        assert result.record_ids == alone.record_ids
        np.testing.assert_allclose(result.outputs, alone.outputs, rtol=1e-5, atol=1e-6)
    scores = {
        size: rank([checkpoint], cinc, target_options=TargetOptions(min_positives=2), batch_size=size, cache=None)
        .ok[0]
        .melep
        for size in (1, 12)
    }
    assert scores[1] == pytest.approx(scores[12], rel=1e-6)


def test_outputs_that_are_already_probabilities_are_flagged(
    tmp_path: Path, melep_log: pytest.LogCaptureFixture
) -> None:
    """A model ending in a softmax, declared softmax (or logits): its outputs would be squashed twice."""
    import torch
    from conftest import export_onnx

    class Softmaxed(torch.nn.Module):
        def forward(self, ecg: torch.Tensor) -> torch.Tensor:
            return torch.softmax(torch.stack([ecg.mean(dim=(1, 2)), ecg.std(dim=(1, 2)), ecg.amax(dim=(1, 2))], 1), 1)

    checkpoint = export_onnx(Softmaxed(), torch.randn(2, 12, 1000), tmp_path / "softmaxed.onnx")
    for declared, flagged in (("softmax", True), ("logits", True), ("probabilities", False)):
        checkpoint.with_suffix(".json").write_text(json.dumps({"output": declared, "samples": 1000, "layout": "NCT"}))
        melep_log.clear()
        assert rank([checkpoint], TARGET, cache=None).ok
        warned = [
            record.getMessage() for record in melep_log.records if "sums to 1, as a softmax" in record.getMessage()
        ]
        assert bool(warned) is flagged, (declared, warned)
    assert rank([ONNX], TARGET, cache=None).ok and not [
        record
        for record in melep_log.records
        if "as a softmax" in record.getMessage() and "resnet1d" in record.getMessage()
    ]
