"""The Ray executor (`--executor ray`): the same scores and store entries as the local executor, bit for bit;
failures on the workers as error rows; Ctrl-C; a cached rank never starts Ray.

The first tests run the CLI in subprocesses that start (or find) their own local Ray; the later ones share one
local Ray started here (`ray.init(num_cpus=2)`), whose worker processes get a setup hook that makes some
checkpoints' processes die inside the forward pass (`os._exit`), as a crashed worker would.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import h5py
import numpy as np
import pytest

from melep_cli import TargetError, TargetOptions, forward
from melep_cli.cli import run
from melep_cli.executors import RayOptions

ray = pytest.importorskip("ray", reason="ray is not installed: pip install -e '.[ray]' runs these tests")

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "sample_data"
CHECKPOINTS = SAMPLE / "checkpoints"
TARGET = SAMPLE / "ptbxl_target.h5"
GOOD = [CHECKPOINTS / "ptbxl_superclass_resnet1d.onnx", CHECKPOINTS / "ptbxl_form_resnet1d.pt"]


def _environment() -> dict[str, str]:
    """A child's environment: this test's cache ($MELEP_CACHE), this checkout, no Ray address given."""
    return {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "RAY_ADDRESS": ""}


def _scores(document: dict) -> str:
    """What a user compares between two rankings: each checkpoint's status, scores, intervals and rank, as JSON
    text (a NaN score equals itself there)."""
    fields = ("rank", "status", "melep", "ci", "p_best", "diff_ci", "tied_with_best", "per_label", "scores")
    rows = {row["checkpoint"]: {name: row.get(name) for name in fields} for row in document["results"]}
    return json.dumps(rows, sort_keys=True)


def _local_json(capsys: pytest.CaptureFixture[str], checkpoints: list[Path] | Path, *extra: str) -> dict:
    paths = checkpoints if isinstance(checkpoints, list) else [checkpoints]
    argv = ["rank", *(item for path in paths for item in ("-c", str(path))), "-t", str(TARGET), "-f", "json"]
    run([*argv, "--no-cache", *extra])
    return json.loads(capsys.readouterr().out)


def _entries(cache: Path) -> dict[str, dict]:
    """The store's entries by checkpoint file: datasets and attributes (but when they were made, in how long)."""
    entries = {}
    for path in sorted((cache / "outputs").glob("*.h5")):
        with h5py.File(path, "r") as handle:
            attributes = {key: handle.attrs[key] for key in handle.attrs if key not in ("seconds", "created")}
            datasets = {key: handle[key][()] for key in handle}
        entries[Path(str(attributes["checkpoint_path"])).name] = {"attributes": attributes, "datasets": datasets}
    return entries


# ----- the CLI in fresh processes, no Ray running: it starts a local one, stops it, and a cached rank needs none
_CHILD = """
import json, sys, threading
from melep_cli.cli import run
code = run(sys.argv[1:])
import ray
print(json.dumps({"code": code, "threads": [t.name for t in threading.enumerate()],
                  "ray_connected": ray.is_initialized()}), file=sys.stderr)
"""


