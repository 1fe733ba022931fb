"""Run the benchmarks and write their results to benchmarks/results/*.json.

    python benchmarks/run_all.py                 # every registered benchmark
    python benchmarks/run_all.py --quick         # smoke-sized runs
    python benchmarks/run_all.py --only metric   # some of them
    python benchmarks/run_all.py --table         # print the README's markdown table from the results

Each benchmark is a function `run(quick: bool) -> dict` in the BENCHMARKS registry below; a new
one (e.g. `melep rank` end to end) is one import and one entry. A benchmark that cannot run here
(no GPU, no data) returns {"skipped": reason} and is reported as skipped, not failed.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from collections.abc import Callable
from typing import Any

import _common
import bench_backends
import bench_metric
import naive_baseline

BENCHMARKS: dict[str, Callable[[bool], dict[str, Any]]] = {
    "metric": lambda quick: bench_metric.run(quick=quick),
    "backends-cpu": lambda quick: bench_backends.run(device="cpu", quick=quick),
    "backends-cuda": lambda quick: bench_backends.run(device="cuda", quick=quick),
    "naive-baseline": lambda quick: naive_baseline.run(quick=quick),
}


def run_benchmarks(names: list[str], quick: bool) -> int:
    """Run `names` in order; print a summary; return the number that failed."""
    outcomes = []
    for name in names:
        print(f"== {name}", flush=True)
        start = time.perf_counter()
        try:
            payload = BENCHMARKS[name](quick)
            status = f"skipped: {payload['skipped']}" if "skipped" in payload else "ok"
        except Exception:  # report and go on with the next benchmark
            traceback.print_exc()
            status = "failed"
        outcomes.append((name, status, time.perf_counter() - start))
    print("== summary")
    for name, status, seconds in outcomes:
        print(f"{name:<20} {status:<40} {seconds:8.1f} s")
    return sum(status == "failed" for _, status, _ in outcomes)


def markdown_table() -> str:
    """The README's benchmark table, from the CPU results on disk, with the machine described."""
    lines = []
    backends_path = _common.RESULTS_DIR / "backends-cpu.json"
    if backends_path.is_file():
        document = json.loads(backends_path.read_text())
        machine = document["machine"]
        lines += [
            f"Forward pass, model only: {machine['cpu']}, {machine['physical_cores']} physical cores, "
            f"torch {machine['torch']}, onnxruntime {machine['onnxruntime']}, load average "
            f"{machine['load_average_at_start'][0]:.1f} at start (shared machine). "
            "Speedup = eager PyTorch (all cores) time / backend time, same run: of the medians, and of the "
            "fastest of the rounds (less sensitive to other processes' load).",
            "",
            "| model | backend | records/s (median) | speedup (median) | speedup (best of rounds) |",
            "| --- | --- | ---: | ---: | ---: |",
        ]
        for model, result in document["models"].items():
            for row in result["backends"]:
                lines.append(
                    f"| {model} ({result['gflop_per_record']:.2f} GFLOP) | {row['backend']} | "
                    f"{row['records_per_s']:.1f} | {row['speedup_vs_eager']:.2f} | "
                    f"{row['speedup_vs_eager_best_of_rounds']:.2f} |"
                )
        lines.append("")
        for model, result in document["models"].items():
            sweep = result["batch_size_sweep"]
            sizes = ", ".join(f"{row['batch_size']}: {row['records_per_s']:.1f}" for row in sweep["sizes"])
            lines.append(f"Batch-size sweep, {model}, {sweep['backend']} (records/s): {sizes}.")
        lines.append("")
    metric_path = _common.RESULTS_DIR / "metric.json"
    if metric_path.is_file():
        document = json.loads(metric_path.read_text())
        revision = document.get("reference_revision") or "-"
        lines += [
            "MELEP metric alone (Y = 20 target labels, Z = 100 source labels, float32 logits in); "
            f"'before' is melep_cli/metric.py at {revision}, timed in the same rounds:",
            "",
            "| records n | seconds | peak extra memory (MiB) | before: seconds | before: peak (MiB) | speedup |",
            "| ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for row in document["sizes"]:
            old = row.get("reference")
            before = (
                f"{old['median_s']:.3f} | {old['peak_bytes'] / 2**20:.0f} | {old['speedup']:.2f}"
                if old
                else "- | - | -"
            )
            lines.append(f"| {row['n']:,} | {row['median_s']:.3f} | {row['peak_bytes'] / 2**20:.0f} | {before} |")
    return "\n".join(lines) if lines else "no results yet: run python benchmarks/run_all.py"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke-sized runs of every benchmark")
    parser.add_argument("--only", nargs="+", choices=sorted(BENCHMARKS), help="run only these")
    parser.add_argument("--list", action="store_true", help="list the registered benchmarks")
    parser.add_argument("--table", action="store_true", help="print the markdown table from results/*.json")
    args = parser.parse_args()
    if args.list:
        print("\n".join(BENCHMARKS))
        return
    if args.table:
        print(markdown_table())
        return
    sys.exit(1 if run_benchmarks(args.only or list(BENCHMARKS), args.quick) else 0)


if __name__ == "__main__":
    main()
