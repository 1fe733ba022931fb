"""`melep rank` end to end through `melep_cli.rank`: against the model alone, the naive pipeline, K ranks of one, n.

- `rank-cpu` / `rank-cuda` (`run_end_to_end`): `melep_cli.rank(..., cache=None)` on the paper's 1-D
  ResNet-101 and Bi-LSTM (TorchScript and ONNX checkpoints) over a PTB-XL 100 Hz directory, timed round-robin
  with the model-only forward pass of the best backends of `backends-cpu` (frozen TorchScript, ONNX Runtime
  sequential) on the same records prepared before timing: warm (the runtime started before the timing) and
  cold (session created, module loaded and frozen, inside it). Ratio = rank records/s / best model-only
  records/s. Where the device has fast 16-bit arithmetic, the ResNet-101 also in `--precision`, its own ratio.
  Then a rank batch-size sweep (where the default batch size comes from).
- `rank-vs-naive` (`run_versus_naive`): rank with its defaults against `naive_baseline` on the same records
  and labels: the ResNet-101, then both paper models in one ranking; both must give the same MELEP. Beside
  them, reading the records: melep's reader (`open_target(...).batches`) against `wfdb.rdsamp`.
- `rank-decode-once` (`run_decode_once`): eight small checkpoints (four input specs) on the CinC 2021 WFDB
  directory: records decoded (`melep_cli.forward(...).decoded`) by one pass over the eight and by eight
  passes of one, one rank of eight against eight ranks of one, and a decode-only pass over the target
  (`open_target(...).batches`) in the same rounds: the share of rank's time spent decoding.
- `rank-memory` (`run_memory`): peak RSS of a fresh process ranking generated HDF5 targets of 10^3 .. 10^5
  records, against the RSS after imports and what the signals and outputs would take.

    python benchmarks/run_all.py --only rank-cpu rank-vs-naive [--quick]
"""

from __future__ import annotations

import functools
import json
import logging
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import _common
import models
import naive_baseline
import numpy as np
import torch

import melep_cli

RECORDS = {"resnet101": 256, "bilstm": 1024}
QUICK_RECORDS = {"resnet101": 16, "bilstm": 64}
CUDA_RECORDS = {"resnet101": 2048, "bilstm": 2048}
CPU_SWEEP, CUDA_SWEEP, QUICK_SWEEP = (16, 32, 64, 128), (64, 128, 256, 512), (8, 16)
END_TO_END_ROUNDS = 5  # 3 left ratios 10 % apart run to run on a shared 2-core machine
SIXTEEN_BIT_MODELS = ("resnet101",)  # the Bi-LSTM's LSTM keeps float32 inside: it falls back
SOURCE_LABELS = 100  # Z of the small checkpoints
#: (sampling_rate, samples, normalization, format) of the decode-once checkpoints: four input specs, two each.
DECODE_ONCE_SPECS = (
    (100, 1000, "none", "ts"),
    (100, 1000, "none", "onnx"),
    (100, 1000, "zscore", "ts"),
    (100, 1000, "zscore", "onnx"),
    (250, 2500, "none", "ts"),
    (250, 2500, "none", "onnx"),
    (500, 5000, "zscore", "ts"),
    (500, 5000, "zscore", "onnx"),
)
#: (records, samples per record) of rank-memory: growing n, then 10^4 records four times longer.
MEMORY_SIZES = ((1_000, 500), (10_000, 500), (100_000, 500), (10_000, 2_000))
QUICK_MEMORY_SIZES = ((500, 500), (2_000, 500), (2_000, 2_000))


def timed_rank(checkpoints: list[Path], target: Path, target_options: dict | None = None, **options: Any) -> tuple:
    """(seconds, report) of one `melep_cli.rank` call without the outputs store (every forward pass runs); the
    target opened inside the timing, with `target_options` when given."""
    start = time.perf_counter()
    opened = melep_cli.open_target(target, **target_options) if target_options else target
    report = melep_cli.rank(checkpoints, opened, cache=None, **options)
    seconds = time.perf_counter() - start
    if report.failed:
        raise RuntimeError("rank failed: " + "; ".join(str(outcome.error) for outcome in report.failed))
    return seconds, report


def prepared_batches(target: Path, batch_size: int) -> list[np.ndarray]:
    """The target's records as the paper models' input (100 Hz, 1000 samples, NCT, float32), before timing."""
    spec = melep_cli.InputSpec(models.SAMPLING_RATE, models.SAMPLES, models.LEADS, "NCT", "none", "float32")
    opened = melep_cli.open_target(target)
    return [
        melep_cli.prepare(batch.signals, batch.sampling_rate, batch.leads, spec) for batch in opened.batches(batch_size)
    ]