def test_a_ray_rank_starts_a_local_ray_and_gives_the_local_scores_and_entries(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], _own_cache: Path
) -> None:
    ray_cache = tmp_path / "ray-cache"
    argv = ["rank", "-c", str(CHECKPOINTS), "-t", str(TARGET), "--executor", "ray", "-f", "json"]
    child = subprocess.run(
        [sys.executable, "-c", _CHILD, *argv, "--cache", str(ray_cache), "--shard-records", "100"],
        capture_output=True,
        text=True,
        env=_environment(),
        timeout=300,
        check=False,
    )
    report = json.loads(child.stderr.strip().splitlines()[-1])
    assert report["code"] == 0, child.stderr
    assert "starting a local Ray with" in child.stderr
    assert report["threads"] == ["MainThread"], "no Ray thread outlives the command"
    assert not report["ray_connected"], "the local Ray it started is shut down"
    on_ray = json.loads(child.stdout)  # stdout holds the results alone (Ray's messages go to stderr)
    assert on_ray["forward_passes"] == 5
    # The local executor in the same environment (the bootstrap's last digits follow the BLAS threads).
    local = subprocess.run(
        [sys.executable, "-m", "melep_cli", *argv[:5], "-f", "json", "--cache", str(_own_cache)],
        capture_output=True,
        text=True,
        env=_environment(),
        timeout=300,
        check=True,
    )
    assert _scores(on_ray) == _scores(json.loads(local.stdout))  # bit for bit: the JSON floats are the same
    # The cluster's entries landed in the driver's cache, and are what the local executor stores.
    computed_here, computed_on_ray = _entries(_own_cache), _entries(ray_cache)
    assert sorted(computed_on_ray) == sorted(path.name for path in CHECKPOINTS.iterdir())
    assert computed_on_ray.keys() == computed_here.keys()
    for name, entry in computed_on_ray.items():
        assert entry["attributes"] == computed_here[name]["attributes"], name
        assert entry["datasets"].keys() == computed_here[name]["datasets"].keys()
        for key, values in entry["datasets"].items():
            assert np.array_equal(values, computed_here[name]["datasets"][key]), (name, key)
    run(["rank", "-c", str(CHECKPOINTS), "-t", str(TARGET), "-f", "json", "--cache", str(ray_cache)])
    assert json.loads(capsys.readouterr().out)["forward_passes"] == 0  # a local rank reads them back


def test_a_rank_whose_outputs_are_all_cached_never_starts_ray(
    capsys: pytest.CaptureFixture[str], _own_cache: Path
) -> None:
    argv = ["rank", "-c", str(GOOD[0]), "-c", str(GOOD[1]), "-t", str(TARGET), "-f", "json", "--bootstrap", "0"]
    run(argv)  # fills the cache, locally
    first = json.loads(capsys.readouterr().out)
    probe = "import sys; from melep_cli.cli import run; code = run(sys.argv[1:]); print(code, 'ray' in sys.modules)"
    argv += ["--executor", "ray"]
    for _ in range(2):
        child = subprocess.run(
            [sys.executable, "-c", probe, *argv], capture_output=True, text=True, env=_environment(), timeout=120
        )
        document, _, status = child.stdout.rpartition("}")
        assert status.split() == ["0", "False"], child.stderr  # exit 0, ray never imported
        assert "Ray" not in child.stderr
        cached = json.loads(document + "}")
        assert cached["forward_passes"] == 0 and _scores(cached) == _scores(first)


# Ctrl-C: the real CLI in a process with its own local Ray, whose workers announce the forward pass and then
# block in it; SIGINT must cancel the Ray work and exit 130 without output.
_INTERRUPTED_CHILD = """
import sys
from pathlib import Path
import ray

started = Path(sys.argv[1])

def block_in_the_forward_pass():
    import time
    import melep_cli.checkpoints.checkpoint as module
    def predict_outputs(self, *args, **kwargs):
        started.touch()
        time.sleep(600)
    module.Checkpoint.predict_outputs = predict_outputs

ray.init(num_cpus=2, log_to_driver=False, include_dashboard=False,
         runtime_env={"worker_process_setup_hook": block_in_the_forward_pass})
from melep_cli.cli import run
code = run(sys.argv[2:])
ray.shutdown()
sys.exit(code)
"""


