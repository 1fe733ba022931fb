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
from melep_cli.rank import rank
from melep_cli.targets import convert, open_target

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
    convert(CINC, converted, min_positives=2)
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
    _, first, _ = _rank_json(capsys, *options)
    _, second, _ = _rank_json(capsys, *options, "--batch-size", "37")

    def without_timing(document: dict) -> dict:
        document = json.loads(json.dumps(document))
        document.pop("seconds")
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


def _counted_batches(target, batch_size: int, produced: list[int]):
    for batch in target.batches(batch_size):
        produced.append(len(batch))
        yield batch


def test_decoding_runs_ahead_within_its_memory_budget() -> None:
    import threading
    import time

    from melep_cli.rank import _Prefetch

    target = open_target(SAMPLE / "ptbxl_target.h5")
    batch_bytes = 32 * 1000 * 12 * 4  # a batch of 32 records of 10 s at 100 Hz, float32
    # Queued ahead: two batches at least, else as many as the budget holds, plus the one decoded and waiting.
    for budget, expected_ahead in ((1, 3), (5 * batch_bytes, 6), (1 << 40, 10)):
        produced: list[int] = []
        prefetch = _Prefetch(_counted_batches(target, 32, produced), budget=budget)
        deadline = time.monotonic() + 30
        while len(produced) < expected_ahead and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.2)  # would it decode more than the budget allows?
        assert len(produced) == expected_ahead, (budget, produced)  # nothing consumed yet: it waits
        consumed = [len(batch) for batch, _ in prefetch]
        assert consumed == produced and sum(consumed) == len(target)
        prefetch.close()
    names = [thread.name for thread in threading.enumerate()]
    assert "melep-decode" not in names


def test_closing_early_stops_the_decode_thread() -> None:
    import threading

    from melep_cli.rank import _Prefetch

    target = open_target(SAMPLE / "ptbxl_target.h5")
    prefetch = _Prefetch(target.batches(8), budget=1)
    first, _ = next(iter(prefetch))
    assert len(first) == 8
    prefetch.close()
    assert "melep-decode" not in [thread.name for thread in threading.enumerate()]


@pytest.mark.parametrize(
    ("workers", "budget_batches", "expected_ahead"),
    [(1, 2.5, 2), (2, 2.5, 2), (3, 0, 3), (1, 0, 1)],  # one batch per worker always; beyond that, the byte budget
)
def test_inputs_are_prepared_ahead_within_their_budget_and_equal_preparing_inline(
    monkeypatch: pytest.MonkeyPatch, workers: int, budget_batches: float, expected_ahead: int
) -> None:
    import importlib
    import threading
    import time

    from melep_cli.preprocess import STANDARD_LEADS, InputSpec
    from melep_cli.rank import _Prefetch

    rank_module = importlib.import_module("melep_cli.rank")  # melep_cli.rank is also the function
    target = open_target(TARGET)
    specs = [
        InputSpec(100, 1000, STANDARD_LEADS, "NCT", "zscore", "float32"),
        InputSpec(250, None, STANDARD_LEADS[:6], "NTC", "none", "float64"),
    ]
    per_batch = 32 * 12 * 1000 * 4 + 32 * 6 * 2500 * 8  # bytes of both prepared inputs of a full batch
    calls: list[InputSpec] = []
    original = rank_module.prepare

    def counted(signals, sampling_rate, leads, spec):
        calls.append(spec)
        return original(signals, sampling_rate, leads, spec)

    monkeypatch.setattr(rank_module, "prepare", counted)
    prefetch = _Prefetch(target.batches(32), budget=1 << 40, prepare_budget=int(budget_batches * per_batch))
    prefetch.prepare_ahead(lambda batch: specs, workers=workers)
    deadline = time.monotonic() + 30
    while len(calls) < expected_ahead * len(specs) and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.2)  # would it prepare more than the budget allows?
    assert len(calls) == expected_ahead * len(specs)  # nothing consumed yet
    batches = 0
    for batch, prepared in prefetch:
        assert set(prepared) == set(specs)
        for spec in specs:
            inline = original(batch.signals, batch.sampling_rate, batch.leads, spec)
            np.testing.assert_array_equal(prepared[spec].result(), inline)
        batches += 1
    assert len(calls) == batches * len(specs)  # each batch prepared once per spec, by the pool
    prefetch.close()
    assert not [thread.name for thread in threading.enumerate() if thread.name.startswith("melep-")]