# ----- the model alone: the best backends of backends-cpu, warm and cold ----------------------------------------
def _session(path: Path, device: str) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = _common.physical_cores()
    options.inter_op_num_threads = 1
    provider = "CUDAExecutionProvider" if device == "cuda" else "CPUExecutionProvider"
    return ort.InferenceSession(str(path), options, providers=[provider])


def _run_session(session: Any, batches: list[np.ndarray]) -> None:
    name = session.get_inputs()[0].name
    for batch in batches:
        session.run(None, {name: batch})


def _frozen(path: Path, device: str, dtype: torch.dtype = torch.float32) -> Any:
    module = torch.jit.load(str(path), map_location="cuda:0" if device == "cuda" else "cpu").eval()
    return torch.jit.freeze(module.to(dtype))


def _run_module(module: Any, batches: list[np.ndarray], device: str, dtype: torch.dtype = torch.float32) -> None:
    with torch.inference_mode(), torch.jit.optimized_execution(device == "cuda"):
        for batch in batches:
            tensor = torch.from_numpy(batch)
            if device == "cuda":
                tensor = tensor.pin_memory().to("cuda:0", non_blocking=True)
            module(tensor.to(dtype)).float().cpu().numpy()


def model_only(files: dict[str, Any], device: str, precision: str | None) -> dict[str, Callable[[list], None]]:
    """Model-only runners: warm (module and session made here), cold (made inside the call), and the 16-bit one."""
    frozen, session = _frozen(files["ts"], device), _session(files["onnx"], device)
    runners = {
        "model-only torchscript-frozen": functools.partial(_run_module, frozen, device=device),
        "model-only onnxruntime": functools.partial(_run_session, session),
        "model-only torchscript-frozen (cold)": lambda batches: _run_module(
            _frozen(files["ts"], device), batches, device
        ),
        "model-only onnxruntime (cold)": lambda batches: _run_session(_session(files["onnx"], device), batches),
    }
    if precision:
        dtype = getattr(torch, precision)
        sixteen = _frozen(files["ts"], device, dtype)
        runners[f"model-only torchscript-frozen ({precision})"] = functools.partial(
            _run_module, sixteen, device=device, dtype=dtype
        )
    return runners


# ----- rank-cpu / rank-cuda ---------------------------------------------------------------------------------------
def run_end_to_end(quick: bool = False, device: str = "cpu") -> dict[str, Any]:
    """rank vs the best model-only backend, warm and cold, on the same records in the same rounds; a rank sweep."""
    if device == "cuda" and not torch.cuda.is_available():
        return _common.skipped("CUDA not available")
    if missing := _common.missing_ptbxl():
        return missing
    rounds = 1 if quick else END_TO_END_ROUNDS
    counts = QUICK_RECORDS if quick else CUDA_RECORDS if device == "cuda" else RECORDS
    sweep = QUICK_SWEEP if quick else CUDA_SWEEP if device == "cuda" else CPU_SWEEP
    batch_size = 256 if device == "cuda" else 32  # melep's defaults
    machine = _common.machine_description()
    results = {}
    with tempfile.TemporaryDirectory(prefix="melep-bench-rank-") as scratch:
        exported = _common.export_paper_models(tuple(counts), Path(scratch), quick)
        for name, count in counts.items():
            files = exported[name]
            target = _common.ptbxl_subset(count, Path(scratch) / f"ptbxl-{name}")
            print(f"{name}: {files['gflop_per_record']:.2f} GFLOP/record, {count} PTB-XL records")
            precision = _common.sixteen_bit(files["ts"], device) if name in SIXTEEN_BIT_MODELS else None
            results[name] = _end_to_end(files, target, count, device, batch_size, rounds, sweep, precision)
    payload = {
        "device": device,
        "what": "melep_cli.rank(..., cache=None) (load, open, decode, preprocess, forward, metric) vs the "
        "model-only forward pass of prepared batches (warm, and cold: the runtime started inside the timing), "
        "timed round-robin in the same run",
        "input": f"the first N rows of {_common.PTBXL_DIR} (100 Hz)",
        "machine": machine,
        "models": results,
    }
    return _common.write_results(f"rank-{device}", payload, quick=quick)