@pytest.mark.parametrize("attempt", range(2))
def test_ctrl_c_cancels_the_ray_work_and_exits_130(tmp_path: Path, attempt: int) -> None:
    started, output = tmp_path / "forward-pass-started", tmp_path / "out" / "ranking.json"
    output.parent.mkdir()
    argv = ["rank", "-c", str(CHECKPOINTS), "-t", str(TARGET), "--executor", "ray", "-f", "json", "-o", str(output)]
    child = subprocess.Popen(
        [sys.executable, "-c", _INTERRUPTED_CHILD, str(started), *argv, "--quiet"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_environment(),
    )
    try:
        deadline = time.monotonic() + 120
        while not started.exists() and child.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert started.exists(), "the forward pass never started on a worker"
        child.send_signal(signal.SIGINT)
        out, err = child.communicate(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == 130, err
    assert "melep: error: interrupted" in err
    assert out == ""
    assert list(output.parent.iterdir()) == [], "no output file, no temporary file"


def test_a_cluster_address_that_does_not_answer_is_one_line_error(capsys: pytest.CaptureFixture[str]) -> None:
    """Before `ray.init`, which would retry it for minutes (here no Ray is connected yet)."""
    assert not ray.is_initialized()
    for _ in range(2):
        argv = ["rank", "-c", str(GOOD[0]), "-t", str(TARGET), "--executor", "ray", "--ray-address", "127.0.0.1:1"]
        code = run(argv)
        err = capsys.readouterr().err
        assert code == 2 and err.count("\n") == 1, err
        assert err.startswith("melep: error: --ray-address: cannot connect to the Ray cluster at 127.0.0.1:1"), err
    assert not ray.is_initialized()


def test_an_adaptive_cli_rank_on_ray_starts_one_local_ray_for_all_its_looks(tmp_path: Path) -> None:
    argv = ["rank", "-c", str(CHECKPOINTS), "-t", str(TARGET), "--adaptive", "--no-cache", "-f", "json"]
    child = subprocess.run(
        [sys.executable, "-c", _CHILD, *argv, "--executor", "ray", "--shard-records", "64"],
        capture_output=True,
        text=True,
        env=_environment(),
        timeout=300,
        check=False,
    )
    report = json.loads(child.stderr.strip().splitlines()[-1])
    assert report["code"] == 0, child.stderr
    assert child.stderr.count("starting a local Ray with") == 1, child.stderr
    assert report["threads"] == ["MainThread"] and not report["ray_connected"]
    on_ray = json.loads(child.stdout)
    assert len(on_ray["adaptive"]["looks"]) > 1  # several looks, one Ray
    local = subprocess.run(
        [sys.executable, "-m", "melep_cli", *argv],
        capture_output=True,
        text=True,
        env=_environment(),
        timeout=300,
        check=True,
    )
    expected = json.loads(local.stdout)
    assert _scores(on_ray) == _scores(expected)
    assert on_ray["adaptive"]["records_forwarded"] == expected["adaptive"]["records_forwarded"]
    decided = [(row["checkpoint"], row["records"], row["stop_reason"]) for row in on_ray["results"]]
    assert decided == [(row["checkpoint"], row["records"], row["stop_reason"]) for row in expected["results"]]


# ----- one local Ray for the rest, with worker processes that die in some checkpoints' forward passes ----------
@pytest.fixture(scope="module")
def local_ray(tmp_path_factory: pytest.TempPathFactory):
    """A local Ray with 2 CPUs. Its workers die (os._exit) in the forward pass of checkpoints named dies_always*,
    and of those named dies_once* the first time only (a marker file remembers it)."""
    markers = tmp_path_factory.mktemp("markers")

    def die_in_some_forward_passes() -> None:
        import melep_cli.checkpoints.checkpoint as module

        original = module.Checkpoint.predict_outputs

        def predict_outputs(self, *args, **kwargs):
            if self.name.startswith("dies_always"):
                os._exit(1)
            marker = markers / self.name
            if self.name.startswith("dies_once") and not marker.exists():
                marker.touch()
                os._exit(1)
            return original(self, *args, **kwargs)

        module.Checkpoint.predict_outputs = predict_outputs

    ray.init(
        num_cpus=2,
        log_to_driver=False,
        include_dashboard=False,
        runtime_env={"worker_process_setup_hook": die_in_some_forward_passes},
    )
    yield
    ray.shutdown()


def _raises_on_short_batches(path: Path) -> Path:
    """A real TorchScript model that raises inside its forward pass on batches of 2 to 31 records: on this
    target's last, short batch (300 records, batches of 32), after its other batches ran."""
    import torch

    class RaisesOnShortBatches(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.head = torch.nn.Linear(12, 5)

        def forward(self, ecg: torch.Tensor) -> torch.Tensor:
            if ecg.shape[0] > 1 and ecg.shape[0] < 32:
                raise RuntimeError("this model cannot run short batches")
            return self.head(ecg.mean(dim=2))

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.script(RaisesOnShortBatches().eval()), str(path))
    return path


def test_checkpoints_that_fail_on_workers_are_error_rows_and_the_others_are_ranked(
    local_ray, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    for path in GOOD:
        shutil.copy(path, folder / path.name)
    (folder / "broken.onnx").write_bytes(b"not an ONNX model at all")
    _raises_on_short_batches(folder / "raises_in_forward.pt")
    shutil.copy(GOOD[0], folder / "dies_always.onnx")
    shutil.copy(GOOD[0], folder / "dies_once.onnx")
    # To a file: Ray prints its cluster's messages (a worker died) on stdout when the caller started it, as here.
    output = tmp_path / "ranking.json"
    argv = [
        "rank",
        "-c",
        str(folder),
        "-t",
        str(TARGET),
        "--executor",
        "ray",
        "--shard-records",
        "64",
        "-o",
        str(output),
    ]
    code = run(argv)
    captured = capsys.readouterr()
    assert code == 1, captured.err  # some checkpoints failed, the others are ranked
    rows = {row["checkpoint"]: row for row in json.loads(output.read_text())["results"]}
    failed = {name for name, row in rows.items() if row["status"] != "ok"}
    assert failed == {"broken", "raises_in_forward", "dies_always"}
    assert "cannot run short batches" in rows["raises_in_forward"]["error"]
    assert "Ray worker died" in rows["dies_always"]["error"]
    assert "broken.onnx" in rows["broken"]["error"]
    for name in ("broken", "raises_in_forward", "dies_always"):
        assert rows[name]["error"] in captured.err, "each failure is a warning on stderr too"
    # The others are ranked with the scores the local executor gives them; dies_once was retried on a new worker.
    local = {row["checkpoint"]: row for row in _local_json(capsys, GOOD)["results"]}
    for path in GOOD:
        assert rows[path.stem]["melep"] == local[path.stem]["melep"]
        assert rows[path.stem]["scores"]["melep"]["value"] == local[path.stem]["melep"]
    assert rows["dies_once"]["status"] == "ok" and rows["dies_once"]["melep"] == local[GOOD[0].stem]["melep"]


def test_shards_are_merged_in_record_order_with_the_local_outputs_bit_for_bit(local_ray) -> None:
    local = forward(GOOD, TARGET, cache=None)
    for shard_records in (40, 300, 1000):  # 64-record shards (rounded up to the batch), one shard, one short one
        on_ray = forward(GOOD, TARGET, cache=None, executor="ray", ray_options=RayOptions(shard_records=shard_records))
        assert on_ray.decoded == local.decoded == 300
        for here, there in zip(local.results, on_ray.results):
            assert there.status == "ok" and not there.cached
            assert there.record_ids == here.record_ids
            assert there.outputs.dtype == here.outputs.dtype and np.array_equal(there.outputs, here.outputs)
            assert (there.features is None) == (here.features is None)
            if here.features is not None:
                assert np.array_equal(there.features, here.features)
            assert (there.activation, there.source_labels, there.input_specs) == (
                here.activation,
                here.source_labels,
                here.input_specs,
            )


def test_records_skipped_on_the_workers_are_the_local_skips_and_strict_mode_is_one_target_error(
    local_ray, tmp_path: Path
) -> None:
    """A record with NaN and a flat one, in different shards: skipped alike; with strict=True, one TargetError."""
    target = tmp_path / "target.h5"
    shutil.copy(TARGET, target)
    with h5py.File(target, "r+") as handle:
        handle["signals"][70] = np.nan
        handle["signals"][200] = 0.0
    options = RayOptions(shard_records=64)
    local = forward(GOOD, target, cache=None)
    on_ray = forward(GOOD, target, cache=None, executor="ray", ray_options=options)
    assert len(local.skipped) == 2 and on_ray.skipped == local.skipped
    assert on_ray.decoded == local.decoded == 298
    for here, there in zip(local.results, on_ray.results):
        assert there.record_ids == here.record_ids and np.array_equal(there.outputs, here.outputs)
    with pytest.raises(TargetError, match="strict mode") as raised:
        forward(
            GOOD, target, cache=None, executor="ray", ray_options=options, target_options=TargetOptions(strict=True)
        )
    assert str(raised.value).count("\n") == 0 and local.skipped[0][0] in str(raised.value)


# ----- options ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("arguments", "flag"),
    [
        (["--executor", "ray", "--gpus-per-checkpoint", "-1"], "--gpus-per-checkpoint"),
        (["--executor", "ray", "--cpus-per-checkpoint", "0"], "--cpus-per-checkpoint"),
        (["--executor", "ray", "--shard-records", "0"], "--shard-records"),
        (["--ray-address", "localhost:1"], "--executor"),  # Ray options with the local executor
    ],
)
def test_bad_ray_options_are_one_line_errors_naming_the_flag(
    capsys: pytest.CaptureFixture[str], arguments: list[str], flag: str
) -> None:
    for command in ("rank", "forward"):
        code = run([command, "-c", str(GOOD[0]), "-t", str(TARGET), *arguments])
        err = capsys.readouterr().err
        assert code == 2 and err.count("\n") == 1 and err.startswith(f"melep: error: {flag}: "), err


def test_without_ray_installed_the_ray_executor_says_how_to_install_it(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    code = run(["rank", "-c", str(GOOD[0]), "-t", str(TARGET), "--executor", "ray", "--no-cache"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, err
    assert "pip install 'melep-cli[ray]'" in err and "Traceback" not in err


def test_an_adaptive_rank_on_ray_decides_as_the_local_one_and_completes_its_entries(local_ray, tmp_path: Path) -> None:
    """--adaptive through the Ray executor: the same records, decisions and scores as locally, look after look;
    its partial entries are completed by a full rank on Ray that runs only the records they lack."""
    import melep_cli
    from melep_cli import AdaptiveSettings

    settings = AdaptiveSettings(seed=5)
    local = melep_cli.rank([CHECKPOINTS], TARGET, cache=None, adaptive=settings)
    store = tmp_path / "store"
    options = RayOptions(shard_records=64)
    on_ray = melep_cli.rank([CHECKPOINTS], TARGET, cache=store, adaptive=settings, executor="ray", ray_options=options)
    assert on_ray.adaptive.records_forwarded == local.adaptive.records_forwarded < local.adaptive.records_full
    assert [(o.name, o.records, o.value, o.stop, o.rank) for o in on_ray.outcomes] == [
        (o.name, o.records, o.value, o.stop, o.rank) for o in local.outcomes
    ]
    used = {outcome.name: outcome.records for outcome in on_ray.outcomes}
    full = melep_cli.forward([CHECKPOINTS], TARGET, cache=store, executor="ray", ray_options=options)
    assert {result.name: result.forwarded for result in full.results} == {name: 300 - n for name, n in used.items()}
    fresh = forward([CHECKPOINTS], TARGET, cache=None)
    for completed, here in zip(full.results, fresh.results):
        assert completed.record_ids == here.record_ids
        assert np.array_equal(completed.outputs, here.outputs)
