"""`melep rank` end to end: against the model-only forward pass, the naive pipeline, K checkpoints, memory.

The `melep rank` benchmarks (issue 7, steps 2, 3, 4 and 6, and what changed since), each a `run_*` function
registered in run_all.py:

- `rank-cpu` / `rank-cuda` (`run_end_to_end`): `melep_cli.rank(...)` in-process on the paper's
  1-D ResNet-101 and Bi-LSTM (exported as TorchScript and ONNX checkpoints) over real PTB-XL
  100 Hz records (a PTB-XL directory, decoded by melep's own reader), timed round-robin with the
  model-only forward pass of the best backends of `bench_backends` (frozen TorchScript, ONNX
  Runtime sequential) on the same records, prepared before timing. Ratio = rank throughput / best
  model-only throughput, both from the same rounds. A profile says where rank's time went
  (decode, preprocess, forward, metric), then a batch-size sweep of rank end to end.
- `rank-vs-naive` (`run_versus_naive`): rank against `naive_baseline` (eager PyTorch, DataLoader
  batch 128, WFDB reads, Python loop over label pairs) on the ResNet-101, then on both paper models
  in one ranking, same records, same labels, rounds alternating.
- `rank-decode-once` (`run_decode_once`): eight small checkpoints with four different input specs
  on the CinC 2021 WFDB directory (500 Hz, quirky headers): records decoded (the reader's
  per-record function wrapped and counted), the share of time spent decoding, and the time of one
  rank over eight checkpoints against eight ranks of one.
- `rank-memory` (`run_memory`): peak RSS of a fresh process ranking HDF5 targets of 10^3, 10^4 and
  10^5 records (generated: int16, gzip chunks, 500 samples x 12 leads), MB and MB per record.
- `rank-prepare` (`run_prepare_ahead`): rank as it is (one producer thread decodes the batches and prepares
  each input spec ahead of the forward passes) against the revision before inputs were prepared ahead (a
  decode thread; inputs prepared on the main thread between forward passes), in alternating child processes,
  where preprocessing weighs (several input specs, 500 Hz records) and where it does not.

`rank-load` (checkpoints loaded on a background thread while the target opened) is retired: stage 1 loads
them on the calling thread after the target opens, as its reference revision did (benchmarks/README.md).
The outputs store is timed by `bench_cache.py` (`rank-cache`).

    python benchmarks/bench_rank.py --only end-to-end  # or versus-naive, decode-once, memory, prepare-ahead, ...
    python benchmarks/bench_rank.py --quick            # smoke-sized, all of them

Writes benchmarks/results/rank-<device>.json, rank-vs-naive.json, rank-decode-once.json,
rank-memory.json (with `-quick` before .json for --quick).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import importlib
import json
import logging
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import _common
import models
import numpy as np
import torch

import melep_cli
import melep_cli.targets.ptbxl as ptbxl_module
import melep_cli.targets.wfdb_dir as wfdb_module
from melep_cli.checkpoints import Checkpoint
from melep_cli.preprocess import InputSpec, prepare

# melep_cli.scores.melep shares its name with the metric function melep_cli exports: take the module itself.
forward_module = importlib.import_module("melep_cli.forward_pass")
melep_score_module = importlib.import_module("melep_cli.scores.melep")
CINC_DIR = _common.SHARED_DATA / "cinc2021"
END_TO_END_RECORDS = {"resnet101": 256, "bilstm": 1024}
QUICK_RECORDS = {"resnet101": 16, "bilstm": 64}
CUDA_RECORDS = {"resnet101": 2048, "bilstm": 2048}
CPU_SWEEP = (16, 32, 64, 128)
#: Models also timed at one intra-op thread (ONNX Runtime), model-only and rank: the cheap one, where decoding shows.
SINGLE_THREAD_MODELS = ("bilstm",)
#: Rounds of the end-to-end comparison: 3 left ratios 10 % apart run to run on this shared machine.
END_TO_END_REPEATS = 5
#: Models ranked again on a larger target (every PTB-XL 100 Hz record in ../shared/data): rank's fixed costs
#: (opening the target, loading the model: ~0.25 s) are 10 % of the Bi-LSTM's 1024-record run.
LARGE_TARGETS = {"bilstm": 2992}
CUDA_SWEEP = (64, 128, 256, 512)
MEMORY_SAMPLES = 500  # 5 s at 100 Hz: real-length records would make the 10^5 file 4.8 GB decoded
#: (records, samples per record): growing n, then 10^4 records four times longer.
MEMORY_SIZES = ((1_000, MEMORY_SAMPLES), (10_000, MEMORY_SAMPLES), (100_000, MEMORY_SAMPLES), (10_000, 2_000))
SOURCE_LABELS = 100  # Z of the decode-once and memory checkpoints


def _finish_results(name: str, payload: dict[str, Any], *, quick: bool, note: str = "") -> dict[str, Any]:
    """`payload` with the run's context (quick, the noise note and `note`, the load average at the end), written to
    results/<name>.json (<name>-quick.json for quick runs); returned."""
    payload = {
        **payload,
        "quick": quick,
        "note": _common.NOISE_NOTE + note,
        "load_average_at_end": list(os.getloadavg()),
    }
    path = _common.write_results(name + ("-quick" if quick else ""), payload)
    print(f"wrote {path}")
    return payload


# ----- where the time goes inside rank ------------------------------------------------------------------------
@contextlib.contextmanager
def instrumented() -> Iterator[dict[str, dict[str, float]]]:
    """Count calls and seconds of rank's stages while the block runs: {stage: {"calls", "seconds", "items"}}.

    decode: the WFDB/PTB-XL readers' per-record read (on the producer thread, overlapped with the forward
    passes); prepare: melep_cli.preprocess.prepare as stage 1 calls it (on the producer thread, ahead of the
    forward passes, or inline; seconds summed over threads); forward: Checkpoint.predict_outputs (checks
    included); metric: stage 2's melep() on the stored outputs. Wrapping costs about a microsecond a call.
    """
    stats = {stage: {"calls": 0, "seconds": 0.0, "items": 0} for stage in ("decode", "prepare", "forward", "metric")}
    lock = threading.Lock()  # stages run on two threads (decode and prepare on the producer)

    def timed(stage: str, function: Callable[..., Any], count: Callable[[Any], int] | None = None) -> Callable:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                elapsed = time.perf_counter() - start
                with lock:
                    entry = stats[stage]
                    entry["seconds"] += elapsed
                    entry["calls"] += 1
                    entry["items"] += count(args) if count else 1

        return wrapper

    patches = [
        (wfdb_module, "read_wfdb_signal", timed("decode", wfdb_module.read_wfdb_signal)),
        (ptbxl_module, "read_wfdb_signal", timed("decode", ptbxl_module.read_wfdb_signal)),
        (forward_module, "prepare", timed("prepare", forward_module.prepare, lambda args: len(args[0]))),
        (Checkpoint, "predict_outputs", timed("forward", Checkpoint.predict_outputs, lambda args: len(args[1]))),
        (melep_score_module, "melep", timed("metric", melep_score_module.melep)),
    ]
    originals = [(owner, name, getattr(owner, name)) for owner, name, _ in patches]
    try:
        for owner, name, wrapper in patches:
            setattr(owner, name, wrapper)
        yield stats
    finally:
        for owner, name, original in originals:
            setattr(owner, name, original)


def timed_rank(checkpoints: list[Path], target: Path, **options: Any) -> tuple[float, melep_cli.RankReport, dict]:
    """Seconds of one `melep_cli.rank` call (loading included), its report and its stage profile.

    Without the outputs store (`cache=None`) unless `options` name one: a rank timed again in the same process
    must run its forward passes, not read the outputs the one before stored.
    """
    options.setdefault("cache", None)
    with instrumented() as stats:
        start = time.perf_counter()
        report = melep_cli.rank(checkpoints, target, **options)
        seconds = time.perf_counter() - start
    failed = [f"{outcome.name}: {outcome.error}" for outcome in report.failed]
    if failed:
        raise RuntimeError("rank failed for " + "; ".join(failed))
    if options["cache"] is None and report.forward_passes != len(report.outcomes):
        raise RuntimeError(
            f"rank without a cache ran {report.forward_passes} forward passes for {len(report.outcomes)}"
        )
    return seconds, report, stats


def sixteen_bit(device: str) -> str | None:
    """The 16-bit precision `--precision` can use on `device` (bfloat16 on a CPU with its instructions, float16 on
    CUDA), or None: then the bfloat16 lines of the benchmarks are left out."""
    from melep_cli.checkpoints.devices import cpu_has_bfloat16

    if device == "cuda":
        return "float16"
    return "bfloat16" if cpu_has_bfloat16() else None


#: Models timed at a 16-bit precision too (the Bi-LSTMs' traced LSTM fixes float32 inside: it falls back).
SIXTEEN_BIT_MODELS = ("resnet101",)


# ----- inputs and checkpoints ---------------------------------------------------------------------------------
def export_paper_models(names: tuple[str, ...], directory: Path, quick: bool) -> dict[str, dict[str, Any]]:
    """The paper's models (BatchNorm calibrated on PTB-XL) as TorchScript and ONNX checkpoints, and the modules."""
    torch.set_num_threads(1)  # setup is not timed; one thread is never slow on a shared machine
    calibration = torch.from_numpy(_common.load_ptbxl_signals(8 if quick else 32)[0])
    exported = {}
    for name in names:
        model = models.build(name, calibration=calibration)
        files = models.export_checkpoint(
            model, directory, f"bench-{name}", models.checkpoint_metadata(name, models.DEFAULT_OUTPUTS)
        )
        exported[name] = {
            "name": name,
            "module": model,
            "gflop_per_record": models.flops_per_record(model) / 1e9,
            **files,
        }
    torch.set_num_threads(_common.physical_cores())
    return exported


