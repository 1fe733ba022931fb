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

import functools
import statistics
import subprocess
import sys
from typing import Any

import _common

#: What melep imported at module level before: the baseline imports them before running the same command.
EAGER_IMPORTS = ("scipy.io", "scipy.signal", "wfdb", "scipy.special")
SAMPLE = _common.SAMPLE_DIR
COMMANDS = {
    "melep --help": ["--help"],
    "melep rank on sample_data (5 checkpoints)": f"rank -c {SAMPLE}/checkpoints -t {SAMPLE}/ptbxl_target.h5 "
    "--format json --no-cache".split(),
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


def _run(command: list[str]) -> None:
    finished = subprocess.run(command, capture_output=True, env=_common.ENVIRONMENT, check=False)
    if finished.returncode != 0:
        raise RuntimeError(f"{command} exited {finished.returncode}: {finished.stderr.decode()[-400:]}")


def run(quick: bool = False) -> dict[str, Any]:
    """Each command with lazy imports (as shipped) and with the eager baseline, round-robin, fresh processes."""
    repeats, machine, results = 2 if quick else 7, _common.machine_description(), {}
    for label, arguments in COMMANDS.items():
        variants = {
            name: _command(arguments, eager=name == "eager baseline") for name in ("lazy imports", "eager baseline")
        }
        configurations = {name: functools.partial(_run, command) for name, command in variants.items()}
        for configuration in configurations.values():  # warm-up: the file cache
            configuration()
        times = _common.round_robin(configurations, repeats)
        rows = {name: {"median_s": statistics.median(seconds), "rounds": seconds} for name, seconds in times.items()}
        lazy, eager = rows["lazy imports"]["median_s"], rows["eager baseline"]["median_s"]
        print(f"  {label}: {lazy:.2f} s, {eager:.2f} s with the eager imports")
        results[label] = {"configurations": rows, "speedup": eager / lazy, "seconds_saved": eager - lazy}
    payload = {
        "what": "fresh `python -m melep_cli ...` processes, wall time; baseline: the same command after importing "
        + ", ".join(EAGER_IMPORTS),
        "repeats": repeats,
        "machine": machine,
        "commands": results,
    }
    return _common.write_results("startup", payload, quick=quick)


def figures(document: dict[str, Any]) -> list[str]:
    rows = []
    for command, result in document["commands"].items():
        lazy, eager = (result["configurations"][name]["median_s"] for name in ("lazy imports", "eager baseline"))
        rows.append([command, f"{lazy:.2f} s", f"{eager:.2f} s", f"**{result['speedup']:.2f}x**"])
        rows[-1].append(f"{result['seconds_saved']:.2f} s")
    return [
        "Start-up of the `melep` command (fresh processes, wall time) against the same command after importing "
        f"{', '.join(EAGER_IMPORTS)} first (what melep imported at module level before they became lazy), "
        f"round-robin, median of {document['repeats']}:",
        "",
        *_common.table(["command", "lazy imports", "eager baseline", "speed-up", "saved"], rows),
    ]
