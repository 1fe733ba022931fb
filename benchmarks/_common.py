"""Shared pieces of the benchmarks: the machine, round-robin timing, real ECG input, the paper's models, results.

Every figure is a ratio of two timings taken in the same run on the same machine (configurations timed
round-robin, medians of the rounds); absolute times are written beside them for context only.
"""

from __future__ import annotations

import atexit
import contextlib
import csv
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

BENCHMARKS_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCHMARKS_DIR.parent
RESULTS_DIR = BENCHMARKS_DIR / "results"
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"
PTBXL_DIR = SHARED_DATA / "ptbxl"
CINC_DIR = SHARED_DATA / "cinc2021"
SAMPLE_DIR = REPO_ROOT / "sample_data"

# `python benchmarks/<name>.py` imports this checkout's melep_cli, and so do the CLI processes started here.
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))
ENVIRONMENT = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}

# Every timed rank passes cache=None / --no-cache or a scratch directory of its own; whatever else runs here (and in
# child processes, which inherit the variable) never reads or fills the user's outputs store either.
_SCRATCH_CACHE = tempfile.mkdtemp(prefix="melep-bench-cache-")
atexit.register(shutil.rmtree, _SCRATCH_CACHE, ignore_errors=True)
os.environ["MELEP_CACHE"] = ENVIRONMENT["MELEP_CACHE"] = _SCRATCH_CACHE

NOISE_NOTE = (
    "Timings are noisy: the machine may be shared with other processes (see load_average_at_start). "
    "Compare ratios taken in the same run, not absolute times across runs."
)


def melep_command(*arguments: str) -> list[str]:
    """The `melep` CLI as a fresh process (`python -m melep_cli`, what the `melep` script runs)."""
    return [sys.executable, "-m", "melep_cli", *arguments]


def skipped(reason: str) -> dict[str, Any]:
    """What a benchmark that cannot run here returns (run_all reports it as skipped, not failed)."""
    print(f"skipping: {reason}")
    return {"skipped": reason}


def missing_ptbxl() -> dict[str, Any] | None:
    """`skipped(...)` when the shared PTB-XL records are absent, else None."""
    if (PTBXL_DIR / "ptbxl_database.csv").is_file():
        return None
    return skipped(f"PTB-XL not found at {PTBXL_DIR}")


# ----- the machine ----------------------------------------------------------------------------------------------
def physical_cores() -> int:
    """Physical cores usable by this process (hyper-threads not counted), from /proc/cpuinfo."""
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return usable
    cores, physical_id = set(), ""
    for line in text.splitlines():
        key, _, value = (part.strip() for part in line.partition(":"))
        if key == "physical id":
            physical_id = value
        elif key == "core id":
            cores.add((physical_id, value))
    return max(1, min(usable, len(cores) or usable))


