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
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from typing import Any

import _common
import bench_backends
import bench_cache
import bench_decode
import bench_metric
import bench_rank
import bench_startup
import naive_baseline

#: The metric implementation before optimisation: full runs time it in the same rounds, when git can show it.
METRIC_REFERENCE = "660bcbe"


def _metric_reference(quick: bool) -> str | None:
    """METRIC_REFERENCE for full runs inside a git checkout that has it; else None (new implementation only)."""
    if quick:
        return None
    return METRIC_REFERENCE if _has_revision(METRIC_REFERENCE, "melep_cli/metric.py") else None


def _has_revision(revision: str, path: str) -> bool:
    """Whether this git checkout can show `path` at `revision`."""
    found = subprocess.run(
        ["git", "cat-file", "-e", f"{revision}:{path}"], cwd=_common.REPO_ROOT, capture_output=True, check=False
    )
    return found.returncode == 0


def _decode_reference() -> str | None:
    """bench_decode's reference revision (whole-pass and memory comparisons) when this checkout has it."""
    reference = bench_decode.DECODE_REFERENCE
    return reference if _has_revision(reference, "melep_cli/targets/wfdb_dir.py") else None


def _against_reference(benchmark: Callable[..., dict[str, Any]], reference: str) -> Callable[[bool], dict[str, Any]]:
    """`benchmark(quick=..., against=reference)`; skipped where this checkout lacks the reference revision."""

    def run(quick: bool) -> dict[str, Any]:
        if not _has_revision(reference, "melep_cli/ranking.py"):
            print(f"git revision {reference} is not in this checkout: skipping")
            return {"skipped": f"git revision {reference} (the reference) is not in this checkout"}
        return benchmark(quick=quick, against=reference)

    return run


BENCHMARKS: dict[str, Callable[[bool], dict[str, Any]]] = {
    "metric": lambda quick: bench_metric.run(quick=quick, against=_metric_reference(quick)),
    "backends-cpu": lambda quick: bench_backends.run(device="cpu", quick=quick),
    "backends-cuda": lambda quick: bench_backends.run(device="cuda", quick=quick),
    "naive-baseline": lambda quick: naive_baseline.run(quick=quick),
    "rank-cpu": lambda quick: bench_rank.run_end_to_end(device="cpu", quick=quick),
    "rank-cuda": lambda quick: bench_rank.run_end_to_end(device="cuda", quick=quick),
    "rank-vs-naive": lambda quick: bench_rank.run_versus_naive(quick=quick),
    "rank-decode-once": lambda quick: bench_rank.run_decode_once(quick=quick),
    "rank-memory": lambda quick: bench_rank.run_memory(quick=quick),
    "torchscript-warmup": lambda quick: bench_rank.run_torchscript_warmup(quick=quick),
    "rank-busy": lambda quick: bench_rank.run_busy(quick=quick),
    "rank-prepare": _against_reference(bench_rank.run_prepare_ahead, bench_rank.PREPARE_REFERENCE),
    "rank-cache": lambda quick: bench_cache.run(quick=quick),
    "decode": lambda quick: bench_decode.run(quick=quick, against=_decode_reference()),
    "startup": lambda quick: bench_startup.run(quick=quick),
}