def prepared_batches(target: Path, batch_size: int) -> list[np.ndarray]:
    """The target's records as the paper models' input (100 Hz, 1000 samples, NCT, float32), decoded before timing."""
    spec = InputSpec(
        sampling_rate=models.SAMPLING_RATE,
        samples=models.SAMPLES,
        leads=models.LEADS,
        layout="NCT",
        normalization="none",
        dtype="float32",
    )
    opened = melep_cli.open_target(target)
    return [prepare(batch.signals, batch.sampling_rate, batch.leads, spec) for batch in opened.batches(batch_size)]


def _onnx_session(path: Path, provider: str, threads: int | None) -> Any:
    """An ONNX Runtime session set up as bench_backends' best (all optimisations, sequential, intra-op threads)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads or _common.physical_cores()
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=[provider])


def _run_onnx(session: Any, batches: list[np.ndarray]) -> None:
    name = session.get_inputs()[0].name
    for batch in batches:
        session.run(None, {name: batch})


def _run_frozen(module: Any, batches: list[np.ndarray], target: torch.device) -> None:
    """Forward passes of a frozen TorchScript module over `batches` (pinned host memory on CUDA)."""
    with torch.inference_mode():
        for batch in batches:
            tensor = torch.from_numpy(batch)
            if target.type == "cuda":
                tensor = tensor.pin_memory().to(target, non_blocking=True)
            module(tensor).cpu().numpy()


def _load_frozen(files: dict[str, Any], target: torch.device) -> Any:
    return torch.jit.freeze(torch.jit.load(str(files["ts"]), map_location=target).eval())


def model_only_runners(
    files: dict[str, Any], device: str, formats: tuple[str, ...] = ("ts", "onnx"), threads: int | None = None
) -> dict[str, Callable[[list[np.ndarray]], None]]:
    """The best backends of bench_backends, model only: frozen TorchScript and ONNX Runtime (sequential).

    `threads`: intra-op threads of both (None: the physical cores, as bench_backends and rank's default).
    """
    import onnxruntime as ort

    suffix = f" (threads={threads})" if threads else ""
    target = torch.device("cuda:0" if device == "cuda" else "cpu")
    runners: dict[str, Callable[[list[np.ndarray]], None]] = {}
    if "ts" in formats:
        frozen = _load_frozen(files, target)

        def run_torchscript(batches: list[np.ndarray]) -> None:
            before = torch.get_num_threads()
            torch.set_num_threads(threads or before)
            try:
                _run_frozen(frozen, batches, target)
            finally:
                torch.set_num_threads(before)

        runners["model-only torchscript-frozen" + suffix] = run_torchscript
    provider = "CUDAExecutionProvider" if device == "cuda" else "CPUExecutionProvider"
    if "onnx" in formats and provider in ort.get_available_providers():
        runners["model-only onnxruntime" + suffix] = functools.partial(
            _run_onnx, _onnx_session(files["onnx"], provider, threads)
        )
    return runners


def cold_model_only_runners(files: dict[str, Any], device: str) -> dict[str, Callable[[list[np.ndarray]], None]]:
    """Model only from a cold start: the ONNX Runtime session created, the TorchScript module loaded and frozen,
    inside the timing, then the batches; what any program running the model pays, with the executor setting rank
    uses. rank / these = what melep adds, the runtime's own start-up (session creation, first runs) left out."""
    import onnxruntime as ort

    target = torch.device("cuda:0" if device == "cuda" else "cpu")
    runners: dict[str, Callable[[list[np.ndarray]], None]] = {}

    def run_torchscript(batches: list[np.ndarray]) -> None:
        frozen = _load_frozen(files, target)  # loaded and frozen as rank does, outside the executor setting
        with torch.jit.optimized_execution(target.type == "cuda"):
            _run_frozen(frozen, batches, target)

    runners["model-only torchscript-frozen (cold)"] = run_torchscript
    provider = "CUDAExecutionProvider" if device == "cuda" else "CPUExecutionProvider"
    if provider in ort.get_available_providers():

        def run_onnx(batches: list[np.ndarray]) -> None:
            _run_onnx(_onnx_session(files["onnx"], provider, None), batches)

        runners["model-only onnxruntime (cold)"] = run_onnx
    return runners


def model_only_16bit_runner(files: dict[str, Any], device: str, precision: str) -> Callable[[list[np.ndarray]], None]:
    """Model-only forward passes of the TorchScript checkpoint as `melep rank --precision` converts it."""
    from melep_cli.checkpoints import load_checkpoint

    checkpoint = load_checkpoint(files["ts"], device="cuda" if device == "cuda" else "cpu", precision=precision)
    module, dtype = checkpoint._backend.module, getattr(torch, precision)
    target = torch.device(checkpoint.device)

    def run_16bit(batches: list[np.ndarray]) -> None:
        with torch.inference_mode():
            for batch in batches:
                tensor = torch.from_numpy(batch)
                if target.type == "cuda":
                    tensor = tensor.pin_memory().to(target, non_blocking=True)
                module(tensor.to(dtype)).float().cpu().numpy()

    return run_16bit


def round_robin(configurations: dict[str, Callable[[], Any]], repeats: int) -> dict[str, list[float]]:
    """Seconds of each configuration per round; each round starts one configuration later."""
    names = list(configurations)
    times: dict[str, list[float]] = {name: [] for name in names}
    for round_index in range(repeats):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            start = time.perf_counter()
            configurations[name]()
            times[name].append(time.perf_counter() - start)
    return times


def summary(times: list[float], records: int) -> dict[str, Any]:
    median = statistics.median(times)
    return {
        "median_s": median,
        "min_s": min(times),
        "max_s": max(times),
        "records": records,
        "records_per_s": records / median,
        "records_per_s_best_round": records / min(times),
        "rounds": times,
    }


def stage_shares(stats: dict[str, dict[str, float]], seconds: float) -> dict[str, Any]:
    """Seconds and share of rank's wall time per stage (decode overlaps the others: shares need not add up)."""
    return {
        stage: {**entry, "share": entry["seconds"] / seconds if seconds else None} for stage, entry in stats.items()
    }


# ----- step 2: rank end to end against the model-only forward pass ------------------------------------------
def run_end_to_end(
    *,
    device: str = "cpu",
    quick: bool = False,
    records: int | None = None,
    repeats: int | None = None,
    sweep: tuple[int, ...] | None = None,
    model_names: tuple[str, ...] = ("resnet101", "bilstm"),
) -> dict[str, Any]:
    """rank() vs the best model-only backend on the same records, same rounds; then a rank batch-size sweep."""
    if device == "cuda" and not torch.cuda.is_available():
        print("CUDA is not available (torch.cuda.is_available() is False): skipping rank on CUDA")
        return {"skipped": "CUDA not available"}
    if not (_common.PTBXL_DIR / "ptbxl_database.csv").is_file():
        print(f"PTB-XL not found at {_common.PTBXL_DIR}: skipping (rank reads real records)")
        return {"skipped": f"PTB-XL not found at {_common.PTBXL_DIR}"}
    repeats = repeats or (1 if quick else END_TO_END_REPEATS)
    sweep = sweep or ((8, 16) if quick else CUDA_SWEEP if device == "cuda" else CPU_SWEEP)
    counts = QUICK_RECORDS if quick else CUDA_RECORDS if device == "cuda" else END_TO_END_RECORDS
    batch_size = default_batch_size(device)
    machine = _common.machine_description()
    load = machine["load_average_at_start"]
    print(f"machine: {machine['cpu']}, {machine['physical_cores']} physical cores, load {load}")
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="melep-bench-rank-") as scratch:
        exported = export_paper_models(model_names, Path(scratch), quick)
        for name in model_names:
            count = records or counts[name]
            target = _common.ptbxl_subset(count, Path(scratch) / f"ptbxl-{name}")
            print(f"{name}: {exported[name]['gflop_per_record']:.2f} GFLOP/record, {count} PTB-XL records")
            results[name] = _end_to_end_model(
                exported[name],
                target,
                count,
                device=device,
                batch_size=batch_size,
                repeats=repeats,
                sweep=sweep,
                single_thread=name in SINGLE_THREAD_MODELS,
            )
            large = LARGE_TARGETS.get(name) if device == "cpu" and not quick and records is None else None
            if large:
                big = _common.ptbxl_subset(large, Path(scratch) / f"ptbxl-{name}-{large}")
                print(f"{name}: the best format again on {large} PTB-XL records (open and load costs amortised)")
                results[name]["large_target"] = _large_target(exported[name], big, large, batch_size, repeats)
    payload = {
        "device": device,
        "input": f"PTB-XL 100 Hz records from {_common.PTBXL_DIR} (the first N rows of ptbxl_database.csv)",
        "what": "melep_cli.rank(...) in-process (checkpoint load, target open, decode, preprocess, forward, metric) "
        "vs the model-only forward pass of prepared batches, timed round-robin in the same run",
        "machine": machine,
        "models": results,
        "step1_reference": _step1_reference(device),
    }
    return _finish_results(f"rank-{device}", payload, quick=quick)