def machine_description() -> dict[str, Any]:
    """What the numbers were measured on, written into every results file."""
    import onnxruntime
    import torch

    info = {}
    for path in ("/proc/cpuinfo", "/proc/meminfo"):
        with contextlib.suppress(OSError):
            for line in reversed(Path(path).read_text().splitlines()):
                key, _, value = line.partition(":")
                info[key.strip()] = value.strip()
    return {
        "cpu": info.get("model name") or platform.processor() or platform.machine(),
        "logical_cpus": os.cpu_count(),
        "physical_cores": physical_cores(),
        "memory_gib": round(int(info["MemTotal"].split()[0]) / 2**20, 1) if "MemTotal" in info else None,
        "load_average_at_start": list(os.getloadavg()),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__,
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


# ----- timing ---------------------------------------------------------------------------------------------------
def round_robin(configurations: dict[str, Callable[[], Any]], rounds: int) -> dict[str, list[float]]:
    """Seconds of each configuration per round; each round starts one configuration later, so a burst of load
    from another process hits them alike and none always runs right after the same one."""
    names = list(configurations)
    times: dict[str, list[float]] = {name: [] for name in names}
    for round_index in range(rounds):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            start = time.perf_counter()
            configurations[name]()
            times[name].append(time.perf_counter() - start)
    return times


def summary(times: list[float], records: int) -> dict[str, Any]:
    """Median, min and max seconds of the rounds, and records per second."""
    median = statistics.median(times)
    return {
        "median_s": median,
        "min_s": min(times),
        "max_s": max(times),
        "records": records,
        "records_per_s": records / median,
        "records_per_s_best_round": records / min(times),
        "rounds": times,
    }


# ----- input and checkpoints --------------------------------------------------------------------------------------
def load_ptbxl_signals(count: int, *, samples: int = 1000) -> tuple[np.ndarray, str]:
    """`count` PTB-XL 100 Hz records as float32 (count, 12, samples) in mV (repeated when there are fewer on disk),
    and where they came from; random data, said so, without the shared data."""
    records_dir = PTBXL_DIR / "records100"
    headers = sorted(records_dir.glob("*/*.hea")) if records_dir.is_dir() else []
    if not headers:
        signals = np.random.default_rng(0).standard_normal((count, 12, samples), dtype=np.float32) * np.float32(0.3)
        return signals, f"random N(0, 0.3 mV) data: PTB-XL records not found at {records_dir}"
    import wfdb

    unique = min(count, len(headers))
    decoded = np.zeros((unique, 12, samples), dtype=np.float32)
    for index, header in enumerate(headers[:unique]):
        values, _ = wfdb.rdsamp(str(header.with_suffix("")))
        length = min(samples, values.shape[0])
        decoded[index, :, :length] = np.nan_to_num(values[:length].T)
    return decoded[np.arange(count) % unique], f"PTB-XL 100 Hz records from {records_dir} ({unique} distinct)"


def ptbxl_subset(count: int, directory: Path) -> Path:
    """A PTB-XL tree of the first `count` records of the shared PTB-XL (CSV rows copied, records100 and records500
    linked): the same records, in the same order, as `naive_baseline.ptbxl_target(PTBXL_DIR, count)`."""
    directory.mkdir(parents=True, exist_ok=True)
    shutil.copy(PTBXL_DIR / "scp_statements.csv", directory / "scp_statements.csv")
    for records in ("records100", "records500"):
        if (PTBXL_DIR / records).is_dir():
            (directory / records).symlink_to(PTBXL_DIR / records)
    with (
        (PTBXL_DIR / "ptbxl_database.csv").open(newline="") as source,
        (directory / "ptbxl_database.csv").open("w", newline="") as copy,
    ):
        reader, writer = csv.reader(source), csv.writer(copy)
        writer.writerow(next(reader))
        writer.writerows(row for _, row in zip(range(count), reader))
    return directory


def export_paper_models(names: tuple[str, ...], directory: Path, quick: bool) -> dict[str, dict[str, Any]]:
    """The paper's models (BatchNorm calibrated on PTB-XL) as TorchScript and ONNX checkpoints, with the modules."""
    import models
    import torch

    torch.set_num_threads(1)  # setup is not timed; one thread is never slow on a shared machine
    calibration = torch.from_numpy(load_ptbxl_signals(8 if quick else 32)[0])
    exported = {}
    for name in names:
        model = models.build(name, calibration=calibration)
        metadata = models.checkpoint_metadata(name, models.DEFAULT_OUTPUTS)
        files = models.export_checkpoint(model, directory, f"bench-{name}", metadata)
        exported[name] = {"name": name, "module": model, "gflop_per_record": models.flops_per_record(model) / 1e9}
        exported[name].update(files)
    torch.set_num_threads(physical_cores())
    return exported


def sixteen_bit(checkpoint: Path, device: str) -> str | None:
    """The 16-bit precision `--precision` really runs `checkpoint` in on `device` (bfloat16 on a CPU with its
    instructions, float16 on CUDA), or None where melep would fall back to float32."""
    import melep_cli

    precision = "float16" if device == "cuda" else "bfloat16"
    loaded = melep_cli.load_checkpoint(checkpoint, device=device, precision=precision, warn_defaults=False)
    return precision if loaded.precision == precision else None


# ----- results ----------------------------------------------------------------------------------------------------
def table(columns: list[str], rows: list[list[Any]]) -> list[str]:
    """A markdown table: the first column left-aligned, the others right-aligned."""
    lines = ["| " + " | ".join(columns) + " |", "| --- |" + " ---: |" * (len(columns) - 1)]
    return lines + ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]


def write_results(name: str, payload: dict[str, Any], *, quick: bool) -> dict[str, Any]:
    """`payload` with the run's context, written to results/<name>.json (<name>-quick.json for quick runs)."""
    document = {
        "benchmark": name,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "quick": quick,
        "note": NOISE_NOTE,
        **payload,
        "load_average_at_end": list(os.getloadavg()),
    }
    document.setdefault("machine", machine_description())
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}{'-quick' if quick else ''}.json"
    path.write_text(
        json.dumps(document, indent=2, default=lambda value: getattr(value, "tolist", value.__str__)()) + "\n"
    )
    print(f"wrote {path}")
    return document
