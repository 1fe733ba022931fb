"""`rank-cache`: the outputs store. The first rank into an empty cache against a re-rank on the filled one.

Ranking the same target again with other labels or another weighting reads the stored outputs back and runs
no forward pass (not even a decode). Timed round-robin in the same run, medians of the rounds:

- on `sample_data/` (the README's quick start: five checkpoints, 300 records), as fresh CLI processes
  (`python -m melep_cli rank`, start-up included; `melep --help` beside them, the start-up alone) and
  in-process through `melep_cli.rank(...)`: the first rank into an empty cache, the re-rank
  (`--labels NORM,MI,AFIB --weighting uniform`) on the filled cache, and that re-rank with `--no-cache`
  (every forward pass: the reference scores). Goal: re-rank / first run under 0.25.
- the paper's ResNet-101 and Bi-LSTM (ONNX) on the first 1024 PTB-XL records: the same three, in-process.

Each round's first run fills a new directory, and the re-rank reads the one the round before filled. Every
re-rank must run no forward pass and give the scores of the `cache=None` rank with the same options.

    python benchmarks/run_all.py --only rank-cache [--quick]   # --quick: 2 rounds; paper models: 64 records, 1 round
"""

from __future__ import annotations

import itertools
import json
import logging
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import _common

import melep_cli

SAMPLE_CHECKPOINTS = _common.SAMPLE_DIR / "checkpoints"
SAMPLE_TARGET = _common.SAMPLE_DIR / "ptbxl_target.h5"
#: The re-ranks: another label subset and weighting than the first run's defaults (AFIB: a rhythm statement).
SAMPLE_RERANK = {"labels": ("NORM", "MI", "AFIB"), "weighting": "uniform"}
PTBXL_RERANK = {"labels": ("NORM", "MI", "STTC"), "weighting": "uniform"}
GOAL = 0.25
PAPER_RECORDS, QUICK_PAPER_RECORDS = 1024, 64
FIRST, RERANK, NO_CACHE = "first run (empty cache)", "re-rank (filled cache)", "re-rank options, no cache"
HELP = "melep --help (start-up alone)"

#: A rank: the cache directory (None: no store) -> {"scores": {checkpoint: MELEP}, "forward_passes": int}.
Ranker = Callable[[Path | None], dict[str, Any]]


def _in_process(checkpoints: list[Path], target: Path, options: dict[str, Any]) -> Ranker:
    """`melep_cli.rank(checkpoints, open_target(target, labels=...), cache=..., weighting=...)` in this process."""

    def call(cache: Path | None) -> dict[str, Any]:
        opened = melep_cli.open_target(target, labels=options["labels"]) if options else target
        report = melep_cli.rank(checkpoints, opened, cache=cache, weighting=options.get("weighting", "prevalence"))
        if report.failed:
            raise RuntimeError("rank failed: " + "; ".join(str(outcome.error) for outcome in report.failed))
        return {"scores": {o.name: o.melep for o in report.outcomes}, "forward_passes": report.forward_passes}

    return call


def _cli_options(options: dict[str, Any]) -> list[str]:
    return ["--labels", ",".join(options["labels"]), "--weighting", options["weighting"]] if options else []


def _cli(checkpoints: list[Path], target: Path, options: dict[str, Any]) -> Ranker:
    """A fresh `python -m melep_cli rank ... --format json` process (None: `--no-cache`); scores from its JSON."""

    def call(cache: Path | None) -> dict[str, Any]:
        command = _common.melep_command("rank", "-c", str(checkpoints[0]), "-t", str(target), "-f", "json", "-q")
        command += ["--no-cache"] if cache is None else ["--cache", str(cache)]
        completed = subprocess.run(
            command + _cli_options(options), capture_output=True, text=True, env=_common.ENVIRONMENT, check=False
        )
        if completed.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} exited {completed.returncode}: {completed.stderr[-1000:]}")
        document = json.loads(completed.stdout)
        scores = {row["checkpoint"]: row["melep"] for row in document["results"]}
        return {"scores": scores, "forward_passes": document["forward_passes"]}

    return call


def _help() -> None:
    subprocess.run(_common.melep_command("--help"), capture_output=True, env=_common.ENVIRONMENT, check=True)


def _scenario(first: Ranker, rerank: Ranker, checkpoints: int, records: int, rounds: int, scratch: Path, extra=None):
    """FIRST (a new directory each round), RERANK (on the directory the round before filled), NO_CACHE, and `extra`,
    round-robin after an untimed warm-up of each; the ratios, and the checks on forward passes and scores."""
    directories = (scratch / f"cache-{index}" for index in itertools.count())
    filled = next(directories)
    runs = {FIRST: [first(filled)], RERANK: [rerank(filled)], NO_CACHE: [rerank(None)]}  # the warm-up fills `filled`
    for run in (extra or {}).values():
        run()
    times: dict[str, list[float]] = {}
    for round_index in range(rounds):
        fresh = next(directories)
        configurations: dict[str, Callable[[], Any]] = {
            FIRST: lambda fresh=fresh: runs[FIRST].append(first(fresh)),
            RERANK: lambda filled=filled: runs[RERANK].append(rerank(filled)),
            NO_CACHE: lambda: runs[NO_CACHE].append(rerank(None)),
            **(extra or {}),
        }
        names = list(configurations)
        for name in names[round_index % len(names) :] + names[: round_index % len(names)]:
            start = time.perf_counter()
            configurations[name]()
            times.setdefault(name, []).append(time.perf_counter() - start)
        filled = fresh
    passes = [run["forward_passes"] for run in runs[FIRST] + runs[RERANK]]
    if passes != [checkpoints] * len(runs[FIRST]) + [0] * len(runs[RERANK]):
        raise AssertionError(f"forward passes: first runs {runs[FIRST]}, re-ranks {runs[RERANK]}")
    reference = runs[NO_CACHE][0]["scores"]
    difference = max(abs(run["scores"][name] - score) for run in runs[RERANK] for name, score in reference.items())
    if difference > 1e-12:
        raise AssertionError(f"re-rank scores differ from the cache=None rank's by {difference}")
    rows = {label: _common.summary(seconds, records) for label, seconds in times.items()}
    result = {
        "checkpoints": checkpoints,
        "records": records,
        "rounds": rounds,
        "configurations": rows,
        "rerank_over_first": rows[RERANK]["median_s"] / rows[FIRST]["median_s"],
        "rerank_over_first_best_rounds": rows[RERANK]["min_s"] / rows[FIRST]["min_s"],
        "first_over_no_cache": rows[FIRST]["median_s"] / rows[NO_CACHE]["median_s"],
        "rerank_scores_equal_no_cache": difference == 0.0,
        "max_abs_score_difference_vs_no_cache": difference,
        "scores": reference,
    }
    print("    " + ", ".join(f"{label} {row['median_s']:.3f} s" for label, row in rows.items()))
    return result


