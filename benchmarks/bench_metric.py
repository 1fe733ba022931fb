"""Time and peak memory of the MELEP metric alone (`melep_cli.metric.melep`) as n grows.

Goal (issue 7): 10^6 records, Y = 20 target labels, Z = 100 source labels in under 10 s on
2 cores, with memory O(n * (Y + Z)). Inputs are what `melep rank` hands the metric: float32
logits from a forward pass (activation `logits`, so the float64 sigmoid is included) and
uint8 labels. Peak memory is the tracemalloc peak of the call (numpy reports its buffers to
tracemalloc), i.e. what the metric allocates beyond its inputs, measured in a separate call
so tracing does not slow the timed ones.

    python benchmarks/bench_metric.py            # n = 10^3 .. 10^6
    python benchmarks/bench_metric.py --quick    # n = 10^3 .. 10^5
    python benchmarks/bench_metric.py --against 660bcbe   # also time metric.py of that revision, same rounds
"""

from __future__ import annotations

import argparse
import gc
import statistics
import subprocess
import sys
import time
import tracemalloc
import types
from collections.abc import Callable
from typing import Any

import _common
import numpy as np

DEFAULT_SIZES = (10**3, 10**4, 10**5, 10**6)
QUICK_SIZES = (10**3, 10**4, 10**5)


def synthetic_forward_pass(n: int, n_target: int, n_source: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Float32 logits (n x Z) that carry some information about uint8 labels (n x Y).

    Label prevalences spread from 2 % to 50 %, like real ECG label sets; each source output
    mixes a few target labels with noise, so the metric sees neither pure noise nor a perfect
    predictor.
    """
    rng = np.random.default_rng(seed)
    prevalence = np.linspace(0.02, 0.5, n_target, dtype=np.float32)
    labels = (rng.random((n, n_target), dtype=np.float32) < prevalence).astype(np.uint8)
    mixing = (rng.standard_normal((n_target, n_source)) * (rng.random((n_target, n_source)) < 0.2)).astype(np.float32)
    logits = labels.astype(np.float32) @ mixing
    logits += rng.standard_normal((n, n_source), dtype=np.float32)
    logits -= np.float32(1.5)
    return logits, labels


def reference_melep(revision: str) -> Callable[..., Any]:
    """`melep()` of melep_cli/metric.py as it was at git `revision`, to time against in the same run."""
    source = subprocess.run(
        ["git", "-C", str(_common.REPO_ROOT), "show", f"{revision}:melep_cli/metric.py"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    module = types.ModuleType(f"melep_metric_{revision}")
    sys.modules[module.__name__] = module  # dataclasses look their module up here
    exec(compile(source, f"{revision}:melep_cli/metric.py", "exec"), module.__dict__)
    return module.melep


def measure(
    n: int, n_target: int, n_source: int, repeats: int, warmup: int, reference: Callable[..., Any] | None = None
) -> dict[str, Any]:
    """Timing and peak memory of one `melep()` call on n synthetic records (and of `reference`, interleaved)."""
    from melep_cli.metric import melep

    logits, labels = synthetic_forward_pass(n, n_target, n_source)
    result = melep(logits, labels, activation="logits")
    cpu_start = time.process_time()
    timing = _common.time_call(lambda: melep(logits, labels, activation="logits"), repeats=repeats, warmup=warmup)
    cpu_per_call = (time.process_time() - cpu_start) / (repeats + warmup)
    peak = _peak_bytes(lambda: melep(logits, labels, activation="logits"))
    input_bytes = logits.nbytes + labels.nbytes
    row = {
        "n": n,
        "target_labels": n_target,
        "source_labels": n_source,
        "score": result.score,
        **timing,
        "records_per_s": n / timing["median_s"],
        "cpu_s_per_call": cpu_per_call,
        "input_bytes": input_bytes,
        "peak_bytes": peak,
        "peak_over_n_times_y_plus_z_float64": peak / (n * (n_target + n_source) * 8),
    }
    if reference is not None:
        # Rounds alternate current and reference so load from other processes hits both alike.
        current_times, reference_times = [], []
        for _ in range(repeats):
            for function, times in ((melep, current_times), (reference, reference_times)):
                start = time.perf_counter()
                function(logits, labels, activation="logits")
                times.append(time.perf_counter() - start)
        old = reference(logits, labels, activation="logits")
        row["reference"] = {
            "median_s": statistics.median(reference_times),
            "current_median_s_same_rounds": statistics.median(current_times),
            "speedup": statistics.median(reference_times) / statistics.median(current_times),
            "peak_bytes": _peak_bytes(lambda: reference(logits, labels, activation="logits")),
            "max_rel_diff_phi": float(np.nanmax(np.abs(result.phi - old.phi) / np.abs(old.phi))),
        }
    return row


def _peak_bytes(function: Callable[[], object]) -> int:
    """tracemalloc peak of one call: what it allocates beyond what already exists."""
    gc.collect()
    tracemalloc.start()
    tracemalloc.reset_peak()
    function()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak


def run(
    *, quick: bool = False, sizes: tuple[int, ...] | None = None, name: str | None = None, against: str | None = None
) -> dict[str, Any]:
    """Benchmark the metric at each size; write `results/<name>.json` (metric.json, metric-quick.json).

    `against`: a git revision whose melep_cli/metric.py is timed in the same rounds, for a ratio.
    """
    reference = reference_melep(against) if against else None
    name = name or ("metric-quick" if quick else "metric")
    sizes = sizes or (QUICK_SIZES if quick else DEFAULT_SIZES)
    n_target, n_source = 20, 100
    rows = []
    for n in sizes:
        repeats = 5 if n <= 10**4 else 3 if n <= 10**5 else 2
        row = measure(n, n_target, n_source, repeats=repeats, warmup=1 if n <= 10**5 else 0, reference=reference)
        rows.append(row)
        print(
            f"n={n:>9,}  median {row['median_s']:8.3f} s  cpu {row['cpu_s_per_call']:8.3f} s  "
            f"({row['records_per_s']:>12,.0f} records/s)  "
            f"peak {row['peak_bytes'] / 2**20:9.1f} MiB  (inputs {row['input_bytes'] / 2**20:8.1f} MiB)"
        )
        if reference is not None:
            old = row["reference"]
            print(
                f"    {against}: median {old['median_s']:8.3f} s, peak {old['peak_bytes'] / 2**20:9.1f} MiB: "
                f"current is x{old['speedup']:.2f} faster (same rounds), phi equal to {old['max_rel_diff_phi']:.1e}"
            )
    goal = next((row for row in rows if row["n"] == 10**6), None)
    payload = {
        "what": "melep_cli.metric.melep on float32 logits (activation logits) and uint8 labels, Y=20, Z=100",
        "goal": "10^6 records in under 10 s on 2 cores; memory O(n*(Y+Z))",
        "goal_met": None if goal is None else goal["median_s"] < 10,
        "note": _common.NOISE_NOTE,
        "reference_revision": against,
        "sizes": rows,
    }
    path = _common.write_results(name, payload)
    print(f"wrote {path}")
    return payload


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="sizes 10^3 .. 10^5 only")
    parser.add_argument("--sizes", type=int, nargs="+", help="record counts to measure")
    parser.add_argument("--against", help="git revision whose metric.py to time in the same run (e.g. 660bcbe)")
    parser.add_argument("--name", help="results file name (default: metric, or metric-quick with --quick)")
    args = parser.parse_args()
    run(quick=args.quick, sizes=tuple(args.sizes) if args.sizes else None, name=args.name, against=args.against)


if __name__ == "__main__":
    main()