def _end_to_end(files, target, count, device, batch_size, rounds, sweep, precision) -> dict[str, Any]:
    batches = prepared_batches(target, batch_size)
    configurations: dict[str, Callable[[], Any]] = {
        label: functools.partial(runner, batches) for label, runner in model_only(files, device, precision).items()
    }
    reports: dict[str, list] = {}

    def rank(label: str, key: str, precision: str = "float32", size: int = batch_size) -> None:
        seconds, report = timed_rank([files[key]], target, device=device, batch_size=size, precision=precision)
        if report.outcomes[0].precision != precision:
            raise RuntimeError(f"{label}: ran in {report.outcomes[0].precision}, not {precision}")
        reports.setdefault(label, []).append((seconds, report.outcomes[0].seconds))

    configurations["rank torchscript"] = functools.partial(rank, "rank torchscript", "ts")
    configurations["rank onnx"] = functools.partial(rank, "rank onnx", "onnx")
    if precision:
        label = f"rank torchscript ({precision})"
        configurations[label] = functools.partial(rank, label, "ts", precision)
    for label, configuration in configurations.items():  # warm-up: file cache, the runtimes' first runs
        configuration()
        if "(cold)" not in label and label.startswith("model-only"):
            configuration()
    reports.clear()
    rows = {
        label: _common.summary(seconds, count) for label, seconds in _common.round_robin(configurations, rounds).items()
    }
    exact = [label for label in rows if "16)" not in label and "(cold)" not in label]
    warm, ranks = (
        [label for label in exact if label.startswith("model-only")],
        [label for label in exact if label.startswith("rank")],
    )
    cold = [label for label in rows if label.endswith("(cold)")]
    fastest = functools.partial(max, key=lambda label: rows[label]["records_per_s"])
    best_rank, best_warm, best_cold = fastest(ranks), fastest(warm), fastest(cold)
    ratios = {
        "rank_over_best_model_only": rows[best_rank]["records_per_s"] / rows[best_warm]["records_per_s"],
        "rank_over_best_model_only_best_rounds": max(rows[label]["records_per_s_best_round"] for label in ranks)
        / max(rows[label]["records_per_s_best_round"] for label in warm),
        "rank_over_best_cold_model_only": rows[best_rank]["records_per_s"] / rows[best_cold]["records_per_s"],
        "rank_torchscript_over_cold_model_only": rows["rank torchscript"]["records_per_s"]
        / rows["model-only torchscript-frozen (cold)"]["records_per_s"],
        "rank_onnx_over_cold_model_only": rows["rank onnx"]["records_per_s"]
        / rows["model-only onnxruntime (cold)"]["records_per_s"],
    }
    if precision:
        ratios[f"rank_torchscript_{precision}_over_model_only"] = (
            rows[f"rank torchscript ({precision})"]["records_per_s"]
            / rows[f"model-only torchscript-frozen ({precision})"]["records_per_s"]
        )
    for label, row in rows.items():
        print(f"  {label:<40} {row['records_per_s']:8.1f} records/s ({row['median_s']:.2f} s)")
    print("  " + ", ".join(f"{key} {value:.3f}" for key, value in ratios.items()))
    # Public profile: each checkpoint's own time (load, forward passes, score; RankReport.outcomes[].seconds).
    shares = {label: statistics.median(own / seconds for seconds, own in runs) for label, runs in reports.items()}
    best_key = "ts" if best_rank == "rank torchscript" else "onnx"
    sweep_rank = functools.partial(rank, "sweep", best_key)
    sweep_times = _common.round_robin(
        {size: functools.partial(sweep_rank, size=size) for size in sweep}, max(1, rounds - 1)
    )
    sweep_rows = [{"batch_size": size, **_common.summary(times, count)} for size, times in sweep_times.items()]
    print("  rank batch-size sweep: " + ", ".join(f"{r['batch_size']}: {r['records_per_s']:.1f}" for r in sweep_rows))
    return {
        "gflop_per_record": files["gflop_per_record"],
        "records": count,
        "batch_size": batch_size,
        "repeats": rounds,
        "configurations": rows,
        "best_model_only": best_warm,
        "best_rank": best_rank,
        "ratios": ratios,
        "checkpoint_share_of_rank": shares,
        "rank_batch_size_sweep": {"checkpoint": best_key, "sizes": sweep_rows},
    }