def _large_target(files: dict[str, Any], target: Path, count: int, batch_size: int, repeats: int) -> dict[str, Any]:
    """rank / model-only for ONNX Runtime on a larger target: the fixed costs (open, load) weigh less."""
    batches = prepared_batches(target, batch_size)
    model_only = model_only_runners(files, "cpu", formats=("onnx",))["model-only onnxruntime"]
    configurations: dict[str, Callable[[], Any]] = {
        "model-only onnxruntime": functools.partial(model_only, batches),
        "rank onnx": functools.partial(timed_rank, [files["onnx"]], target, batch_size=batch_size),
    }
    for configuration in configurations.values():
        configuration()
    times = round_robin(configurations, repeats)
    rows = {label: summary(seconds, count) for label, seconds in times.items()}
    ratio = rows["rank onnx"]["records_per_s"] / rows["model-only onnxruntime"]["records_per_s"]
    for label, row in rows.items():
        print(f"  {label:<32} {row['records_per_s']:8.1f} records/s ({row['median_s']:.2f} s, median of {repeats})")
    print(f"  rank onnx / model-only onnxruntime on {count} records: {ratio:.3f}")
    return {"records": count, "configurations": rows, "rank_onnx_over_model_only": ratio}


def default_batch_size(device: str) -> int:
    """The batch size `melep rank` uses by default on `device` (what the benchmark measures)."""
    from melep_cli.checkpoints.checkpoint import default_batch_size as melep_default

    return melep_default("cuda:0" if device == "cuda" else "cpu")


