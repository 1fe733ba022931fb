"""`ray`: the forward stage on Ray against the local executor, on this machine.

Eight checkpoints (the five of `sample_data/`, and three of them again under other names: eight forward passes)
over the first 1024 PTB-XL records (100 Hz, converted to HDF5 once, not timed), with the outputs store off, in
this process through `melep_cli.forward(...)`:

- `local`: the default executor (every core for each forward pass in turn), and with `threads=1`;
- `ray`: `executor="ray"` on a local Ray of 2 CPUs started once beforehand (its start-up timed apart), one
  single-threaded actor per checkpoint, so two at a time, in shards of 1024 records (one per checkpoint);
- `ray, 32-record shards`: the same in shards of 32 (32 per checkpoint): the cost of a shard.

The overhead per checkpoint is the Ray run minus the local one on 32 records (one shard, where model work is
small), per checkpoint; the overhead per shard is what 31 more shards per checkpoint cost, per shard call, on one
actor (wall time times the 2 actors running at once). Outputs are checked equal to the local ones bit for bit.
No GPU figure: no device machine was lent when this was measured (one actor per GPU would be
`RayOptions(gpus_per_checkpoint=1)`).

    python benchmarks/run_all.py --only ray [--quick]   # --quick: 256 records, 1 round
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import _common
import numpy as np

import melep_cli
from melep_cli.executors import RayOptions

RECORDS, QUICK_RECORDS = 1024, 256
SMALL = 32
ACTORS = 2
LOCAL, RAY, RAY_SMALL_SHARDS = "local", "ray (1 shard per checkpoint)", "ray (32-record shards)"
LOCAL_ONE_THREAD = "local, threads=1"
LOCAL_SMALL, RAY_SMALL = "local, 32 records", "ray, 32 records"


def _checkpoints(directory: Path) -> list[Path]:
    """The five sample checkpoints and three of them again, renamed: eight files, eight forward passes."""
    sample = sorted((_common.SAMPLE_DIR / "checkpoints").iterdir())
    paths = []
    for path in sample:
        paths.append(shutil.copy(path, directory / path.name))
    for path in sample[:3]:
        paths.append(shutil.copy(path, directory / f"again_{path.name}"))
    return [Path(path) for path in paths]


def _target(count: int, directory: Path) -> Path:
    """The first `count` PTB-XL records at 100 Hz as one HDF5 file."""
    output = directory / "ptbxl.h5"
    melep_cli.convert(_common.ptbxl_subset(count, directory / "ptbxl"), output)
    return output


def run(quick: bool = False) -> dict[str, Any]:
    missing = _common.missing_ptbxl()
    if missing is not None:
        return missing
    try:
        import ray
    except ImportError:
        return _common.skipped("ray is not installed (pip install -e '.[ray]')")
    records, rounds = (QUICK_RECORDS, 1) if quick else (RECORDS, 2)
    with tempfile.TemporaryDirectory(prefix="melep-bench-ray-") as scratch:
        scratch_dir = Path(scratch)
        checkpoints = _checkpoints(scratch_dir)
        target = _target(records, scratch_dir)
        started = time.perf_counter()
        ray.init(num_cpus=ACTORS, log_to_driver=False, include_dashboard=False)
        ray_start = time.perf_counter() - started
        outputs: dict[str, list[np.ndarray]] = {}

        def forward(name: str, path: Path, **options: Any):
            def call() -> None:
                report = melep_cli.forward(checkpoints, path, cache=None, **options)
                failed = [result.error for result in report.results if result.status != "ok"]
                if failed:
                    raise RuntimeError(f"{name}: " + "; ".join(str(error) for error in failed))
                outputs[name] = [result.outputs for result in report.results]

            return call

        small_target = scratch_dir / "small.h5"
        melep_cli.convert(_common.ptbxl_subset(SMALL, scratch_dir / "ptbxl-small"), small_target)
        try:
            times = _common.round_robin(
                {
                    LOCAL: forward(LOCAL, target),
                    LOCAL_ONE_THREAD: forward(LOCAL_ONE_THREAD, target, threads=1),
                    RAY: forward(RAY, target, executor="ray", ray_options=RayOptions(shard_records=records)),
                    RAY_SMALL_SHARDS: forward(
                        RAY_SMALL_SHARDS, target, executor="ray", ray_options=RayOptions(shard_records=SMALL)
                    ),
                    LOCAL_SMALL: forward(LOCAL_SMALL, small_target),
                    RAY_SMALL: forward(RAY_SMALL, small_target, executor="ray"),
                },
                rounds,
            )
        finally:
            ray.shutdown()
        for name in (RAY, RAY_SMALL_SHARDS):
            if not all(np.array_equal(a, b) for a, b in zip(outputs[name], outputs[LOCAL])):
                raise RuntimeError(f"{name}: outputs differ from the local executor's")
        results = {
            name: _common.summary(values, records if "32 records" not in name else SMALL)
            for name, values in times.items()
        }
    median = {name: result["median_s"] for name, result in results.items()}
    checkpoints_count = len(checkpoints)
    shard_calls = checkpoints_count * (records // SMALL - 1)
    payload = {
        "checkpoints": checkpoints_count,
        "records": records,
        "actors": ACTORS,
        "ray_start_s": ray_start,
        "results": results,
        "ray_over_local": median[RAY] / median[LOCAL],
        "ray_over_local_one_thread": median[RAY] / median[LOCAL_ONE_THREAD],
        "ray_small_shards_over_local": median[RAY_SMALL_SHARDS] / median[LOCAL],
        "overhead_per_checkpoint_s": (median[RAY_SMALL] - median[LOCAL_SMALL]) / checkpoints_count,
        "overhead_per_shard_s": (median[RAY_SMALL_SHARDS] - median[RAY]) * ACTORS / shard_calls
        if shard_calls
        else None,
        "outputs_equal_to_local": True,
        "gpu": "not measured: no device machine was lent for this run",
    }
    return _common.write_results("ray", payload, quick=quick)


def figures(document: dict[str, Any]) -> list[str]:
    results = document["results"]
    rows = [
        [
            name,
            f"{result['median_s']:.2f}",
            f"{result['records_per_s']:.0f}",
            f"{result['median_s'] / results[LOCAL if '32 records' not in name else LOCAL_SMALL]['median_s']:.2f}",
        ]
        for name, result in results.items()
    ]
    lines = [
        f"{document['checkpoints']} checkpoints, {document['records']} PTB-XL records (HDF5), "
        f"{document['actors']} single-threaded Ray actors on a local Ray (start-up {document['ray_start_s']:.1f} s, "
        "not in the times):",
        "",
        *_common.table(["executor", "median s", "records/s", "vs local"], rows),
        "",
        f"Ray / local: {document['ray_over_local']:.2f} (/ local with threads=1: "
        f"{document['ray_over_local_one_thread']:.2f}); overhead per checkpoint "
        f"{document['overhead_per_checkpoint_s']:.2f} s; "
        f"per shard call {document['overhead_per_shard_s'] * 1000:.0f} ms. "
        "Outputs equal to the local executor's bit for bit. GPU: not measured (no device machine lent).",
    ]
    return lines