def run(quick: bool = False) -> dict[str, Any]:
    """sample_data (CLI and in-process), then the paper models on a PTB-XL directory (in-process)."""
    logging.getLogger("melep").setLevel(logging.ERROR)  # the sample checkpoints' metadata warnings, every rank
    sample_rounds, paper_rounds = (2, 1) if quick else (7, 3)
    machine = _common.machine_description()
    checkpoints = len(melep_cli.discover_checkpoints([SAMPLE_CHECKPOINTS]))
    records = len(melep_cli.open_target(SAMPLE_TARGET))
    sample: dict[str, Any] = {"rerank_options": _cli_options(SAMPLE_RERANK)}
    payload: dict[str, Any] = {"goal": f"re-rank / first run < {GOAL} on sample_data", "machine": machine}
    with tempfile.TemporaryDirectory(prefix="melep-bench-cache-") as scratch:
        for mode, make in (("cli", _cli), ("in_process", _in_process)):
            print(f"sample_data, {mode}: {checkpoints} checkpoints, {records} records")
            sample[mode] = _scenario(
                make([SAMPLE_CHECKPOINTS], SAMPLE_TARGET, {}),
                make([SAMPLE_CHECKPOINTS], SAMPLE_TARGET, SAMPLE_RERANK),
                checkpoints,
                records,
                sample_rounds,
                Path(scratch) / f"sample-{mode}",
                {HELP: _help} if mode == "cli" else None,
            )
        payload["sample_data"] = sample
        if not _common.missing_ptbxl():
            count = QUICK_PAPER_RECORDS if quick else PAPER_RECORDS
            target = _common.ptbxl_subset(count, Path(scratch) / "ptbxl")
            exported = _common.export_paper_models(("resnet101", "bilstm"), Path(scratch), quick)
            paper: dict[str, Any] = {"rerank_options": _cli_options(PTBXL_RERANK), "format": "onnx", "models": {}}
            for name, files in exported.items():
                print(f"{name} (ONNX), {count} PTB-XL records")
                first, rerank = (_in_process([files["onnx"]], target, options) for options in ({}, PTBXL_RERANK))
                paper["models"][name] = _scenario(
                    first, rerank, 1, count, paper_rounds, Path(scratch) / f"paper-{name}"
                )
            payload["paper_models"] = paper
    return _common.write_results("rank-cache", payload, quick=quick)


def figures(document: dict[str, Any]) -> list[str]:
    sample, paper = document["sample_data"], document.get("paper_models", {})
    lines = [
        "The outputs store: the first rank into an empty cache against a re-rank with other labels and weighting "
        f"on the filled one (no forward pass; sample_data `{' '.join(sample['rerank_options'])}`, PTB-XL "
        f"`{' '.join(paper.get('rerank_options', []))}`), and the re-rank's options with no cache (the reference "
        f"scores); round-robin, medians. Goal: re-rank / first run under {GOAL} on sample_data:",
        "",
        "| target | checkpoints | how | first run | re-rank | no cache | re-rank / first run | (best of rounds) "
        "| scores equal |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | --- |",
    ]

    def row(target: str, checkpoints: str, how: str, result: dict[str, Any]) -> str:
        rows = result["configurations"]
        equal = (
            "yes" if result["rerank_scores_equal_no_cache"] else f"{result['max_abs_score_difference_vs_no_cache']:.0e}"
        )
        return (
            f"| {target} | {checkpoints} | {how} | {rows[FIRST]['median_s']:.3f} s | {rows[RERANK]['median_s']:.3f} s "
            f"| {rows[NO_CACHE]['median_s']:.3f} s | **{result['rerank_over_first']:.3f}** "
            f"| {result['rerank_over_first_best_rounds']:.3f} | {equal} |"
        )

    samples = f"sample_data ({sample['cli']['records']} records)"
    lines.append(row(samples, f"{sample['cli']['checkpoints']} (README)", "CLI (fresh processes)", sample["cli"]))
    lines.append(row(samples, f"{sample['in_process']['checkpoints']} (README)", "in-process", sample["in_process"]))
    for name, result in paper.get("models", {}).items():
        lines.append(row(f"PTB-XL ({result['records']} records)", f"{name} (ONNX)", "in-process", result))
    help_s = sample["cli"]["configurations"][HELP]["median_s"]
    share = help_s / sample["cli"]["configurations"][RERANK]["median_s"]
    lines += ["", f"`melep --help` alone (the start-up every CLI re-rank pays): {help_s:.3f} s, {share:.0%} of it."]
    return lines


BENCHMARKS = {"rank-cache": (run, figures)}