def _revision_rows(scenarios: dict[str, dict[str, Any]]) -> list[str]:
    """A markdown table of before/after scenarios (bench_rank._alternate_revisions)."""
    rows = [
        "| scenario | records | before | after | speed-up | scores differ by |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for label, row in scenarios.items():
        rows.append(
            f"| {label} | {row['records']} | {row['before']['median_s']:.2f} s | {row['after']['median_s']:.2f} s "
            f"| {row['speedup']:.2f}x | {row['max_abs_score_difference']:.0e} |"
        )
    return rows


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
    lines += rank_tables()
    return "\n".join(lines) if lines else "no results yet: run python benchmarks/run_all.py"


def _load(name: str) -> dict[str, Any] | None:
    path = _common.RESULTS_DIR / f"{name}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def rank_tables() -> list[str]:
    """The `melep rank` tables (end to end, naive, decode once, memory, TorchScript warm-up) from results/."""
    lines: list[str] = []
    document = _load("rank-cpu")
    if document:
        machine = document["machine"]
        lines += [
            "",
            f"`melep rank` end to end (in-process `melep_cli.rank`: load, open, decode, preprocess, forward, metric) "
            f"against the model-only forward pass of prepared batches, timed round-robin in the same run; "
            f"{machine['cpu']}, {machine['physical_cores']} cores, load average "
            f"{machine['load_average_at_start'][0]:.1f} at start; PTB-XL 100 Hz directory, batch "
            f"{next(iter(document['models'].values()))['batch_size']}:",
            "",
            "| model | records | model-only TorchScript frozen | model-only ONNX Runtime | rank TorchScript "
            "| rank ONNX "
            "| rank / best model-only (median) | (best of rounds) | decode, forward share of rank |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
        ]
        for model, result in document["models"].items():
            rows = result["configurations"]

            def cell(label: str, rows: dict = rows) -> str:
                row = rows.get(label)
                return f"{row['records_per_s']:.1f}/s ({row['median_s']:.2f} s)" if row else "-"

            profile = result["rank_profile"][result["best_rank"]]["stages"]
            lines.append(
                f"| {model} ({result['gflop_per_record']:.2f} GFLOP) | {result['records']} "
                f"| {cell('model-only torchscript-frozen')} | {cell('model-only onnxruntime')} "
                f"| {cell('rank torchscript')} | {cell('rank onnx')} "
                f"| {result['ratios']['rank_over_best_model_only']:.3f} "
                f"| {result['ratios']['rank_over_best_model_only_best_rounds']:.3f} "
                f"| {profile['decode']['share']:.0%}, {profile['forward']['share']:.0%} |"
            )
        lines.append("")
        for model, result in document["models"].items():
            rows = result["configurations"]
            if "rank_over_best_cold_model_only" in result["ratios"]:
                cold_ts = rows["model-only torchscript-frozen (cold)"]["records_per_s"]
                lines.append(
                    f"From a cold start, {model}: model-only with the session created (TorchScript loaded and "
                    f"frozen) inside the timing, TorchScript {cold_ts:.1f}/s, "
                    f"ONNX Runtime {rows['model-only onnxruntime (cold)']['records_per_s']:.1f}/s; rank / best cold "
                    f"model-only {result['ratios']['rank_over_best_cold_model_only']:.3f} (TorchScript "
                    f"{result['ratios']['rank_torchscript_over_cold_model_only']:.3f}, ONNX "
                    f"{result['ratios']['rank_onnx_over_cold_model_only']:.3f})."
                )
            if "rank onnx (threads=1)" in result["configurations"]:
                rows = result["configurations"]
                lines.append(
                    f"One intra-op thread, {model}: model-only ONNX Runtime "
                    f"{rows['model-only onnxruntime (threads=1)']['records_per_s']:.1f}/s, rank ONNX "
                    f"{rows['rank onnx (threads=1)']['records_per_s']:.1f}/s, ratio "
                    f"{result['ratios']['rank_onnx_threads_1_over_model_only']:.3f}."
                )
            large = result.get("large_target")
            if large:
                rows = large["configurations"]
                lines.append(
                    f"{model} on {large['records']} records: model-only ONNX Runtime "
                    f"{rows['model-only onnxruntime']['records_per_s']:.1f}/s, rank ONNX "
                    f"{rows['rank onnx']['records_per_s']:.1f}/s, ratio {large['rank_onnx_over_model_only']:.3f}."
                )
            for precision in ("bfloat16", "float16"):
                key = f"rank_torchscript_{precision}_over_model_only"
                if key in result["ratios"]:
                    rows = result["configurations"]
                    sixteen = rows[f"model-only torchscript-frozen ({precision})"]["records_per_s"]
                    thirty_two = rows["model-only torchscript-frozen"]["records_per_s"]
                    lines.append(
                        f"`--precision {precision}`, {model}: model-only TorchScript frozen in {precision} "
                        f"{sixteen:.1f}/s ({sixteen / thirty_two:.2f}x float32), "
                        f"rank {rows[f'rank torchscript ({precision})']['records_per_s']:.1f}/s, ratio "
                        f"{result['ratios'][key]:.3f}."
                    )
            sweep = result["rank_batch_size_sweep"]
            sizes = ", ".join(f"{row['batch_size']}: {row['records_per_s']:.1f}" for row in sweep["sizes"])
            lines.append(f"rank batch-size sweep, {model} ({sweep['checkpoint']}), records/s: {sizes}.")
    document = _load("rank-vs-naive")
    if document:
        lines += [
            "",
            f"`melep rank` (defaults) against the naive pipeline (DataLoader batch 128 over wfdb.rdsamp, eager "
            f"PyTorch, Python loop over label pairs), {document['records']} PTB-XL records, same run, round-robin:",
            "",
            "| checkpoints | naive | rank TorchScript | rank ONNX | speed-up (median) | (best of rounds) "
            "| scores agree to |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for scenario, result in document["scenarios"].items():
            rows = result["configurations"]
            lines.append(
                f"| {scenario} | {rows['naive']['median_s']:.2f} s | {rows['rank (torchscript)']['median_s']:.2f} s "
                f"| {rows['rank (onnx)']['median_s']:.2f} s | {result['speedup_best_rank_over_naive']:.2f}x "
                f"| {result['speedup_best_rank_over_naive_best_rounds']:.2f}x "
                f"| {result['max_rel_score_diff_rank_vs_naive']:.0e} |"
            )
        for scenario, result in document["scenarios"].items():
            for precision in ("bfloat16", "float16"):
                if f"speedup_{precision}_over_naive" in result:
                    seconds = result["configurations"][f"rank (torchscript, {precision})"]["median_s"]
                    lines.append(
                        f"\n`--precision {precision}`, {scenario}: rank {seconds:.2f} s, "
                        f"{result[f'speedup_{precision}_over_naive']:.2f}x faster than the naive pipeline; MELEP "
                        f"within {result[f'max_abs_score_diff_{precision}_vs_naive']:.0e} of its float32 scores "
                        f"(ran in: {', '.join(f'{k} {v}' for k, v in result[f'{precision}_precisions'].items())})."
                    )
    document = _load("rank-decode-once")
    if document:
        rows = document["configurations"]
        together, separate = rows["one rank, all checkpoints"], rows["one rank per checkpoint"]
        lines += [
            "",
            f"Decode once: {len(document['checkpoints'])} checkpoints ({document['distinct_input_specs']} input "
            f"specs) on {document['target_records']} CinC 2021 records (500 Hz WFDB): one rank decoded "
            f"{document['decodes_per_rank']} records ({together['decode_seconds']:.2f} s, "
            f"{together['decode_share']:.0%} of {together['median_s']:.2f} s); one rank per checkpoint decoded "
            f"{document['decodes_one_rank_per_checkpoint']} ({separate['decode_share']:.0%} of "
            f"{separate['median_s']:.2f} s); one rank is {document['speedup_one_rank_over_separate_ranks']:.2f}x "
            "faster.",
        ]
    document = _load("rank-prepare")
    if document and "scenarios" in document:
        lines += [
            "",
            "Model inputs prepared ahead (by the producer thread that decodes them) against the revision before "
            f"({document['reference_revision']}: decoded on a thread, prepared on the main thread between forward "
            "passes); in-process ranks without a cache in child processes alternating the two, same run; medians:",
            "",
            *_revision_rows(document["scenarios"]),
        ]
    lines += cache_table()
    document = _load("rank-memory")
    if document:
        lines += [
            "",
            f"Peak memory of `melep rank` (fresh process, VmHWM reset after imports; HDF5, records x 12 leads, "
            f"Z = {document['source_labels']}, batch {document['batch_size']}):",
            "",
            "| records n | samples | peak RSS (MB) | above the RSS after imports (MB) | signals as float32 (MB) "
            "| outputs (MB) | seconds |",
            "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for row in document["sizes"]:
            lines.append(
                f"| {row['records']:,} | {row.get('samples', document['samples'])} | {row['peak_rss_mb']:.0f} "
                f"| {row['rank_peak_above_baseline_mb']:.0f} | {row['signals_float32_mb']:,.0f} "
                f"| {row['outputs_float32_mb']:.1f} | {row['seconds']:.1f} |"
            )
        lines.append(
            f"\nPeak RSS grows {document['peak_mb_per_record'] * 1e3:.2f} kB per record; the signals take "
            f"{document['signal_mb_per_record'] * 1e3:.0f} kB per record, the float32 outputs "
            f"{document['output_mb_per_record_float32'] * 1e3:.1f} kB."
        )
    document = _load("torchscript-warmup")
    if document:
        lines += [
            "",
            "Frozen TorchScript on the CPU, first calls of a freshly loaded module (one batch each):",
            "",
            "| model | setting | first call (s) | first three (s) | later calls (s) |",
            "| --- | --- | ---: | ---: | ---: |",
        ]
        for model, result in document["models"].items():
            for label, row in result["settings"].items():
                lines.append(
                    f"| {model} | {label} | {row['first_call_s']:.3f} | {row['first_three_calls_s']:.3f} "
                    f"| {row['steady_call_s']:.3f} |"
                )
    document = _load("rank-busy")
    if document:
        lines += [
            "",
            "`melep rank` CLI (one process per rank, startup included) on a shared machine: default threads "
            f"against `--threads 1`; 'other jobs' = {document['load_processes']} processes running multi-threaded "
            f"torch (load average {document['load_average_during'] or 0:.1f}):",
            "",
            "| situation | checkpoint | records per rank | default threads | --threads 1 | --threads 1 speed-up |",
            "| --- | --- | ---: | ---: | ---: | ---: |",
        ]
        for situation, cases in document["situations"].items():
            for case, result in cases.items():
                default, single = result["configurations"].values()
                lines.append(
                    f"| {situation} | {case} | {result['records_per_rank']} | {default['median_s']:.1f} s "
                    f"| {single['median_s']:.1f} s | {result['speedup_threads_1']:.2f}x |"
                )
    document = _load("startup")
    if document:
        lines += [
            "",
            "Start-up of the `melep` command (fresh processes, wall time) against the same command after importing "
            f"{', '.join(bench_startup.EAGER_IMPORTS)} first (what melep imported at module level before), "
            f"round-robin, median of {document['repeats']}:",
            "",
            "| command | lazy imports | eager baseline | speed-up | saved |",
            "| --- | ---: | ---: | ---: | ---: |",
        ]
        for command, result in document["commands"].items():
            rows = result["configurations"]
            lines.append(
                f"| {command} | {rows['lazy imports']['median_s']:.2f} s | {rows['eager baseline']['median_s']:.2f} s "
                f"| {result['speedup']:.2f}x | {result['seconds_saved']:.2f} s |"
            )
    return lines


def cache_table() -> list[str]:
    """rank-cache: the first rank into an empty outputs store against a re-rank on the filled one."""
    document = _load("rank-cache")
    if not document:
        return []
    machine, sample = document["machine"], document["sample_data"]
    first, rerank, no_cache = bench_cache.FIRST, bench_cache.RERANK, bench_cache.NO_CACHE
    lines = [
        "",
        f"The outputs store (`rank-cache`): the first rank into an empty cache against a re-rank with other labels "
        f"and weighting on the filled one (no forward pass; sample_data `{' '.join(sample['rerank_options'])}`, "
        f"PTB-XL `{' '.join(document.get('paper_models', {}).get('rerank_options', []))}`), and the re-rank's "
        f"options with no cache (the reference scores); {machine['cpu']}, {machine['physical_cores']} cores, "
        f"load average {machine['load_average_at_start'][0]:.1f} at start; round-robin, medians. Goal: re-rank / "
        f"first run under {bench_cache.GOAL} on sample_data:",
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
            f"| {target} | {checkpoints} | {how} | {rows[first]['median_s']:.3f} s | {rows[rerank]['median_s']:.3f} s "
            f"| {rows[no_cache]['median_s']:.3f} s | **{result['rerank_over_first']:.3f}** "
            f"| {result['rerank_over_first_best_rounds']:.3f} | {equal} |"
        )

    samples = f"sample_data ({sample['cli']['records']} records)"
    lines.append(row(samples, f"{sample['cli']['checkpoints']} (README)", "CLI (fresh processes)", sample["cli"]))
    lines.append(row(samples, f"{sample['in_process']['checkpoints']} (README)", "in-process", sample["in_process"]))
    paper = document.get("paper_models", {})
    for name, result in paper.get("models", {}).items():
        lines.append(row(f"PTB-XL ({result['records']} records)", f"{name} (ONNX)", "in-process", result))
    help_s = sample["cli"]["configurations"].get(bench_cache.HELP, {}).get("median_s")
    if help_s is not None:
        lines.append(
            f"\n`melep --help` alone (a fresh process: the start-up every CLI re-rank pays) takes {help_s:.3f} s, "
            f"{help_s / sample['cli']['configurations'][rerank]['median_s']:.0%} of the CLI re-rank."
        )
    return lines


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
