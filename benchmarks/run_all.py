"""Run the benchmarks, write benchmarks/results/*.json, and print their figures.

    python benchmarks/run_all.py                      # every benchmark (CPU: about 30 minutes on 2 cores)
    python benchmarks/run_all.py --quick              # smoke-sized, results/*-quick.json (not committed)
    python benchmarks/run_all.py --only metric rank-cpu
    python benchmarks/run_all.py --table              # the figures, as markdown, from results/*.json

MODULES is the one list of benchmark modules. A module registers its benchmarks in a dict
`BENCHMARKS = {name: (run, figures)}`; one without it is one benchmark named after the module
(`bench_bootstrap.py` is `bootstrap`) with functions `run` and, optionally, `figures`. `run(quick: bool)`
measures and returns the document it wrote with `_common.write_results`, or `_common.skipped(reason)`
where it cannot run here (no GPU, no data): reported as skipped, not failed. `figures(document)` turns a
results document into markdown lines. Adding a benchmark module is one line in MODULES.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
import traceback
from collections.abc import Callable
from typing import Any

import _common

MODULES = [
    "bench_metric",
    "bench_backends",
    "bench_rank",
    "bench_cache",
    "bench_startup",
    "bench_bootstrap",
    "bench_ray",
    "bench_adaptive",
]

Run = Callable[[bool], dict[str, Any]]
Figures = Callable[[dict[str, Any]], list[str]]


def registry() -> dict[str, tuple[Run, Figures | None]]:
    """Every benchmark of every module in MODULES, in order: {name: (run, figures)}."""
    benchmarks: dict[str, tuple[Run, Figures | None]] = {}
    for name in MODULES:
        module = importlib.import_module(name)
        if hasattr(module, "BENCHMARKS"):
            benchmarks.update(module.BENCHMARKS)
        else:
            benchmarks[name.removeprefix("bench_")] = (module.run, getattr(module, "figures", None))
    return benchmarks


def figures_of(name: str, document: dict[str, Any], benchmarks: dict[str, tuple[Run, Figures | None]]) -> list[str]:
    """The markdown figures of one results document, with where and when they were measured."""
    if "skipped" in document:
        return [f"{name}: skipped ({document['skipped']})"]
    render = benchmarks[name][1]
    machine = document.get("machine", {})
    load = (machine.get("load_average_at_start") or [0.0])[0]
    where = (
        f"*{name}*: {document.get('created', '?')[:10]}, {machine.get('cpu', '?')}, "
        f"{machine.get('physical_cores', '?')} cores, load average {load:.1f} at the start"
        + (" (quick)" if document.get("quick") else "")
    )
    return [where, "", *(render(document) if render else ["(no figures)"])]


def run_benchmarks(names: list[str], quick: bool, benchmarks: dict[str, tuple[Run, Figures | None]]) -> int:
    """Run `names` in order, print each one's figures and a summary; return the number that failed."""
    outcomes, pages = [], []
    for name in names:
        print(f"== {name}", flush=True)
        start = time.perf_counter()
        try:
            document = benchmarks[name][0](quick)
            status = f"skipped: {document['skipped']}" if "skipped" in document else "ok"
            pages.append(figures_of(name, document, benchmarks))
        except Exception:  # report and go on with the next benchmark
            traceback.print_exc()
            status = "failed"
        outcomes.append((name, status, time.perf_counter() - start))
    print("== figures")
    for page in pages:
        print("\n".join(page), end="\n\n")
    print("== summary")
    for name, status, seconds in outcomes:
        print(f"{name:<20} {status:<40} {seconds:8.1f} s")
    return sum(status == "failed" for _, status, _ in outcomes)


def table(benchmarks: dict[str, tuple[Run, Figures | None]], quick: bool) -> str:
    """The figures of every results file on disk (the -quick ones with --quick)."""
    pages = []
    for name in benchmarks:
        path = _common.RESULTS_DIR / f"{name}{'-quick' if quick else ''}.json"
        if path.is_file():
            pages.append("\n".join(figures_of(name, json.loads(path.read_text()), benchmarks)))
    return "\n\n".join(pages) if pages else "no results yet: run python benchmarks/run_all.py"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    benchmarks = registry()
    parser.add_argument("--quick", action="store_true", help="smoke-sized runs of every benchmark")
    parser.add_argument("--only", nargs="+", choices=list(benchmarks), help="run only these")
    parser.add_argument("--list", action="store_true", help="list the registered benchmarks")
    parser.add_argument("--table", action="store_true", help="print the figures from results/*.json")
    args = parser.parse_args()
    if args.list:
        print("\n".join(benchmarks))
    elif args.table:
        print(table(benchmarks, args.quick))
    else:
        sys.exit(1 if run_benchmarks(args.only or list(benchmarks), args.quick, benchmarks) else 0)


if __name__ == "__main__":
    main()