def end_to_end_figures(document: dict[str, Any]) -> list[str]:
    lines = [
        f"`melep_cli.rank` end to end against the model alone on the same prepared records ({document['device']}), "
        "same rounds, medians; warm: the runtime started before the timing, cold: inside it:",
        "",
        "| model | records | model-only TorchScript frozen | model-only ONNX Runtime | rank TorchScript | rank ONNX "
        "| rank / best warm model-only | (best of rounds) | rank / best cold model-only |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    notes = []
    for model, result in document["models"].items():
        rows, ratios = result["configurations"], result["ratios"]

        def cell(label: str, rows: dict = rows) -> str:
            return f"{rows[label]['records_per_s']:.1f}/s ({rows[label]['median_s']:.2f} s)" if label in rows else "-"

        lines.append(
            f"| {model} ({result['gflop_per_record']:.2f} GFLOP) | {result['records']} "
            f"| {cell('model-only torchscript-frozen')} | {cell('model-only onnxruntime')} "
            f"| {cell('rank torchscript')} | {cell('rank onnx')} | {ratios['rank_over_best_model_only']:.3f} "
            f"| {ratios['rank_over_best_model_only_best_rounds']:.3f} "
            f"| {ratios['rank_over_best_cold_model_only']:.3f} |"
        )
        notes.append(
            f"{model}: cold model-only TorchScript {cell('model-only torchscript-frozen (cold)')}, ONNX Runtime "
            f"{cell('model-only onnxruntime (cold)')}; rank / cold: TorchScript "
            f"{ratios['rank_torchscript_over_cold_model_only']:.3f}, ONNX "
            f"{ratios['rank_onnx_over_cold_model_only']:.3f}."
        )
        for precision in ("bfloat16", "float16"):
            if f"rank_torchscript_{precision}_over_model_only" in ratios:
                sixteen = rows[f"model-only torchscript-frozen ({precision})"]["records_per_s"]
                thirty_two = rows["model-only torchscript-frozen"]["records_per_s"]
                notes.append(
                    f"{model}, `--precision {precision}`: model-only {sixteen:.1f}/s ({sixteen / thirty_two:.2f}x "
                    f"float32), rank {rows[f'rank torchscript ({precision})']['records_per_s']:.1f}/s, ratio "
                    f"{ratios[f'rank_torchscript_{precision}_over_model_only']:.3f}."
                )
        if "checkpoint_share_of_rank" in result:
            shares = ", ".join(f"{label} {share:.0%}" for label, share in result["checkpoint_share_of_rank"].items())
            notes.append(f"{model}: the checkpoint's own time (load, forward passes, score) in rank: {shares}.")
        sweep = result["rank_batch_size_sweep"]
        sizes = ", ".join(f"{row['batch_size']}: {row['records_per_s']:.1f}" for row in sweep["sizes"])
        notes.append(f"{model}: rank batch-size sweep ({sweep['checkpoint']}), records/s: {sizes}.")
    return [*lines, "", *notes]


# ----- rank-vs-naive ----------------------------------------------------------------------------------------------
def run_versus_naive(quick: bool = False) -> dict[str, Any]:
    """rank against naive_baseline on the ResNet-101, then on both paper models in one ranking."""
    if missing := _common.missing_ptbxl():
        return missing
    count, rounds = (32, 1) if quick else (256, 3)
    names = ("bilstm",) if quick else ("resnet101", "bilstm")
    plans = {names[0]: names[:1]} if quick else {"resnet101": names[:1], "resnet101 + bilstm": names}
    record_paths, labels = naive_baseline.ptbxl_target(_common.PTBXL_DIR, count)
    machine = _common.machine_description()
    with tempfile.TemporaryDirectory(prefix="melep-bench-naive-") as scratch:
        exported = _common.export_paper_models(names, Path(scratch), quick)
        target = _common.ptbxl_subset(count, Path(scratch) / "ptbxl")
        opened = melep_cli.open_target(target, labels=naive_baseline.SUPERCLASSES)
        if tuple(opened.label_names) != naive_baseline.SUPERCLASSES or not np.array_equal(opened.labels, labels):
            raise RuntimeError("melep's PTB-XL reader and the naive baseline disagree on records or labels")
        precision = _common.sixteen_bit(exported[names[0]]["ts"], "cpu")
        scenarios = {
            label: _versus_naive([exported[name] for name in members], target, record_paths, labels, rounds, precision)
            for label, members in plans.items()
        }
        reading = _reading(target, record_paths, rounds)
    payload = {
        "what": "melep_cli.rank (defaults) vs naive_baseline (DataLoader batch 128 over wfdb.rdsamp, eager PyTorch "
        "on the exported nn.Module, per-pair LEEP loop), same records and labels, round-robin; speed-up = naive "
        "median / rank median; reading: melep's reader vs wfdb.rdsamp on the same records",
        "records": count,
        "machine": machine,
        "scenarios": scenarios,
        "reading": reading,
    }
    return _common.write_results("rank-vs-naive", payload, quick=quick)


def _versus_naive(exported, target, record_paths, labels, rounds, precision) -> dict[str, Any]:
    scores: dict[str, float] = {}
    precisions: dict[str, str | None] = {}

    def naive() -> None:
        for files in exported:  # each checkpoint reads the records again, as naively done
            logits = naive_baseline.naive_forward(files["module"], naive_baseline.WfdbRecords(record_paths))
            scores[f"naive bench-{files['name']}"] = naive_baseline.naive_melep(logits, labels)["score"]

    def ranked(key: str, precision: str = "float32") -> None:
        options = {"labels": naive_baseline.SUPERCLASSES}
        _, report = timed_rank([files[key] for files in exported], target, options, precision=precision)
        for outcome in report.outcomes:
            scores[f"rank {key} {precision} {outcome.name}"] = outcome.melep
            precisions[outcome.name] = outcome.precision

    configurations = {"naive": naive, "rank (torchscript)": lambda: ranked("ts"), "rank (onnx)": lambda: ranked("onnx")}
    if precision:  # reported apart: not the same arithmetic as the naive pipeline
        configurations[f"rank (torchscript, {precision})"] = lambda: ranked("ts", precision)
    for configuration in configurations.values():  # warm-up
        configuration()
    times = _common.round_robin(configurations, rounds)
    rows = {label: _common.summary(seconds, len(record_paths) * len(exported)) for label, seconds in times.items()}
    naive_s, ranks = rows["naive"]["median_s"], ["rank (torchscript)", "rank (onnx)"]
    best = min(ranks, key=lambda label: rows[label]["median_s"])
    members = [f"bench-{files['name']}" for files in exported]
    result: dict[str, Any] = {
        "checkpoints": members,
        "configurations": rows,
        "best_rank": best,
        "speedup_best_rank_over_naive": naive_s / rows[best]["median_s"],
        "speedup_best_rank_over_naive_best_rounds": rows["naive"]["min_s"]
        / min(rows[label]["min_s"] for label in ranks),
        "max_rel_score_diff_rank_vs_naive": max(
            abs(scores[f"rank {key} float32 {name}"] / scores[f"naive {name}"] - 1)
            for name in members
            for key in ("ts", "onnx")
        ),
    }
    if precision:
        result[f"speedup_{precision}_over_naive"] = naive_s / rows[f"rank (torchscript, {precision})"]["median_s"]
        result[f"{precision}_precisions"] = {name: precisions[name] for name in members}
        result[f"max_abs_score_diff_{precision}_vs_naive"] = max(
            abs(scores[f"rank ts {precision} {name}"] - scores[f"naive {name}"]) for name in members
        )
    print(f"{' + '.join(members)}: " + ", ".join(f"{label} {row['median_s']:.2f} s" for label, row in rows.items()))
    if result["max_rel_score_diff_rank_vs_naive"] > 1e-6:
        raise AssertionError(f"rank and the naive pipeline disagree: {scores}")
    return result


def _reading(target: Path, record_paths: list[Path], rounds: int) -> dict[str, Any]:
    """Decoding the same records: melep's reader (batches of 32) against wfdb.rdsamp, one record at a time."""
    import wfdb

    opened = melep_cli.open_target(target)
    configurations = {
        "melep reader": lambda: sum(len(batch) for batch in opened.batches(32)),
        "wfdb.rdsamp": lambda: [wfdb.rdsamp(str(path)) for path in record_paths],
    }
    for configuration in configurations.values():
        configuration()
    times = _common.round_robin(configurations, max(3, rounds))
    rows = {label: _common.summary(seconds, len(record_paths)) for label, seconds in times.items()}
    return {
        "configurations": rows,
        "us_per_record": {label: row["median_s"] / row["records"] * 1e6 for label, row in rows.items()},
        "speedup": rows["wfdb.rdsamp"]["median_s"] / rows["melep reader"]["median_s"],
    }


def versus_naive_figures(document: dict[str, Any]) -> list[str]:
    lines = [
        f"`melep rank` (defaults) against the naive pipeline (DataLoader batch 128 over wfdb.rdsamp, eager PyTorch, "
        f"Python loop over label pairs), {document['records']} PTB-XL records, same run, round-robin:",
        "",
        "| checkpoints | naive | rank TorchScript | rank ONNX | speed-up (median) | (best of rounds) "
        "| scores agree to |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    notes = []
    for scenario, result in document["scenarios"].items():
        rows = result["configurations"]
        lines.append(
            f"| {scenario} | {rows['naive']['median_s']:.2f} s | {rows['rank (torchscript)']['median_s']:.2f} s "
            f"| {rows['rank (onnx)']['median_s']:.2f} s | {result['speedup_best_rank_over_naive']:.2f}x "
            f"| {result['speedup_best_rank_over_naive_best_rounds']:.2f}x "
            f"| {result['max_rel_score_diff_rank_vs_naive']:.0e} |"
        )
        for precision in ("bfloat16", "float16"):
            if f"speedup_{precision}_over_naive" in result:
                seconds = rows[f"rank (torchscript, {precision})"]["median_s"]
                notes.append(
                    f"{scenario}, `--precision {precision}`: rank {seconds:.2f} s, "
                    f"{result[f'speedup_{precision}_over_naive']:.2f}x faster than the naive pipeline; MELEP within "
                    f"{result[f'max_abs_score_diff_{precision}_vs_naive']:.0e} of its float32 scores."
                )
    if "reading" in document:
        reading = document["reading"]["us_per_record"]
        notes.append(
            f"Reading a PTB-XL record: melep's reader {reading['melep reader']:.0f} µs, wfdb.rdsamp "
            f"{reading['wfdb.rdsamp']:.0f} µs ({document['reading']['speedup']:.1f}x)."
        )
    return [*lines, "", *notes]


# ----- rank-decode-once -------------------------------------------------------------------------------------------
def export_small_checkpoints(directory: Path, specs: tuple[tuple[int, int, str, str], ...]) -> list[Path]:
    """One SmallCnn checkpoint per spec (different seeds), its metadata stating rate, length and normalisation."""
    torch.set_num_threads(1)
    paths = []
    for index, (rate, samples, normalization, fmt) in enumerate(specs):
        metadata = {
            **models.checkpoint_metadata("smallcnn", SOURCE_LABELS),
            "name": f"small{index}",
            "sampling_rate": rate,
            "samples": samples,
            "normalization": normalization,
        }
        model = models.small_cnn(SOURCE_LABELS, seed=index)
        paths.append(
            models.export_checkpoint(model, directory, f"small{index}-{rate}hz", metadata, formats=(fmt,))[fmt]
        )
    torch.set_num_threads(_common.physical_cores())
    return paths


def run_decode_once(quick: bool = False) -> dict[str, Any]:
    """Records decoded for K checkpoints, one rank of K against K ranks of one, and the decode share of a rank."""
    if not _common.CINC_DIR.is_dir():
        return _common.skipped(f"CinC 2021 records not found at {_common.CINC_DIR}")
    rounds, specs = (1, DECODE_ONCE_SPECS[:4]) if quick else (3, DECODE_ONCE_SPECS)
    logging.getLogger("melep").setLevel(logging.ERROR)  # the same unmapped SNOMED code warned on every open
    machine = _common.machine_description()
    target = _common.CINC_DIR
    records = len(melep_cli.open_target(target))
    with tempfile.TemporaryDirectory(prefix="melep-bench-decode-") as scratch:
        checkpoints = export_small_checkpoints(Path(scratch), specs)
        together = melep_cli.forward(checkpoints, target, cache=None, device="cpu").decoded
        separately = sum(melep_cli.forward([path], target, cache=None, device="cpu").decoded for path in checkpoints)
        configurations = {
            "one rank, all checkpoints": lambda: timed_rank(checkpoints, target, device="cpu"),
            "one rank per checkpoint": lambda: [timed_rank([path], target, device="cpu") for path in checkpoints],
            "decoding alone": lambda: sum(len(batch) for batch in melep_cli.open_target(target).batches(32)),
        }
        for configuration in configurations.values():  # warm-up: file cache, imports
            configuration()
        times = _common.round_robin(configurations, rounds)
    rows = {label: _common.summary(seconds, records) for label, seconds in times.items()}
    one, per_checkpoint, decoding = (rows[label]["median_s"] for label in configurations)
    payload = {
        "what": "melep_cli.rank over K small checkpoints (four input specs) on a WFDB directory against one rank per "
        "checkpoint; records decoded as melep_cli.forward reports them; a decode-only pass (open_target + batches) "
        "in the same rounds",
        "machine": machine,
        "target": str(target),
        "target_records": records,
        "checkpoints": [path.name for path in checkpoints],
        "distinct_input_specs": len({spec[:3] for spec in specs}),
        "decodes_per_rank": together,
        "decodes_one_rank_per_checkpoint": separately,
        "speedup_one_rank_over_separate_ranks": per_checkpoint / one,
        "decode_seconds": decoding,
        "decode_share_of_one_rank": decoding / one,
        "decode_share_of_ranks_per_checkpoint": len(checkpoints) * decoding / per_checkpoint,
        "configurations": rows,
    }
    print(
        f"{len(checkpoints)} checkpoints: {together} decodes in one rank ({separately} in one rank each); one rank "
        f"{one:.2f} s, one each {per_checkpoint:.2f} s; decoding alone {decoding:.2f} s"
    )
    if together != records:
        raise AssertionError(f"one rank decoded {together} records of a target of {records}")
    return _common.write_results("rank-decode-once", payload, quick=quick)


def decode_once_figures(document: dict[str, Any]) -> list[str]:
    rows = document["configurations"]
    one, each = rows["one rank, all checkpoints"]["median_s"], rows["one rank per checkpoint"]["median_s"]
    if "decode_share_of_one_rank" in document:
        share, share_each = document["decode_share_of_one_rank"], document["decode_share_of_ranks_per_checkpoint"]
    else:  # results of the earlier script: the reader's per-record function timed inside rank
        share, share_each = (
            rows[label]["decode_share"] for label in ("one rank, all checkpoints", "one rank per checkpoint")
        )
    return [
        f"Decode once: {len(document['checkpoints'])} checkpoints ({document['distinct_input_specs']} input specs) on "
        f"{document['target_records']} CinC 2021 records (500 Hz WFDB): one rank decoded "
        f"{document['decodes_per_rank']} records, one rank per checkpoint "
        f"{document['decodes_one_rank_per_checkpoint']}; one rank {one:.2f} s "
        f"(decoding {share:.0%} of it), one rank per checkpoint {each:.2f} s (decoding {share_each:.0%}): one rank is "
        f"{document['speedup_one_rank_over_separate_ranks']:.2f}x faster."
    ]


# ----- rank-memory ------------------------------------------------------------------------------------------------
def write_hdf5_target(path: Path, count: int, samples: int, leads: int = 12) -> Path:
    """A FORMATS.md HDF5 target of `count` synthetic records (int16, gzip chunks of 1000 records, 100 Hz)."""
    import h5py

    rng = np.random.default_rng(0)
    pattern = (np.sin(np.linspace(0, 10 * np.pi, samples))[None, :, None] * 1000 + np.arange(leads) * 10).astype(
        np.int16
    )
    with h5py.File(path, "w") as handle:
        shape, chunks = (count, samples, leads), (min(count, 1000), samples, leads)
        signals = handle.create_dataset(
            "signals", shape, dtype=np.int16, chunks=chunks, compression="gzip", compression_opts=1
        )
        for start in range(0, count, 10_000):
            stop = min(count, start + 10_000)
            signals[start:stop] = pattern + rng.integers(-50, 50, size=(stop - start, 1, leads), dtype=np.int16)
        signals.attrs["sampling_rate"] = 100.0
        index = np.arange(count)
        labels = np.stack([index % 5 == 0, index % 3 == 0, index % 7 == 0], axis=1).astype(np.uint8)
        handle.create_dataset("labels", data=labels).attrs["label_names"] = ["A", "B", "C"]
    return path


_MEMORY_CHILD = """
import json, sys, time
from pathlib import Path
import onnxruntime, torch  # both runtimes are part of the RSS after imports
import melep_cli

def status(key):
    lines = Path("/proc/self/status").read_text().splitlines()
    return next(int(line.split()[1]) for line in lines if line.startswith(key + ":"))

baseline = status("VmRSS")
Path("/proc/self/clear_refs").write_text("5")  # VmHWM reset to the RSS now: the peak is rank's own
start = time.perf_counter()
report = melep_cli.rank([sys.argv[2]], sys.argv[1], device="cpu", cache=None)
print(json.dumps({"baseline_kib": baseline, "peak_kib": status("VmHWM"), "seconds": time.perf_counter() - start,
                  "records": report.target.records, "failed": [outcome.error for outcome in report.failed]}))
"""


def run_memory(quick: bool = False) -> dict[str, Any]:
    """Peak RSS of a fresh process ranking HDF5 targets of growing size: MB, and MB per record."""
    if not Path("/proc/self/clear_refs").exists():
        return _common.skipped("needs /proc/self/status and clear_refs (Linux)")
    machine = _common.machine_description()
    rows = []
    with tempfile.TemporaryDirectory(prefix="melep-bench-memory-") as scratch:
        torch.set_num_threads(1)
        metadata = models.checkpoint_metadata("smallcnn", SOURCE_LABELS)
        del metadata["samples"]  # records of any length are fed whole
        model = models.small_cnn(SOURCE_LABELS)
        checkpoint = models.export_checkpoint(model, Path(scratch), "small-memory", metadata, formats=("ts",))["ts"]
        for count, samples in QUICK_MEMORY_SIZES if quick else MEMORY_SIZES:
            target = write_hdf5_target(Path(scratch) / f"target-{count}-{samples}.h5", count, samples)
            command = [sys.executable, "-c", _MEMORY_CHILD, str(target), str(checkpoint)]
            completed = subprocess.run(command, capture_output=True, text=True, env=_common.ENVIRONMENT, check=False)
            if completed.returncode != 0:
                raise RuntimeError(f"memory child failed for n = {count}: {completed.stderr[-2000:]}")
            child = json.loads(completed.stdout.strip().splitlines()[-1])
            if child["failed"]:
                raise RuntimeError(f"rank failed for n = {count}: {child['failed']}")
            row = {
                "records": count,
                "samples": samples,
                "signals_float32_mb": count * samples * 12 * 4 / 1e6,
                "outputs_float32_mb": count * SOURCE_LABELS * 4 / 1e6,
                "baseline_rss_mb": child["baseline_kib"] * 1024 / 1e6,
                "peak_rss_mb": child["peak_kib"] * 1024 / 1e6,
                "rank_peak_above_baseline_mb": (child["peak_kib"] - child["baseline_kib"]) * 1024 / 1e6,
                "seconds": child["seconds"],
            }
            rows.append(row)
            target.unlink()
            print(
                f"n = {count:>7,} x {samples}: peak RSS {row['peak_rss_mb']:.0f} MB "
                f"({row['rank_peak_above_baseline_mb']:.0f} MB above the RSS after imports); the signals would "
                f"take {row['signals_float32_mb']:,.0f} MB"
            )
    same_length = [row for row in rows if row["samples"] == rows[0]["samples"]]
    first, last = same_length[0], same_length[-1]
    payload = {
        "what": "peak RSS (VmHWM, reset after imports) of a fresh process running melep_cli.rank(..., cache=None) "
        "on HDF5 targets (int16, gzip chunks of 1000 records, 12 leads), a SmallCnn fed whole records, "
        f"Z = {SOURCE_LABELS}",
        "machine": machine,
        "batch_size": 32,
        "samples": rows[0]["samples"],
        "source_labels": SOURCE_LABELS,
        "peak_mb_per_record": (last["peak_rss_mb"] - first["peak_rss_mb"]) / (last["records"] - first["records"]),
        "signal_mb_per_record": rows[0]["samples"] * 12 * 4 / 1e6,
        "output_mb_per_record_float32": SOURCE_LABELS * 4 / 1e6,
        "sizes": rows,
    }
    return _common.write_results("rank-memory", payload, quick=quick)


def memory_figures(document: dict[str, Any]) -> list[str]:
    lines = [
        f"Peak memory of `melep rank` (fresh process, VmHWM reset after imports; HDF5, records x 12 leads, "
        f"Z = {document['source_labels']}, batch {document['batch_size']}):",
        "",
        "| records n | samples | peak RSS | above the RSS after imports | signals as float32 | outputs | seconds |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in document["sizes"]:
        lines.append(
            f"| {row['records']:,} | {row.get('samples', document['samples'])} | {row['peak_rss_mb']:.0f} MB "
            f"| {row['rank_peak_above_baseline_mb']:.0f} MB | {row['signals_float32_mb']:,.0f} MB "
            f"| {row['outputs_float32_mb']:.1f} MB | {row['seconds']:.1f} |"
        )
    return [
        *lines,
        "",
        f"Peak RSS grows {document['peak_mb_per_record'] * 1e3:.2f} kB per record; the signals take "
        f"{document['signal_mb_per_record'] * 1e3:.0f} kB per record, the float32 outputs "
        f"{document['output_mb_per_record_float32'] * 1e3:.1f} kB.",
    ]


BENCHMARKS = {
    "rank-cpu": (lambda quick: run_end_to_end(quick, "cpu"), end_to_end_figures),
    "rank-cuda": (lambda quick: run_end_to_end(quick, "cuda"), end_to_end_figures),
    "rank-vs-naive": (run_versus_naive, versus_naive_figures),
    "rank-decode-once": (run_decode_once, decode_once_figures),
    "rank-memory": (run_memory, memory_figures),
}