def _end_to_end_model(
    files: dict[str, Any],
    target: Path,
    count: int,
    *,
    device: str,
    batch_size: int,
    repeats: int,
    sweep: tuple[int, ...],
    single_thread: bool = False,
) -> dict[str, Any]:
    """One model: model-only runners and rank on both formats, round-robin; ratios, rank's profile, a sweep.

    `single_thread`: also ONNX Runtime model-only and rank at one intra-op thread.
    """
    batches = prepared_batches(target, batch_size)
    runners = model_only_runners(files, device)
    if single_thread and device == "cpu":  # is decoding overlapped when a core is left free?
        runners.update(model_only_runners(files, device, formats=("onnx",), threads=1))
    runners.update(cold_model_only_runners(files, device))  # the runtime's start-up inside the timing
    precision = sixteen_bit(device) if files["name"] in SIXTEEN_BIT_MODELS else None
    if precision:  # --precision: its own ratio, kept out of the float32 ones
        runners[f"model-only torchscript-frozen ({precision})"] = model_only_16bit_runner(files, device, precision)
    configurations: dict[str, Callable[[], Any]] = {
        label: functools.partial(run, batches) for label, run in runners.items()
    }
    profiles: dict[str, list[dict]] = {}

    def run_rank(label: str, key: str, threads: int | None, precision: str = "float32") -> None:
        seconds, report, stats = timed_rank(
            [files[key]], target, device=device, batch_size=batch_size, threads=threads, precision=precision
        )
        if report.outcomes[0].precision != precision:
            raise RuntimeError(f"{label}: ran in {report.outcomes[0].precision}, not {precision}")
        profiles[label].append({"seconds": seconds, "report_seconds": report.seconds, "stages": stats})

    plans: list[tuple[str, str, int | None, str]] = [
        ("rank torchscript", "ts", None, "float32"),
        ("rank onnx", "onnx", None, "float32"),
    ]
    if single_thread and device == "cpu":
        plans.append(("rank onnx (threads=1)", "onnx", 1, "float32"))
    if precision:
        plans.append((f"rank torchscript ({precision})", "ts", None, precision))
    for label, key, threads, plan_precision in plans:
        configurations[label] = functools.partial(run_rank, label, key, threads, plan_precision)
        profiles[label] = []
    for label, configuration in configurations.items():  # warm-up: file cache, TorchScript's profiling runs
        configuration()
        if label.startswith("model-only"):
            configuration()
    for profile in profiles.values():
        profile.clear()
    times = round_robin(configurations, repeats)
    rows = {label: summary(seconds, count) for label, seconds in times.items()}
    for label, row in rows.items():
        print(f"  {label:<32} {row['records_per_s']:8.1f} records/s ({row['median_s']:.2f} s, median of {repeats})")
    # Default threads, float32, warm (the runtime started before the timing):
    exact = [label for label in rows if "threads=" not in label and "16)" not in label and "(cold)" not in label]
    model_only = [label for label in exact if label.startswith("model-only")]
    ranked = [label for label in exact if label.startswith("rank")]
    best_model_only = max(model_only, key=lambda label: rows[label]["records_per_s"])
    best_rank = max(ranked, key=lambda label: rows[label]["records_per_s"])
    ratios = {
        "rank_over_best_model_only": rows[best_rank]["records_per_s"] / rows[best_model_only]["records_per_s"],
        "rank_over_best_model_only_best_rounds": max(rows[label]["records_per_s_best_round"] for label in ranked)
        / max(rows[label]["records_per_s_best_round"] for label in model_only),
        "rank_torchscript_over_model_only_torchscript": rows["rank torchscript"]["records_per_s"]
        / rows["model-only torchscript-frozen"]["records_per_s"],
    }
    cold = [label for label in rows if label.endswith("(cold)")]
    if cold:
        best_cold = max(cold, key=lambda label: rows[label]["records_per_s"])
        ratios["rank_over_best_cold_model_only"] = rows[best_rank]["records_per_s"] / rows[best_cold]["records_per_s"]
        print(f"  rank / best cold model-only: {ratios['rank_over_best_cold_model_only']:.3f} ({best_cold})")
    for rank_label, model_label in (
        ("rank torchscript", "model-only torchscript-frozen (cold)"),
        ("rank onnx", "model-only onnxruntime (cold)"),
        ("rank onnx", "model-only onnxruntime"),
        ("rank onnx (threads=1)", "model-only onnxruntime (threads=1)"),
        (f"rank torchscript ({precision})", f"model-only torchscript-frozen ({precision})"),
    ):
        if rank_label in rows and model_label in rows:
            key = rank_label.replace(" ", "_").replace("(", "").replace(")", "").replace("=", "_")
            key += "_over_cold_model_only" if model_label.endswith("(cold)") else "_over_model_only"
            ratios[key] = rows[rank_label]["records_per_s"] / rows[model_label]["records_per_s"]
            print(f"  {rank_label} / {model_label}: {ratios[key]:.3f}")
    print(
        f"  rank / best model-only: {ratios['rank_over_best_model_only']:.3f} ({best_rank} vs {best_model_only}); "
        f"best of rounds {ratios['rank_over_best_model_only_best_rounds']:.3f}"
    )
    breakdown = {}
    for label, runs in profiles.items():
        median_run = sorted(runs, key=lambda run: run["seconds"])[len(runs) // 2]
        stages = stage_shares(median_run["stages"], median_run["seconds"])
        breakdown[label] = {"seconds": median_run["seconds"], "stages": stages}
        shares = ", ".join(
            f"{stage} {entry['seconds']:.2f} s ({entry['share']:.0%})" for stage, entry in stages.items()
        )
        print(f"  {label} profile: {median_run['seconds']:.2f} s = {shares}; the rest: load, open, waits")
    best_format = "ts" if best_rank == "rank torchscript" else "onnx"
    print(f"  rank batch-size sweep ({best_rank}):")
    sweep_times = round_robin(
        {
            size: functools.partial(timed_rank, [files[best_format]], target, device=device, batch_size=size)
            for size in sweep
        },
        max(1, repeats - 1),
    )
    sweep_rows = []
    for size in sweep:
        row = {"batch_size": size, **summary(sweep_times[size], count)}
        sweep_rows.append(row)
        print(f"    batch {size:>4}: {row['records_per_s']:8.1f} records/s")
    return {
        "gflop_per_record": files["gflop_per_record"],
        "records": count,
        "batch_size": batch_size,
        "repeats": repeats,
        "configurations": rows,
        "best_model_only": best_model_only,
        "best_rank": best_rank,
        "ratios": ratios,
        "rank_profile": breakdown,
        "rank_batch_size_sweep": {
            "checkpoint": best_format,
            "sizes": sweep_rows,
            "best_batch_size": max(sweep_rows, key=lambda row: row["records_per_s"])["batch_size"],
        },
    }


def _step1_reference(device: str) -> dict[str, Any] | None:
    """The best model-only throughput of bench_backends' results file, when present (an earlier run: context only)."""
    path = _common.RESULTS_DIR / f"backends-{device}.json"
    if not path.is_file():
        return None
    document = json.loads(path.read_text())
    return {
        name: {
            "best_backend": result["best_backend"],
            "records_per_s": max(row["records_per_s"] for row in result["backends"]),
            "created": document.get("created"),
        }
        for name, result in document["models"].items()
    }


# ----- step 3: rank against the naive pipeline ---------------------------------------------------------------
def run_versus_naive(*, quick: bool = False, records: int | None = None, repeats: int | None = None) -> dict[str, Any]:
    """Speed-up of rank over naive_baseline on the ResNet-101, then on both paper models in one ranking."""
    import naive_baseline

    if not (_common.PTBXL_DIR / "ptbxl_database.csv").is_file():
        print(f"PTB-XL not found at {_common.PTBXL_DIR}: skipping (both pipelines read real records)")
        return {"skipped": f"PTB-XL not found at {_common.PTBXL_DIR}"}
    count = records or (32 if quick else 256)
    repeats = repeats or (1 if quick else 3)
    names = ("bilstm",) if quick else ("resnet101", "bilstm")
    record_paths, labels = naive_baseline.ptbxl_target(_common.PTBXL_DIR, count)
    machine = _common.machine_description()
    scenarios: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="melep-bench-naive-") as scratch:
        exported = export_paper_models(names, Path(scratch), quick)
        target = _common.ptbxl_subset(count, Path(scratch) / "ptbxl")
        opened = melep_cli.open_target(target, labels=naive_baseline.SUPERCLASSES)
        if tuple(opened.label_names) != naive_baseline.SUPERCLASSES or not np.array_equal(opened.labels, labels):
            raise RuntimeError("melep's PTB-XL reader and the naive baseline disagree on records or labels")
        plans = {names[0]: [names[0]]} if quick else {"resnet101": ["resnet101"], "resnet101 + bilstm": list(names)}
        for scenario, members in plans.items():
            scenarios[scenario] = _versus_naive_scenario(
                scenario, [exported[member] for member in members], members, target, record_paths, labels, repeats
            )
    payload = {
        "what": "melep_cli.rank (defaults: batch size, threads) vs naive_baseline: DataLoader(batch 128) over "
        "wfdb.rdsamp reads, eager PyTorch (the nn.Module the checkpoints were exported from), per-pair LEEP loop; "
        "same records and labels, timed round-robin; speed-up = naive median / rank median",
        "records": count,
        "torch_threads": torch.get_num_threads(),
        "machine": machine,
        "scenarios": scenarios,
    }
    return _finish_results("rank-vs-naive", payload, quick=quick)