def test_rank_scores_do_not_depend_on_preparing_ahead(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib

    from melep_cli.rank import _Prefetch

    rank_module = importlib.import_module("melep_cli.rank")
    pooled: list[int] = []
    original = rank_module._prepare_batch

    def counted(batch, spec):
        pooled.append(len(batch))
        return original(batch, spec)

    # The CinC records are at 500 Hz: every sample checkpoint's input is resampled, in several specs; batches of 4.
    monkeypatch.setattr(rank_module, "_prepare_batch", counted)
    ahead = rank([CHECKPOINTS], CINC, min_positives=2, batch_size=4)
    assert sum(pooled) >= len(ahead.outcomes) // 2 * ahead.target.records  # most inputs came from the pool
    monkeypatch.setattr(_Prefetch, "prepare_ahead", lambda self, specs_for, workers: None)
    inline = rank([CHECKPOINTS], CINC, min_positives=2, batch_size=4)
    assert [o.name for o in ahead.outcomes] == [o.name for o in inline.outcomes]
    for first, second in zip(ahead.outcomes, inline.outcomes):
        assert first.status == second.status == "ok", (first.error, second.error)
        assert first.melep == second.melep
        np.testing.assert_array_equal(first.result.per_label, second.result.per_label)


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


def test_onnx_checkpoints_load_while_the_target_opens_and_torchscript_ones_after(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """ONNX checkpoints load first, the first of them before open_target returns; TorchScript ones, which hold the
    GIL while loading, start once the target is open; the outcomes are those of a run left alone."""
    import importlib
    import threading

    rank_module = importlib.import_module("melep_cli.rank")
    onnx_loading, target_open = threading.Event(), threading.Event()
    started: list[tuple[str, bool]] = []
    original_load, original_open = rank_module._load, rank_module.open_target

    def load(path, name, **options):
        started.append((path.suffix, target_open.is_set()))
        if path.suffix == ".onnx":
            onnx_loading.set()
        return original_load(path, name, **options)

    def open_target_after_loading_started(path, **options):
        assert onnx_loading.wait(timeout=30), "no ONNX checkpoint started loading while the target opened"
        opened = original_open(path, **options)
        target_open.set()
        return opened

    monkeypatch.setattr(rank_module, "_load", load)
    monkeypatch.setattr(rank_module, "open_target", open_target_after_loading_started)
    overlapped = rank([CHECKPOINTS], TARGET)
    assert started[0] == (".onnx", False)
    assert [suffix for suffix, _ in started] == [".onnx", ".onnx", ".pt", ".pt", ".ts"]  # ONNX first, then in order
    assert all(opened for suffix, opened in started[2:]), started
    monkeypatch.undo()
    sequential = rank([CHECKPOINTS], TARGET)
    assert [(o.name, o.status, o.melep) for o in overlapped.outcomes] == [
        (o.name, o.status, o.melep) for o in sequential.outcomes
    ]


def test_a_bad_target_is_reported_without_waiting_for_a_checkpoint_to_load(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import importlib
    import threading

    from melep_cli import TargetError

    rank_module = importlib.import_module("melep_cli.rank")
    release, loads = threading.Event(), []
    original = rank_module._load

    def slow_load(path, name, **options):  # a model that takes long to load
        loads.append(name)
        release.wait(timeout=60)
        return original(path, name, **options)

    monkeypatch.setattr(rank_module, "_load", slow_load)
    try:
        with pytest.raises(TargetError, match=r"missing\.h5"):
            rank([CHECKPOINTS], tmp_path / "missing.h5")
        assert not release.is_set()  # raised while the first load was still under way
    finally:
        release.set()
    for thread in threading.enumerate():
        if thread.name == "melep-load":
            thread.join(timeout=60)
    assert len(loads) == 1  # the loads not started were dropped


def test_an_option_no_checkpoint_can_take_stops_the_run_from_the_loading_thread(tmp_path: Path) -> None:
    from melep_cli import UsageError

    with pytest.raises(UsageError, match="--device"):
        rank([CHECKPOINTS], TARGET, device="tpu")


def test_an_unexpected_error_in_the_loading_thread_is_raised_not_waited_for(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib
    import threading

    rank_module = importlib.import_module("melep_cli.rank")

    def broken_import(checkpoint_format):
        raise RuntimeError("broken runtime")

    monkeypatch.setattr(rank_module, "_import_runtime", broken_import)
    raised: list[BaseException] = []

    def ranked() -> None:
        try:
            rank([CHECKPOINTS], TARGET)
        except BaseException as error:
            raised.append(error)

    worker = threading.Thread(target=ranked, daemon=True)
    worker.start()
    worker.join(timeout=60)
    assert not worker.is_alive(), "rank waited for a loading thread that had died"
    assert len(raised) == 1 and isinstance(raised[0], RuntimeError) and "broken runtime" in str(raised[0])
