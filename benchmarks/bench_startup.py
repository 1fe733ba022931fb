"""`startup`: start-up of the `melep` command: what a CI script pays before the first record is decoded.

Every `melep` command is a fresh Python process, so module imports are paid on every call. scipy.io,
scipy.signal, wfdb (which brings pandas) and scipy.special are imported only where they are needed:
`.mat` records, resampling, WFDB records other than plain format 16, and the metric's sigmoid. The
baseline is the same command in a process that imports those four first, as melep did at module level
before; both run round-robin in the same rounds, in fresh processes. Commands: `melep --help`, and
the README's quick start on the sample data (five checkpoints, the 100 Hz HDF5 target, JSON to stdout),
with `--no-cache`: every round runs the five forward passes (`rank-cache` times the outputs store).

    python benchmarks/run_all.py --only startup [--quick]   # 7 rounds; --quick: 2
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from typing import Any

import _common

#: What melep imported at module level before: the baseline imports them before running the same command.
EAGER_IMPORTS = ("scipy.io", "scipy.signal", "wfdb", "scipy.special")
SAMPLE = _common.SAMPLE_DIR
COMMANDS: dict[str, list[str]] = {
    "melep --help": ["--help"],
    "melep rank on sample_data (5 checkpoints)": [
        "rank",
        "--checkpoints",
        str(SAMPLE / "checkpoints"),
        "--target",
        str(SAMPLE / "ptbxl_target.h5"),
        "--format",
        "json",
        "--no-cache",
    ],
}


def _command(arguments: list[str], *, eager: bool) -> list[str]:
    """`python -m melep_cli ARGS`, or the same after importing EAGER_IMPORTS (the baseline)."""
    if not eager:
        return _common.melep_command(*arguments)
    script = (
        f"import runpy, sys; import {', '.join(EAGER_IMPORTS)}; "
        f"sys.argv = ['melep', *{arguments!r}]; runpy.run_module('melep_cli', run_name='__main__')"
    )
    return [sys.executable, "-c", script]


def _run(command: list[str]) -> float:
    start = time.perf_counter()
    finished = subprocess.run(command, capture_output=True, env=_common.ENVIRONMENT, check=False)
    seconds = time.perf_counter() - start
    if finished.returncode != 0:
        raise RuntimeError(f"{command} exited {finished.returncode}: {finished.stderr.decode()[-400:]}")
    return seconds


def run(quick: bool = False, repeats: int | None = None) -> dict[str, Any]:
    """Each command with lazy imports (as shipped) and with the eager baseline, round-robin, fresh processes."""
    repeats = repeats or (2 if quick else 7)
    machine = _common.machine_description()
    results: dict[str, Any] = {}
    for label, arguments in COMMANDS.items():
        variants = {"lazy imports": _command(arguments, eager=False), "eager baseline": _command(arguments, eager=True)}
        for command in variants.values():  # warm-up: file cache
            _run(command)
        times: dict[str, list[float]] = {name: [] for name in variants}
        for round_index in range(repeats):
            order = list(variants) if round_index % 2 == 0 else list(reversed(variants))
            for name in order:
                times[name].append(_run(variants[name]))
        rows = {name: {"median_s": statistics.median(seconds), "rounds": seconds} for name, seconds in times.items()}
        ratio = rows["eager baseline"]["median_s"] / rows["lazy imports"]["median_s"]
        saved = rows["eager baseline"]["median_s"] - rows["lazy imports"]["median_s"]
        print(
            f"  {label}: {rows['lazy imports']['median_s']:.2f} s vs {rows['eager baseline']['median_s']:.2f} s "
            f"with the eager imports: {ratio:.2f}x faster, {saved:.2f} s saved (median of {repeats})"
        )
        results[label] = {"configurations": rows, "speedup": ratio, "seconds_saved": saved}
    payload = {
        "what": "fresh `python -m melep_cli ...` processes, wall time; baseline: the same command after importing "
        + ", ".join(EAGER_IMPORTS),
        "repeats": repeats,
        "machine": machine,
        "commands": results,
    }
    return _common.write_results("startup", payload, quick=quick)


def figures(document: dict[str, Any]) -> list[str]:
    lines = [
        "Start-up of the `melep` command (fresh processes, wall time) against the same command after importing "
        f"{', '.join(EAGER_IMPORTS)} first (what melep imported at module level before they became lazy), "
        f"round-robin, median of {document['repeats']}:",
        "",
        "| command | lazy imports | eager baseline | speed-up | saved |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for command, result in document["commands"].items():
        lazy, eager = result["configurations"]["lazy imports"], result["configurations"]["eager baseline"]
        lines.append(
            f"| {command} | {lazy['median_s']:.2f} s | {eager['median_s']:.2f} s | {result['speedup']:.2f}x "
            f"| {result['seconds_saved']:.2f} s |"
        )
    return lines