def _versus_naive_scenario(
    scenario: str,
    exported: list[dict[str, Any]],
    members: list[str],
    target: Path,
    record_paths: list[Path],
    labels: np.ndarray,
    repeats: int,
) -> dict[str, Any]:
    """Naive pipeline vs rank (TorchScript, ONNX) on the same checkpoints, round-robin; scores compared."""
    import naive_baseline

    count = len(record_paths)
    scores: dict[str, float] = {}

    def naive() -> None:
        for member, files in zip(members, exported):  # each checkpoint reads the records again, as naively done
            logits = naive_baseline.naive_forward(files["module"], naive_baseline.WfdbRecords(record_paths))
            scores[f"naive {member}"] = naive_baseline.naive_melep(logits, labels)["score"]

    def ranked(key: str, precision: str = "float32") -> None:
        _, report, _ = timed_rank(
            [files[key] for files in exported], target, labels=naive_baseline.SUPERCLASSES, precision=precision
        )
        for outcome in report.outcomes:
            scores[f"rank {key} {precision} {outcome.name}"] = outcome.melep
            if precision != "float32":
                precisions[outcome.name] = outcome.precision

    precisions: dict[str, str | None] = {}
    configurations: dict[str, Callable[[], Any]] = {
        "naive": naive,
        "rank (torchscript)": functools.partial(ranked, "ts"),
        "rank (onnx)": functools.partial(ranked, "onnx"),
    }
    precision = sixteen_bit("cpu")
    if precision:  # --precision, reported apart: not the same arithmetic as the naive pipeline
        configurations[f"rank (torchscript, {precision})"] = functools.partial(ranked, "ts", precision)
    for configuration in configurations.values():  # warm-up (file cache, profiling runs)
        configuration()
    times = round_robin(configurations, repeats)
    rows = {label: summary(seconds, count * len(members)) for label, seconds in times.items()}
    naive_s = rows["naive"]["median_s"]
    ranks = [label for label in rows if label != "naive" and "16)" not in label]
    best_rank = min(ranks, key=lambda label: rows[label]["median_s"])
    agreement = max(
        abs(scores[f"rank {key} float32 bench-{member}"] - scores[f"naive {member}"]) / abs(scores[f"naive {member}"])
        for member in members
        for key in ("ts", "onnx")
    )
    result = {
        "checkpoints": members,
        "configurations": rows,
        "speedup_best_rank_over_naive": naive_s / rows[best_rank]["median_s"],
        "speedup_best_rank_over_naive_best_rounds": rows["naive"]["min_s"]
        / min(rows[label]["min_s"] for label in ranks),
        "speedups": {label: naive_s / rows[label]["median_s"] for label in rows if label != "naive"},
        "best_rank": best_rank,
        "max_rel_score_diff_rank_vs_naive": agreement,
    }
    if precision:
        label = f"rank (torchscript, {precision})"
        result[f"speedup_{precision}_over_naive"] = naive_s / rows[label]["median_s"]
        result[f"{precision}_precisions"] = {f"bench-{member}": precisions[f"bench-{member}"] for member in members}
        result[f"max_abs_score_diff_{precision}_vs_naive"] = max(
            abs(scores[f"rank ts {precision} bench-{member}"] - scores[f"naive {member}"]) for member in members
        )
        print(
            f"  {label}: {rows[label]['median_s']:.2f} s, speed-up {result[f'speedup_{precision}_over_naive']:.2f}x, "
            f"scores within {result[f'max_abs_score_diff_{precision}_vs_naive']:.1e} of the naive float32 ones "
            f"(ran in {result[f'{precision}_precisions']})"
        )
    print(
        f"{scenario}: naive {naive_s:.2f} s, "
        + ", ".join(f"{label} {rows[label]['median_s']:.2f} s" for label in ranks)
        + f"; speed-up {result['speedup_best_rank_over_naive']:.2f}x ({best_rank}); "
        f"scores agree to {agreement:.1e} (relative)"
    )
    return result


# ----- a busy machine: default threads against --threads 1 -------------------------------------------------
#: (model, checkpoint format, records per rank) of the busy-machine cases.
BUSY_CASES = (("resnet101", "ts", 16), ("bilstm", "ts", 32), ("bilstm", "onnx", 128))
#: What each busy process runs: multi-threaded torch products, like other jobs' forward passes on a shared machine.
BUSY_LOAD = (
    "import torch\n"
    "torch.set_num_threads(torch.get_num_threads())\n"
    "a = torch.randn(256, 256)\n"
    "while True:\n"
    "    a = torch.tanh(a @ a)\n"
)


def _cli_ranks(checkpoint: Path, target: Path, copies: int, threads: int | None) -> None:
    """`copies` runs of the `melep rank` CLI at once, each in its own process; returns when all have ended."""
    command = [sys.executable, "-m", "melep_cli", "rank", "-c", str(checkpoint), "-t", str(target), "-d", "cpu", "-q"]
    command.append("--no-cache")  # every run its forward pass, none a read of the outputs the one before stored
    if threads is not None:
        command += ["--threads", str(threads)]
    environment = {**os.environ, "PYTHONPATH": str(_common.REPO_ROOT)}
    processes = [
        subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=environment)
        for _ in range(copies)
    ]
    failures = [process.communicate()[1].decode()[-500:] for process in processes if process.wait() not in (0,)]
    if failures:
        raise RuntimeError(f"melep rank failed: {failures[0]}")


def run_busy(*, quick: bool = False, repeats: int | None = None) -> dict[str, Any]:
    """The `melep rank` CLI with the default threads against --threads 1 on a machine shared with other work.

    Two situations: two ranks at once (each a CLI process; wall time until both end), and one rank
    while one process per physical core runs multi-threaded torch products (other jobs on a shared
    machine or CI runner). The load processes are stopped when the benchmark ends, whatever happens.
    """
    if not (_common.PTBXL_DIR / "ptbxl_database.csv").is_file():
        print(f"PTB-XL not found at {_common.PTBXL_DIR}: skipping")
        return {"skipped": f"PTB-XL not found at {_common.PTBXL_DIR}"}
    repeats = repeats or (1 if quick else 2)
    cases = BUSY_CASES[-1:] if quick else BUSY_CASES
    cores = _common.physical_cores()
    machine = _common.machine_description()
    results: dict[str, Any] = {"two ranks at once": {}, "other multi-threaded jobs": {}}
    load_during = None
    with tempfile.TemporaryDirectory(prefix="melep-bench-busy-") as scratch:
        exported = export_paper_models(tuple(sorted({name for name, _, _ in cases})), Path(scratch), quick)
        targets = {count: _common.ptbxl_subset(count, Path(scratch) / f"ptbxl-{count}") for _, _, count in cases}
        for situation in results:
            hogs = []
            try:
                if situation == "other multi-threaded jobs":
                    hogs = [subprocess.Popen([sys.executable, "-c", BUSY_LOAD]) for _ in range(cores)]
                    time.sleep(1.0)
                    load_during = os.getloadavg()[0]
                copies = 2 if situation == "two ranks at once" else 1
                for name, key, count in cases:
                    checkpoint = exported[name][key]
                    configurations = {
                        f"default threads ({cores})": functools.partial(
                            _cli_ranks, checkpoint, targets[count], copies, None
                        ),
                        "--threads 1": functools.partial(_cli_ranks, checkpoint, targets[count], copies, 1),
                    }
                    times = round_robin(configurations, repeats)
                    rows = {label: summary(seconds, count * copies) for label, seconds in times.items()}
                    default, single = rows.values()
                    speedup = default["median_s"] / single["median_s"]
                    results[situation][f"{name} ({key})"] = {
                        "records_per_rank": count,
                        "ranks": copies,
                        "configurations": rows,
                        "speedup_threads_1": speedup,
                    }
                    print(
                        f"{situation}, {name} ({key}), {count} records per rank: default threads "
                        f"{default['median_s']:.1f} s, --threads 1 {single['median_s']:.1f} s: "
                        f"--threads 1 is {speedup:.2f}x faster"
                    )
            finally:
                for hog in hogs:
                    hog.kill()
                    hog.wait()
    payload = {
        "what": "the melep rank CLI (a subprocess each, startup included) with default intra-op threads vs "
        "--threads 1: two ranks at once, and one rank beside one process per physical core running "
        "multi-threaded torch; wall time, round-robin",
        "load_processes": cores,
        "load_average_during": load_during,
        "machine": machine,
        "situations": results,
    }
    return _finish_results("rank-busy", payload, quick=quick)


