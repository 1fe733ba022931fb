"""Time and peak memory of the MELEP metric alone (`melep_cli.metric.melep`) as n grows.

Goal (issue 7): 10^6 records, Y = 20 target labels, Z = 100 source labels in under 10 s on
2 cores, with memory O(n * (Y + Z)). Inputs are what `melep rank` hands the metric: float32
logits from a forward pass (activation `logits`, so the float64 sigmoid is included) and
uint8 labels. Peak memory is the tracemalloc peak of the call (numpy reports its buffers to
tracemalloc), i.e. what the metric allocates beyond its inputs, measured in a separate call
so tracing does not slow the timed ones.

    python benchmarks/bench_metric.py            # n = 10^3 .. 10^6
    python benchmarks/bench_metric.py --quick    # n = 10^3 .. 10^5
"""

from __future__ import annotations

import argparse
import gc
import time
import tracemalloc
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


def measure(n: int, n_target: int, n_source: int, repeats: int, warmup: int) -> dict[str, Any]:
    """Timing and peak memory of one `melep()` call on n synthetic records."""
    from melep_cli.metric import melep

    logits, labels = synthetic_forward_pass(n, n_target, n_source)
    result = melep(logits, labels, activation="logits")
    cpu_start = time.process_time()
    timing = _common.time_call(lambda: melep(logits, labels, activation="logits"), repeats=repeats, warmup=warmup)
    cpu_per_call = (time.process_time() - cpu_start) / (repeats + warmup)
    gc.collect()
    tracemalloc.start()
    tracemalloc.reset_peak()
    melep(logits, labels, activation="logits")
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    input_bytes = logits.nbytes + labels.nbytes
    return {
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


def run(*, quick: bool = False, sizes: tuple[int, ...] | None = None, name: str | None = None) -> dict[str, Any]:
    """Benchmark the metric at each size; write `results/<name>.json` (metric.json, metric-quick.json)."""
    name = name or ("metric-quick" if quick else "metric")
    sizes = sizes or (QUICK_SIZES if quick else DEFAULT_SIZES)
    n_target, n_source = 20, 100
    rows = []
    for n in sizes:
        repeats = 5 if n <= 10**4 else 3 if n <= 10**5 else 2
        row = measure(n, n_target, n_source, repeats=repeats, warmup=1 if n <= 10**5 else 0)
        rows.append(row)
        print(
            f"n={n:>9,}  median {row['median_s']:8.3f} s  cpu {row['cpu_s_per_call']:8.3f} s  "
            f"({row['records_per_s']:>12,.0f} records/s)  "
            f"peak {row['peak_bytes'] / 2**20:9.1f} MiB  (inputs {row['input_bytes'] / 2**20:8.1f} MiB)"
        )
    goal = next((row for row in rows if row["n"] == 10**6), None)
    payload = {
        "what": "melep_cli.metric.melep on float32 logits (activation logits) and uint8 labels, Y=20, Z=100",
        "goal": "10^6 records in under 10 s on 2 cores; memory O(n*(Y+Z))",
        "goal_met": None if goal is None else goal["median_s"] < 10,
        "note": _common.NOISE_NOTE,
        "sizes": rows,
    }
    path = _common.write_results(name, payload)
    print(f"wrote {path}")
    return payload


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="sizes 10^3 .. 10^5 only")
    parser.add_argument("--sizes", type=int, nargs="+", help="record counts to measure")
    parser.add_argument("--name", help="results file name (default: metric, or metric-quick with --quick)")
    args = parser.parse_args()
    run(quick=args.quick, sizes=tuple(args.sizes) if args.sizes else None, name=args.name)


if __name__ == "__main__":
    main()
