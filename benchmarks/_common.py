"""Shared pieces of the benchmark scripts: machine description, timing, real ECG input, results.

Every figure the benchmarks report is a ratio of two timings taken in the same run on the same
machine; absolute times are written beside the ratios for context only.
"""

from __future__ import annotations

import atexit
import csv
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

BENCHMARKS_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCHMARKS_DIR.parent
RESULTS_DIR = BENCHMARKS_DIR / "results"
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"
PTBXL_DIR = SHARED_DATA / "ptbxl"

# The scripts run as `python benchmarks/<name>.py`: make this checkout's melep_cli the one imported.
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

# melep's outputs store defaults to $MELEP_CACHE, else ~/.cache/melep. Every benchmark passes `cache=None`,
# `--no-cache` or a scratch directory of its own; this process and its children (which inherit the variable)
# still never read or fill the user's cache: the default is a scratch directory removed at exit.
_SCRATCH_CACHE = tempfile.mkdtemp(prefix="melep-bench-cache-")
atexit.register(shutil.rmtree, _SCRATCH_CACHE, ignore_errors=True)
os.environ["MELEP_CACHE"] = _SCRATCH_CACHE


def physical_cores() -> int:
    """Physical cores usable by this process (hyper-threads not counted), from /proc/cpuinfo."""
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return usable
    cores: set[tuple[str, str]] = set()
    physical_id = core_id = ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key, value = key.strip(), value.strip()
        if key == "physical id":
            physical_id = value
        elif key == "core id":
            core_id = value
        elif not key and (physical_id or core_id):
            cores.add((physical_id, core_id))
            physical_id = core_id = ""
    if physical_id or core_id:
        cores.add((physical_id, core_id))
    return max(1, min(usable, len(cores) or usable))


def cpu_model() -> str:
    """The CPU's marketing name from /proc/cpuinfo (platform.processor() elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_description() -> dict[str, Any]:
    """What the numbers were measured on, written into every results file."""
    import torch

    description: dict[str, Any] = {
        "cpu": cpu_model(),
        "logical_cpus": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "physical_cores": physical_cores(),
        "memory_gib": _memory_gib(),
        "load_average_at_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    try:
        import onnxruntime

        description["onnxruntime"] = onnxruntime.__version__
        description["onnxruntime_providers"] = onnxruntime.get_available_providers()
    except ImportError:
        description["onnxruntime"] = None
    return description


def _memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


def time_call(
    function: Callable[[], object], *, repeats: int, warmup: int = 1, sync: Callable[[], None] | None = None
) -> dict[str, Any]:
    """Median (and min/max) seconds of `repeats` calls after `warmup` untimed ones."""
    for _ in range(warmup):
        function()
        if sync:
            sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        if sync:
            sync()
        times.append(time.perf_counter() - start)
    return {
        "median_s": statistics.median(times),
        "min_s": min(times),
        "max_s": max(times),
        "repeats": repeats,
        "warmup": warmup,
    }


def load_ptbxl_signals(count: int, *, samples: int = 1000) -> tuple[np.ndarray, str]:
    """`count` PTB-XL 100 Hz records as float32 (count, 12, samples) in mV, and where they came from.

    Records are repeated when `count` exceeds what is on disk. Without the shared data the
    benchmark still runs, on random data, and the returned description says so.
    """
    records_dir = PTBXL_DIR / "records100"
    headers = sorted(records_dir.glob("*/*.hea")) if records_dir.is_dir() else []
    if not headers:
        rng = np.random.default_rng(0)
        signals = rng.standard_normal((count, 12, samples), dtype=np.float32) * np.float32(0.3)
        return signals, f"random N(0, 0.3 mV) data: PTB-XL records not found at {records_dir}"
    import wfdb

    unique = min(count, len(headers))
    decoded = np.zeros((unique, 12, samples), dtype=np.float32)
    for index, header in enumerate(headers[:unique]):
        values, _ = wfdb.rdsamp(str(header.with_suffix("")))
        length = min(samples, values.shape[0])
        decoded[index, :, :length] = np.nan_to_num(values[:length].T)
    signals = decoded[np.arange(count) % unique]
    return signals, f"PTB-XL 100 Hz records from {records_dir} ({unique} distinct records, repeated to {count})"


def write_results(name: str, payload: dict[str, Any]) -> Path:
    """Write `benchmarks/results/<name>.json` (machine description added) and return its path."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    document = {"benchmark": name, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **payload}
    document.setdefault("machine", machine_description())
    path.write_text(json.dumps(document, indent=2, default=_json_default) + "\n")
    return path


def _json_default(value: object) -> object:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


NOISE_NOTE = (
    "Timings are noisy: the machine may be shared with other processes (see load_average_at_start). "
    "Compare ratios taken in the same run, not absolute times across runs."
)


def ptbxl_subset(count: int, directory: Path) -> Path:
    """A PTB-XL tree holding the first `count` records of the shared PTB-XL (CSV rows kept, records100 and
    records500 linked: the first 500 rows have 500 Hz files too).

    The same records, in the same order, as `naive_baseline.ptbxl_target(PTBXL_DIR, count)`.
    """
    source = PTBXL_DIR
    directory.mkdir(parents=True, exist_ok=True)
    shutil.copy(source / "scp_statements.csv", directory / "scp_statements.csv")
    for records in ("records100", "records500"):
        if (source / records).is_dir():
            (directory / records).symlink_to(source / records)
    with (source / "ptbxl_database.csv").open(newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader)
        rows = [row for _, row in zip(range(count), reader)]
    with (directory / "ptbxl_database.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return directory


def package_at(revision: str, directory: Path) -> Path:
    """melep_cli as it was at git `revision`, extracted into `directory` (to put on PYTHONPATH)."""
    directory.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(
        ["git", "-C", str(REPO_ROOT), "archive", revision, "melep_cli"], capture_output=True, check=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(directory)], input=archive, check=True)
    return directory


def run_child(
    code: str, tree: Path, arguments: Sequence[str], workdir: Path, *, limit_threads: bool = True
) -> dict[str, Any]:
    """Run `code` in a fresh interpreter importing melep_cli from `tree`; its last stdout line as JSON.

    `limit_threads`: OMP_NUM_THREADS=1 (decoding benchmarks); False leaves the threads to the child (whole ranks).
    A result naming the `package` it imported must have imported the one under `tree`.
    """
    environment = {**os.environ, "PYTHONPATH": str(tree)}
    if limit_threads:
        environment["OMP_NUM_THREADS"] = "1"
    completed = subprocess.run(
        [sys.executable, "-c", code, *arguments], cwd=workdir, env=environment, capture_output=True, text=True
    )
    if completed.returncode != 0:
        raise RuntimeError(f"child process failed:\n{completed.stderr}")
    result = json.loads(completed.stdout.strip().splitlines()[-1])
    if "package" in result and not Path(result["package"]).resolve().is_relative_to(tree.resolve()):
        raise RuntimeError(f"child imported {result['package']}, not the package under {tree}")
    return result