# ----- TorchScript's profiling executor on a small target ----------------------------------------------------
def run_torchscript_warmup(*, quick: bool = False, trials: int | None = None, calls: int = 6) -> dict[str, Any]:
    """First calls vs steady state of a freshly loaded frozen module, graph-executor optimisation on and off.

    Each trial loads the module again (a fresh executor), then times `calls` forward passes of one
    batch (DEFAULT_BATCH_SIZE PTB-XL records); trials alternate the two settings.
    """
    trials = trials or (1 if quick else 3)
    names = ("bilstm",) if quick else ("resnet101", "bilstm")
    batch_size = default_batch_size("cpu")
    signals = torch.from_numpy(_common.load_ptbxl_signals(batch_size)[0])
    machine = _common.machine_description()
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="melep-bench-warmup-") as scratch:
        exported = export_paper_models(names, Path(scratch), quick)
        for name in names:
            runs: dict[str, list[list[float]]] = {"profiling executor (torch default)": [], "optimisation off": []}
            settings = [("profiling executor (torch default)", True), ("optimisation off", False)]
            for trial in range(trials):
                for label, optimize in settings if trial % 2 == 0 else settings[::-1]:
                    module = torch.jit.freeze(torch.jit.load(str(exported[name]["ts"])).eval())
                    times = []
                    with torch.inference_mode(), torch.jit.optimized_execution(optimize):
                        for _ in range(calls):
                            start = time.perf_counter()
                            module(signals)
                            times.append(time.perf_counter() - start)
                    runs[label].append(times)
            rows = {}
            for label, trial_times in runs.items():
                steady = statistics.median(t for times in trial_times for t in times[3:])
                first = statistics.median(times[0] for times in trial_times)
                first_three = statistics.median(sum(times[:3]) for times in trial_times)
                rows[label] = {
                    "first_call_s": first,
                    "second_call_s": statistics.median(times[1] for times in trial_times),
                    "first_three_calls_s": first_three,
                    "steady_call_s": steady,
                    "warmup_excess_s": first_three - 3 * steady,
                    "trials": trial_times,
                }
                print(
                    f"{name} {label:<36} first call {first:.3f} s, first three {first_three:.3f} s, "
                    f"steady {steady:.3f} s/call (batch {batch_size})"
                )
            default, off = rows["profiling executor (torch default)"], rows["optimisation off"]
            results[name] = {
                "batch_size": batch_size,
                "settings": rows,
                "steady_ratio_off_over_default": off["steady_call_s"] / default["steady_call_s"],
                "first_three_ratio_off_over_default": off["first_three_calls_s"] / default["first_three_calls_s"],
            }
    payload = {
        "what": "frozen TorchScript (torch.jit.freeze) on the CPU, fresh module per trial: time of the first calls "
        "and of later ones with the graph executor's optimisation (profiling) on (torch's default) and off "
        "(torch.jit.optimized_execution(False), what melep uses on the CPU)",
        "machine": machine,
        "models": results,
    }
    return _finish_results("torchscript-warmup", payload, quick=quick)


# ----- step 4: eight checkpoints, one decode -----------------------------------------------------------------
#: (sampling_rate, samples, normalization, format) of the eight checkpoints: four distinct input specs, two each.
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


def export_small_checkpoints(directory: Path, specs: tuple[tuple[int, int, str, str], ...]) -> list[Path]:
    """One SmallCnn checkpoint per spec (different seeds), metadata stating its rate, length and normalisation."""
    torch.set_num_threads(1)
    paths = []
    for index, (rate, samples, normalization, fmt) in enumerate(specs):
        model = models.small_cnn(SOURCE_LABELS, seed=index)
        metadata = {
            **models.checkpoint_metadata("smallcnn", SOURCE_LABELS),
            "name": f"small{index}",
            "description": "SmallCnn, random weights, for benchmarks only",
            "sampling_rate": rate,
            "samples": samples,
            "normalization": normalization,
        }
        paths.append(
            models.export_checkpoint(model, directory, f"small{index}-{rate}hz", metadata, formats=(fmt,))[fmt]
        )
    torch.set_num_threads(_common.physical_cores())
    return paths


