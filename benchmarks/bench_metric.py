"""`metric`: MELEP alone (`melep_cli.melep`) as n grows, against the naive per-pair loop on the same outputs.

Goal: 10^6 records, Y = 20 target labels, Z = 100 source labels in under 10 s on 2 cores, memory
O(n (Y + Z)). The inputs are what `melep rank` hands the metric: float32 logits (so the float64 sigmoid
is included) and uint8 labels. Peak memory is the tracemalloc peak of one call (numpy reports its
buffers to tracemalloc): what the metric allocates beyond its inputs, in a call of its own so that
tracing does not slow the timed ones. The baseline is `naive_baseline.naive_melep` (a Python loop of
plain LEEP per label pair), timed round-robin with it up to NAIVE_MAX_N records (it takes ~80 s at 10^6);
both must give the same score.

    python benchmarks/run_all.py --only metric [--quick]   # n = 10^3 .. 10^6; --quick: .. 10^5, the loop to 10^4
"""

from __future__ import annotations

import gc
import tracemalloc
from collections.abc import Callable
from typing import Any

import _common
import naive_baseline
import numpy as np

import melep_cli

SIZES = (10**3, 10**4, 10**5, 10**6)
QUICK_SIZES = (10**3, 10**4, 10**5)
NAIVE_MAX_N = 10**5
TARGET_LABELS, SOURCE_LABELS = 20, 100


def synthetic_forward_pass(n: int, n_target: int, n_source: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Float32 logits (n x Z) that carry some information about uint8 labels (n x Y): prevalences from 2 % to
    50 %, each source output a noisy mix of a few target labels (neither pure noise nor a perfect predictor)."""
    rng = np.random.default_rng(seed)
    prevalence = np.linspace(0.02, 0.5, n_target, dtype=np.float32)
    labels = (rng.random((n, n_target), dtype=np.float32) < prevalence).astype(np.uint8)
    mixing = (rng.standard_normal((n_target, n_source)) * (rng.random((n_target, n_source)) < 0.2)).astype(np.float32)
    logits = labels.astype(np.float32) @ mixing
    logits += rng.standard_normal((n, n_source), dtype=np.float32)
    logits -= np.float32(1.5)
    return logits, labels


def _peak_bytes(function: Callable[[], object]) -> int:
    """tracemalloc peak of one call: what it allocates beyond what already exists."""
    gc.collect()
    tracemalloc.start()
    function()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak


def measure(n: int, *, naive: bool) -> dict[str, Any]:
    """One size: melep's median seconds and peak, and the naive loop's seconds in the same rounds."""
    logits, labels = synthetic_forward_pass(n, TARGET_LABELS, SOURCE_LABELS)
    configurations = {"melep": lambda: melep_cli.melep(logits, labels, activation="logits").score}
    if naive:
        configurations["naive"] = lambda: naive_baseline.naive_melep(logits, labels)["score"]
    scores = {label: run() for label, run in configurations.items()}  # warm-up
    if naive and abs(scores["naive"] / scores["melep"] - 1) > 1e-9:
        raise AssertionError(f"n = {n}: the naive MELEP {scores['naive']} is not melep_cli.melep's {scores['melep']}")
    times = _common.round_robin(configurations, 5 if n <= 10**4 else 3 if n <= 10**5 else 2)
    row: dict[str, Any] = {"n": n, "score": scores["melep"], **_common.summary(times["melep"], n)}
    row["peak_bytes"] = _peak_bytes(configurations["melep"])
    row["peak_over_n_times_y_plus_z_float64"] = row["peak_bytes"] / (n * (TARGET_LABELS + SOURCE_LABELS) * 8)
    if naive:
        row["naive"] = _common.summary(times["naive"], n)
        row["naive"]["speedup"] = row["naive"]["median_s"] / row["median_s"]
    print(
        f"n={n:>9,}  melep {row['median_s']:8.3f} s" + (f", naive {row['naive']['median_s']:8.3f} s" if naive else "")
    )
    return row


def run(quick: bool = False) -> dict[str, Any]:
    """Every size; results/metric.json."""
    machine = _common.machine_description()
    rows = [measure(n, naive=n <= (10**4 if quick else NAIVE_MAX_N)) for n in (QUICK_SIZES if quick else SIZES)]
    payload = {
        "what": "melep_cli.melep on float32 logits and uint8 labels, Y=20, Z=100, against naive_baseline.naive_melep "
        "(a Python loop of per-pair LEEP) on the same outputs, round-robin",
        "goal": "10^6 records in under 10 s on 2 cores; memory O(n*(Y+Z))",
        "machine": machine,
        "sizes": rows,
    }
    return _common.write_results("metric", payload, quick=quick)


def figures(document: dict[str, Any]) -> list[str]:
    rows = []
    for row in document["sizes"]:
        naive = row.get("naive")
        rows.append(
            [f"{row['n']:,}", f"{row['median_s']:.3f} s", f"{row['peak_bytes'] / 2**20:.0f} MiB"]
            + [f"{row['peak_over_n_times_y_plus_z_float64']:.2f}"]
            + ([f"{naive['median_s']:.3f} s", f"**{naive['speedup']:.1f}x**"] if naive else ["-", "-"])
        )
    columns = ["records n", "melep_cli.melep", "peak extra memory", "peak / n (Y + Z) float64s", "naive loop"]
    return [
        f"MELEP alone (Y = {TARGET_LABELS}, Z = {SOURCE_LABELS}, float32 logits in) against the naive per-pair "
        "loop on the same outputs, same rounds (goal: 10^6 records under 10 s, memory O(n (Y + Z))):",
        "",
        *_common.table([*columns, "speed-up"], rows),
    ]