def run_decode_once(*, quick: bool = False, repeats: int | None = None) -> dict[str, Any]:
    """Decodes counted and decode share of one rank over eight checkpoints, and its time against eight ranks of one."""
    if not CINC_DIR.is_dir():
        print(f"CinC 2021 records not found at {CINC_DIR}: skipping")
        return {"skipped": f"CinC 2021 records not found at {CINC_DIR}"}
    repeats = repeats or (1 if quick else 3)
    specs = DECODE_ONCE_SPECS[:4] if quick else DECODE_ONCE_SPECS
    # The CinC headers draw the same warning (an unmapped SNOMED code) on every open: once is enough.
    logging.getLogger("melep").setLevel(logging.ERROR)
    machine = _common.machine_description()
    records = len(melep_cli.open_target(CINC_DIR))
    profiles: dict[str, list] = {"one rank, all checkpoints": [], "one rank per checkpoint": []}
    with tempfile.TemporaryDirectory(prefix="melep-bench-decode-") as scratch:
        checkpoints = export_small_checkpoints(Path(scratch), specs)

        def together() -> None:
            seconds, report, stats = timed_rank(checkpoints, CINC_DIR, device="cpu")
            profiles["one rank, all checkpoints"].append((seconds, stats, report))

        def separately() -> None:
            runs = [timed_rank([checkpoint], CINC_DIR, device="cpu") for checkpoint in checkpoints]
            merged = {
                stage: {key: sum(run[2][stage][key] for run in runs) for key in ("calls", "seconds", "items")}
                for stage in runs[0][2]
            }
            profiles["one rank per checkpoint"].append((sum(run[0] for run in runs), merged, None))

        together()  # warm-up: file cache, imports
        separately()
        for profile in profiles.values():
            profile.clear()
        times = round_robin({"one rank, all checkpoints": together, "one rank per checkpoint": separately}, repeats)
    rows = {}
    for label, runs in profiles.items():
        seconds, stats, _ = sorted(runs, key=lambda run: run[0])[len(runs) // 2]
        rows[label] = {
            **summary(times[label], records),
            "decodes": stats["decode"]["calls"],
            "decode_seconds": stats["decode"]["seconds"],
            "decode_share": stats["decode"]["seconds"] / seconds,
            "stages": stage_shares(stats, seconds),
        }
    report = profiles["one rank, all checkpoints"][0][2]
    together_row, separate_row = rows["one rank, all checkpoints"], rows["one rank per checkpoint"]
    result = {
        "target": str(CINC_DIR),
        "target_records": records,
        "records_ranked": report.target.records,
        "checkpoints": [
            {"name": outcome.name, "format": outcome.format, "melep": outcome.melep} for outcome in report.outcomes
        ],
        "distinct_input_specs": len({spec[:3] for spec in specs}),
        "decodes_per_rank": together_row["decodes"],
        "decodes_equal_records": together_row["decodes"] == records,
        "decodes_one_rank_per_checkpoint": separate_row["decodes"],
        "speedup_one_rank_over_separate_ranks": separate_row["median_s"] / together_row["median_s"],
        "configurations": rows,
    }
    print(
        f"{len(specs)} checkpoints ({result['distinct_input_specs']} input specs) on {records} CinC records: "
        f"one rank decoded {together_row['decodes']} records ({together_row['decode_seconds']:.2f} s, "
        f"{together_row['decode_share']:.0%} of {together_row['median_s']:.2f} s); one rank per checkpoint decoded "
        f"{separate_row['decodes']} ({separate_row['decode_share']:.0%} of {separate_row['median_s']:.2f} s); "
        f"speed-up {result['speedup_one_rank_over_separate_ranks']:.2f}x"
    )
    if not result["decodes_equal_records"]:
        raise AssertionError(f"rank decoded {together_row['decodes']} records for a target of {records}")
    payload = {
        "what": "melep_cli.rank over K small checkpoints (four input specs) on a WFDB directory: the reader's "
        "per-record function counted and timed (decode), against one rank per checkpoint",
        "machine": machine,
        **result,
    }
    return _finish_results("rank-decode-once", payload, quick=quick)


# ----- preparing inputs ahead: this checkout against the revision before ---------------------------------------
#: The revision before model inputs were prepared ahead (what `rank-prepare` compares with): a decode thread, the
#: inputs prepared on the main thread between forward passes. Since then they were prepared on a thread pool, and
#: now (the two stages) on the one producer thread that also decodes.
PREPARE_REFERENCE = "8174fcd"

# Both revisions through the public melep_cli.rank. A revision with the outputs store (`cache=`) ranks without it:
# every timed pass runs its forward passes. The first forward pass is the first call of Checkpoint.predict_outputs
# where it exists (rank calls it since the two stages), else of Checkpoint.predict (what rank called before).
_RANK_CHILD = """
import inspect, json, logging, sys, time
import melep_cli
import melep_cli.checkpoints.checkpoint as checkpoint_module
logging.getLogger("melep").setLevel(logging.ERROR)
checkpoints, target, options, passes = json.loads(sys.argv[1]), sys.argv[2], json.loads(sys.argv[3]), int(sys.argv[4])
if "cache" in inspect.signature(melep_cli.rank).parameters:
    options["cache"] = None
method = "predict_outputs" if hasattr(checkpoint_module.Checkpoint, "predict_outputs") else "predict"
first_forward, predict = [], getattr(checkpoint_module.Checkpoint, method)
def timed_predict(self, *args, **kwargs):
    if not first_forward:
        first_forward.append(time.perf_counter())
    return predict(self, *args, **kwargs)
setattr(checkpoint_module.Checkpoint, method, timed_predict)
melep_cli.rank(checkpoints, target, **options)  # warm-up: imports, file cache
seconds, until_first_forward = [], []
for _ in range(passes):
    first_forward.clear()
    start = time.perf_counter()
    report = melep_cli.rank(checkpoints, target, **options)
    seconds.append(time.perf_counter() - start)
    until_first_forward.append(first_forward[0] - start)
print(json.dumps({"package": melep_cli.__file__, "seconds": seconds, "first_forward": until_first_forward,
                  "records": report.target.records, "scores": {o.name: o.melep for o in report.outcomes},
                  "failed": [o.error for o in report.failed]}))
"""


def _rank_child(tree: Path, checkpoints: list[Path], target: Path, options: dict[str, Any], passes: int) -> dict:
    """`passes` timed in-process ranks (after one warm-up) in a fresh interpreter importing melep_cli from `tree`."""
    arguments = [json.dumps([str(path) for path in checkpoints]), str(target), json.dumps(options), str(passes)]
    result = _common.run_child(_RANK_CHILD, tree, arguments, tree, limit_threads=False)
    if result["failed"]:
        raise RuntimeError(f"rank failed in the child: {result['failed']}")
    return result


Plans = dict[str, tuple[list[Path], Path, dict[str, Any]]]


def _alternate_revisions(trees: dict[str, Path], plans: Plans, rounds: int, passes: int) -> dict[str, dict[str, Any]]:
    """Each plan (checkpoints, target, rank options) ranked in child processes alternating the `trees` ("before",
    "after"), `passes` timed ranks each, `rounds` rounds; medians, speed-up, time until the first forward pass, and a
    check that both give the same scores."""
    scenarios: dict[str, dict[str, Any]] = {}
    for label, (checkpoints, target, options) in plans.items():
        seconds: dict[str, list[float]] = {name: [] for name in trees}
        first_forward: dict[str, list[float]] = {name: [] for name in trees}
        scores: dict[str, dict[str, float]] = {}
        records = 0
        for round_index in range(rounds):
            for name in list(trees) if round_index % 2 == 0 else list(trees)[::-1]:
                result = _rank_child(trees[name], checkpoints, target, options, passes)
                seconds[name] += result["seconds"]
                first_forward[name] += result["first_forward"]
                scores[name], records = result["scores"], result["records"]
        before, after = statistics.median(seconds["before"]), statistics.median(seconds["after"])
        difference = max(abs(scores["before"][name] - scores["after"][name]) for name in scores["after"])
        scenarios[label] = {
            "checkpoints": len(checkpoints),
            "records": records,
            "before": summary(seconds["before"], records),
            "after": summary(seconds["after"], records),
            "speedup": before / after,
            "first_forward_before_s": statistics.median(first_forward["before"]),
            "first_forward_after_s": statistics.median(first_forward["after"]),
            "max_abs_score_difference": difference,
        }
        row = scenarios[label]
        print(
            f"  {label}: before {before:.2f} s, after {after:.2f} s: {before / after:.2f}x; first forward pass at "
            f"{row['first_forward_before_s']:.2f} s / {row['first_forward_after_s']:.2f} s "
            f"(scores differ by {difference:.0e})"
        )
        if difference > 1e-12:
            raise AssertionError(f"{label}: scores differ by {difference} between the two revisions")
    return scenarios


def _revision_benchmark(
    name: str,
    what: str,
    against: str,
    make_plans: Callable[[Path], Plans],
    *,
    quick: bool,
    rounds: int | None,
) -> dict[str, Any]:
    """`_alternate_revisions` of this checkout against melep_cli at git `against`, on the plans `make_plans(directory)`
    builds in a scratch directory; results/`name`.json. Skipped without the CinC 2021 or PTB-XL records."""
    if not (CINC_DIR.is_dir() and _common.PTBXL_DIR.is_dir()):
        print(f"CinC 2021 or PTB-XL records not found under {_common.SHARED_DATA}: skipping")
        return {"skipped": f"CinC 2021 or PTB-XL records not found under {_common.SHARED_DATA}"}
    machine = _common.machine_description()
    with tempfile.TemporaryDirectory(prefix=f"melep-bench-{name}-") as scratch:
        directory = Path(scratch)
        trees = {"before": _common.package_at(against, directory / "before"), "after": _common.REPO_ROOT}
        scenarios = _alternate_revisions(trees, make_plans(directory), rounds or (1 if quick else 4), 1 if quick else 2)
    payload = {"what": what, "reference_revision": against, "machine": machine, "scenarios": scenarios}
    return _finish_results(name, payload, quick=quick)


def run_prepare_ahead(*, quick: bool = False, against: str = PREPARE_REFERENCE, rounds: int | None = None) -> dict:
    """rank with inputs prepared ahead on the producer thread (which decodes them too) against `against` (decoded on
    a thread, prepared between forward passes on the main thread), alternating child processes, in the same run:
    where preprocessing weighs, and where it does not."""

    def plans(directory: Path) -> Plans:
        small = export_small_checkpoints(directory, DECODE_ONCE_SPECS[:4] if quick else DECODE_ONCE_SPECS)
        bilstm = export_paper_models(("bilstm",), directory, quick)["bilstm"]["onnx"]
        high_rate = _common.ptbxl_subset(64 if quick else 500, directory / "ptbxl500")
        low_rate = _common.ptbxl_subset(QUICK_RECORDS["bilstm"] if quick else 1024, directory / "ptbxl100")
        return {
            f"{len(small)} small CNNs (4 input specs), CinC 2021 at 500 Hz": (small, CINC_DIR, {"device": "cpu"}),
            "Bi-LSTM (100 Hz input), PTB-XL at 500 Hz": (
                [bilstm],
                high_rate,
                {"device": "cpu", "sampling_rate": 500},
            ),
            "Bi-LSTM (100 Hz input), PTB-XL at 100 Hz": ([bilstm], low_rate, {"device": "cpu"}),
        }

    what = (
        "melep_cli.rank in-process (one warm-up, then timed passes; cache=None where the revision has the outputs "
        "store) in child processes alternating this checkout (one producer thread decodes and prepares ahead) and "
        "melep_cli at the reference revision, where inputs were prepared on the main thread"
    )
    return _revision_benchmark("rank-prepare", what, against, plans, quick=quick, rounds=rounds)


# ----- step 6: peak memory against the number of records ------------------------------------------------------
def write_hdf5_target(path: Path, count: int, samples: int = MEMORY_SAMPLES, leads: int = 12) -> Path:
    """A FORMATS.md HDF5 target of `count` synthetic records (int16, gzip chunks of 1000 records, 100 Hz)."""
    import h5py

    block_rows = min(count, 10_000)
    rng = np.random.default_rng(0)
    time_axis = np.linspace(0, 10 * np.pi, samples)
    pattern = (np.sin(time_axis)[None, :, None] * 1000 + np.arange(leads) * 10).astype(np.int16)
    with h5py.File(path, "w") as handle:
        signals = handle.create_dataset(
            "signals",
            (count, samples, leads),
            dtype=np.int16,
            chunks=(min(count, 1000), samples, leads),
            compression="gzip",
            compression_opts=1,
        )
        for start in range(0, count, block_rows):
            stop = min(count, start + block_rows)
            block = np.repeat(pattern, stop - start, axis=0)
            block += rng.integers(-50, 50, size=(stop - start, 1, leads), dtype=np.int16)
            signals[start:stop] = block
        signals.attrs["sampling_rate"] = 100.0
        index = np.arange(count)
        labels = np.stack([index % 5 == 0, index % 3 == 0, index % 7 == 0], axis=1).astype(np.uint8)
        handle.create_dataset("labels", data=labels).attrs["label_names"] = ["A", "B", "C"]
    return path


def _memory_child(target: str, checkpoint: str, batch_size: int) -> None:
    """In a fresh process: RSS after imports, then rank, then the peak RSS of the rank call (printed as JSON)."""
    import onnxruntime  # noqa: F401  imported before measuring: both runtimes are part of the baseline
    import torch as child_torch  # noqa: F401

    baseline = _proc_status_kib("VmRSS")
    reset = _reset_peak_rss()
    start = time.perf_counter()
    report = melep_cli.rank([checkpoint], target, device="cpu", batch_size=batch_size, cache=None)
    seconds = time.perf_counter() - start
    print(
        json.dumps(
            {
                "baseline_kib": baseline,
                "peak_kib": _proc_status_kib("VmHWM"),
                "peak_reset_after_imports": reset,
                "rss_after_kib": _proc_status_kib("VmRSS"),
                "seconds": seconds,
                "records": report.target.records,
                "status": [outcome.status for outcome in report.outcomes],
            }
        )
    )


def _proc_status_kib(key: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def _reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux: write 5 to /proc/self/clear_refs), so the peak is rank's own."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def run_memory(*, quick: bool = False, sizes: tuple[tuple[int, int], ...] | None = None) -> dict[str, Any]:
    """Peak RSS of a fresh process ranking HDF5 targets of growing size: MB, and MB per record.

    `sizes`: (records, samples per record) pairs; the last default pair repeats 10^4 records 4x longer,
    so peak memory against the signal length shows beside peak memory against the record count.
    """
    if not Path("/proc/self/status").is_file():
        print("no /proc/self/status (not Linux): skipping the peak-memory benchmark")
        return {"skipped": "needs /proc/self/status (Linux)"}
    sizes = sizes or (
        ((500, MEMORY_SAMPLES), (2_000, MEMORY_SAMPLES), (2_000, 4 * MEMORY_SAMPLES)) if quick else MEMORY_SIZES
    )
    batch_size = default_batch_size("cpu")
    machine = _common.machine_description()
    rows = []
    with tempfile.TemporaryDirectory(prefix="melep-bench-memory-") as scratch:
        torch.set_num_threads(1)
        metadata = {
            **models.checkpoint_metadata("smallcnn", SOURCE_LABELS),
            "description": "SmallCnn, random weights, for benchmarks only",
        }
        del metadata["samples"]  # records of any length are fed whole
        checkpoint = models.export_checkpoint(
            models.small_cnn(SOURCE_LABELS), Path(scratch), "small-memory", metadata, formats=("ts",)
        )["ts"]
        torch.set_num_threads(_common.physical_cores())
        for count, samples in sizes:
            target = write_hdf5_target(Path(scratch) / f"target-{count}-{samples}.h5", count, samples)
            before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
            command = [sys.executable, __file__, "--memory-child", str(target), str(checkpoint), str(batch_size)]
            environment = {**os.environ, "PYTHONPATH": str(_common.REPO_ROOT)}
            completed = subprocess.run(command, capture_output=True, text=True, env=environment, check=False)
            if completed.returncode != 0:
                raise RuntimeError(f"memory child failed for n = {count}: {completed.stderr[-2000:]}")
            child = json.loads(completed.stdout.strip().splitlines()[-1])
            children_max = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
            signal_mb = count * samples * 12 * 4 / 1e6
            row = {
                "records": count,
                "samples": samples,
                "file_mb": target.stat().st_size / 1e6,
                "signals_float32_mb": signal_mb,
                "outputs_float32_mb": count * SOURCE_LABELS * 4 / 1e6,
                "baseline_rss_mb": child["baseline_kib"] * 1024 / 1e6,
                "peak_rss_mb": child["peak_kib"] * 1024 / 1e6,
                "rank_peak_above_baseline_mb": (child["peak_kib"] - child["baseline_kib"]) * 1024 / 1e6,
                "peak_reset_after_imports": child["peak_reset_after_imports"],
                "process_peak_rss_mb_rusage": children_max * 1024 / 1e6 if children_max > before else None,
                "seconds": child["seconds"],
                "records_ranked": child["records"],
            }
            rows.append(row)
            target.unlink()
            print(
                f"n = {count:>7,} x {samples} samples: peak RSS {row['peak_rss_mb']:7.1f} MB "
                f"({row['rank_peak_above_baseline_mb']:6.1f} MB above the {row['baseline_rss_mb']:.0f} MB after "
                f"imports), {row['seconds']:.1f} s; the signals would take {signal_mb:,.0f} MB, the outputs "
                f"{row['outputs_float32_mb']:.1f} MB"
            )
    same_length = [row for row in rows if row["samples"] == rows[0]["samples"]]
    first, last = same_length[0], same_length[-1]
    slope = (last["peak_rss_mb"] - first["peak_rss_mb"]) / (last["records"] - first["records"])
    longer = [row for row in rows if row["samples"] != rows[0]["samples"]]
    per_record_signal = rows[0]["samples"] * 12 * 4 / 1e6
    print(
        f"peak RSS grows {slope * 1e3:.2f} kB per record (signals: {per_record_signal * 1e3:.1f} kB per record, "
        f"outputs {SOURCE_LABELS * 4 / 1e3:.1f} kB float32)"
    )
    payload = {
        "what": "peak RSS (VmHWM, reset after imports) of a fresh process running melep_cli.rank on HDF5 targets; "
        "records x 12 leads int16 (gzip chunks of 1000 records), a SmallCnn TorchScript checkpoint fed whole "
        f"records, Z = {SOURCE_LABELS}, batch size {batch_size}",
        "batch_size": batch_size,
        "samples": rows[0]["samples"],
        "source_labels": SOURCE_LABELS,
        "peak_mb_per_record": slope,
        "signal_mb_per_record": per_record_signal,
        "output_mb_per_record_float32": SOURCE_LABELS * 4 / 1e6,
        "longer_records": [
            {
                "records": row["records"],
                "samples": row["samples"],
                "peak_rss_mb": row["peak_rss_mb"],
                "same_count_shorter_peak_rss_mb": next(
                    (other["peak_rss_mb"] for other in same_length if other["records"] == row["records"]), None
                ),
            }
            for row in longer
        ],
        "machine": machine,
        "sizes": rows,
    }
    return _finish_results(
        "rank-memory",
        payload,
        quick=quick,
        note=" Peak RSS includes memory the C allocator keeps after numpy frees it.",
    )


BENCHMARKS = {
    "end-to-end": lambda quick: run_end_to_end(quick=quick),
    "versus-naive": lambda quick: run_versus_naive(quick=quick),
    "decode-once": lambda quick: run_decode_once(quick=quick),
    "memory": lambda quick: run_memory(quick=quick),
    "torchscript-warmup": lambda quick: run_torchscript_warmup(quick=quick),
    "busy": lambda quick: run_busy(quick=quick),
    "prepare-ahead": lambda quick: run_prepare_ahead(quick=quick),
}


def main() -> None:
    if len(sys.argv) == 5 and sys.argv[1] == "--memory-child":
        _memory_child(sys.argv[2], sys.argv[3], int(sys.argv[4]))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=sorted(BENCHMARKS), help="run only these")
    parser.add_argument("--quick", action="store_true", help="smoke-sized runs")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="device of the end-to-end benchmark")
    args = parser.parse_args()
    for name in args.only or list(BENCHMARKS):
        print(f"== {name}", flush=True)
        if name == "end-to-end":
            run_end_to_end(device=args.device, quick=args.quick)
        else:
            BENCHMARKS[name](args.quick)


if __name__ == "__main__":
    main()
