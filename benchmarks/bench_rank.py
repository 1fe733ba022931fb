"""`melep rank` end to end through `melep_cli.rank`: against the model alone, the naive pipeline, K ranks of one, n.

- `rank-cpu` / `rank-cuda`: `melep_cli.rank(..., cache=None)` on the paper's 1-D ResNet-101 and Bi-LSTM
  (TorchScript and ONNX checkpoints) over a PTB-XL 100 Hz directory, round-robin with the model-only forward
  pass of the best backends of `backends-cpu` (frozen TorchScript, ONNX Runtime sequential) on the same
  records prepared before timing: warm (the runtime started before the timing) and cold (session created,
  module loaded and frozen, inside it). Ratio = rank records/s / best model-only records/s. Where the device
  has fast 16-bit arithmetic, the ResNet-101 also with `precision=`, its own ratio. Each checkpoint's own time
  in rank (`RankReport.outcomes[].seconds`: load, forward passes, score), then a rank batch-size sweep.
- `rank-vs-naive`: rank with its defaults against `naive_baseline` on the same records and labels (the
  ResNet-101, then both paper models in one ranking); both must give the same MELEP. Beside them, reading
  the records: melep's reader (`open_target(...).batches`) against `wfdb.rdsamp`.
- `rank-decode-once`: eight small checkpoints (four input specs) on the CinC 2021 WFDB directory: records
  decoded (`melep_cli.forward(...).decoded`) by one pass over the eight and by eight passes of one; one rank
  of eight against eight ranks of one, and a decode-only pass (`open_target(...).batches`) in the same rounds.
- `rank-memory`: peak RSS of a fresh process ranking generated HDF5 targets of 10^3 .. 10^5 records, against
  the RSS after imports and what the signals and outputs would take.

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
import bench_backends
import models
import naive_baseline
import numpy as np
import torch

import melep_cli

RECORDS = {"cpu": {"resnet101": 256, "bilstm": 1024}, "cuda": {"resnet101": 2048, "bilstm": 2048}}
QUICK_RECORDS = {"resnet101": 16, "bilstm": 64}
SWEEP = {"cpu": (16, 32, 64, 128), "cuda": (64, 128, 256, 512)}
END_TO_END_ROUNDS = 5  # 3 left ratios 10 % apart run to run on a shared 2-core machine
SOURCE_LABELS = 100  # Z of the small checkpoints
#: (sampling_rate, samples, normalization, format) of the decode-once checkpoints: four input specs, two each.
DECODE_ONCE_SPECS = tuple(
    (rate, rate * 10, normalization, fmt)
    for rate, normalization in ((100, "none"), (100, "zscore"), (250, "none"), (500, "zscore"))
    for fmt in ("ts", "onnx")
)
#: (records, samples per record) of rank-memory: growing n, then 10^4 records four times longer.
MEMORY_SIZES = ((1_000, 500), (10_000, 500), (100_000, 500), (10_000, 2_000))
QUICK_MEMORY_SIZES = ((500, 500), (2_000, 500), (2_000, 2_000))


def timed_rank(checkpoints: list[Path], target: Path, target_options: dict | None = None, **options: Any) -> tuple:
    """(seconds, report) of one `melep_cli.rank` without the outputs store (every forward pass runs), the target
    opened inside the timing (with `target_options` when given)."""
    start = time.perf_counter()
    opened = melep_cli.open_target(target, **target_options) if target_options else target
    report = melep_cli.rank(checkpoints, opened, cache=None, **options)
    seconds = time.perf_counter() - start
    if report.failed:
        raise RuntimeError("rank failed: " + "; ".join(str(outcome.error) for outcome in report.failed))
    return seconds, report


# ----- rank-cpu / rank-cuda ---------------------------------------------------------------------------------------
def _frozen(path: Path, device: str, dtype: torch.dtype = torch.float32) -> Any:
    return torch.jit.freeze(torch.jit.load(str(path), map_location=device).eval().to(dtype))


def _run_module(module: Any, batches: list[np.ndarray], device: str, dtype: torch.dtype = torch.float32) -> None:
    """Forward passes as melep runs TorchScript: inference mode, the graph executor's optimisation off on the CPU."""
    with torch.inference_mode(), torch.jit.optimized_execution(device == "cuda"):
        for batch in batches:
            tensor = torch.from_numpy(batch)
            if device == "cuda":
                tensor = tensor.pin_memory().to(device, non_blocking=True)
            module(tensor.to(dtype)).float().cpu().numpy()


def _onnx_runner(files: dict[str, Any], device: str) -> Callable[[np.ndarray], np.ndarray]:
    return bench_backends.ort_runner(files["onnx"], _common.physical_cores(), cuda=device == "cuda")


def _run_onnx(runner: Callable[[np.ndarray], np.ndarray], batches: list[np.ndarray]) -> None:
    for batch in batches:
        runner(batch)


def model_only(files: dict[str, Any], device: str, precision: str | None) -> dict[str, Callable[[list], None]]:
    """Model-only passes: warm (module and session made here), cold (made inside the call), and the 16-bit one."""
    runners = {
        "model-only torchscript-frozen": functools.partial(_run_module, _frozen(files["ts"], device), device=device),
        "model-only onnxruntime": functools.partial(_run_onnx, _onnx_runner(files, device)),
        "model-only torchscript-frozen (cold)": lambda batch: _run_module(_frozen(files["ts"], device), batch, device),
        "model-only onnxruntime (cold)": lambda batches: _run_onnx(_onnx_runner(files, device), batches),
    }
    if precision:
        dtype = getattr(torch, precision)
        runners[f"model-only torchscript-frozen ({precision})"] = functools.partial(
            _run_module, _frozen(files["ts"], device, dtype), device=device, dtype=dtype
        )
    return runners


def run_end_to_end(quick: bool = False, device: str = "cpu") -> dict[str, Any]:
    """rank vs the best model-only backend, warm and cold, on the same records in the same rounds; a rank sweep."""
    if device == "cuda" and not torch.cuda.is_available():
        return _common.skipped("CUDA not available")
    if missing := _common.missing_ptbxl():
        return missing
    rounds, counts = (1, QUICK_RECORDS) if quick else (END_TO_END_ROUNDS, RECORDS[device])
    machine, results = _common.machine_description(), {}
    with tempfile.TemporaryDirectory(prefix="melep-bench-rank-") as scratch:
        exported = _common.export_paper_models(tuple(counts), Path(scratch), quick)
        for name, count in counts.items():
            files = exported[name]
            target = _common.ptbxl_subset(count, Path(scratch) / f"ptbxl-{name}")
            print(f"{name}: {files['gflop_per_record']:.2f} GFLOP/record, {count} PTB-XL records")
            # The Bi-LSTM's LSTM keeps float32 inside (melep falls back): only the ResNet-101 in 16 bits.
            precision = _common.sixteen_bit(files["ts"], device) if name == "resnet101" else None
            sweep = (8, 16) if quick else SWEEP[device]
            results[name] = _end_to_end(files, target, count, device, rounds, sweep, precision)
    payload = {
        "device": device,
        "what": "melep_cli.rank(..., cache=None) vs the model-only forward pass of prepared batches (warm, and "
        "cold: the runtime started inside the timing), round-robin in the same run",
        "machine": machine,
        "models": results,
    }
    return _common.write_results(f"rank-{device}", payload, quick=quick)


def _end_to_end(files, target, count, device, rounds, sweep, precision) -> dict[str, Any]:
    batch_size = 256 if device == "cuda" else 32  # melep's defaults
    spec = melep_cli.InputSpec(models.SAMPLING_RATE, models.SAMPLES, models.LEADS, "NCT", "none", "float32")
    opened = melep_cli.open_target(target)
    batches = [melep_cli.prepare(b.signals, b.sampling_rate, b.leads, spec) for b in opened.batches(batch_size)]
    configurations = {
        label: functools.partial(run, batches) for label, run in model_only(files, device, precision).items()
    }
    own: dict[str, list[float]] = {}  # each checkpoint's own time in rank / rank's time

    def rank(label: str, key: str, bits: str = "float32", size: int = batch_size) -> None:
        seconds, report = timed_rank([files[key]], target, device=device, batch_size=size, precision=bits)
        if report.outcomes[0].precision != bits:
            raise RuntimeError(f"{label}: ran in {report.outcomes[0].precision}, not {bits}")
        own.setdefault(label, []).append(report.outcomes[0].seconds / seconds)

    configurations["rank torchscript"] = functools.partial(rank, "rank torchscript", "ts")
    configurations["rank onnx"] = functools.partial(rank, "rank onnx", "onnx")
    if precision:
        configurations[f"rank torchscript ({precision})"] = functools.partial(
            rank, f"rank torchscript ({precision})", "ts", precision
        )
    for label, configuration in configurations.items():  # warm-up: file cache, the runtimes' first runs
        configuration()
        if label.startswith("model-only") and "(cold)" not in label:
            configuration()
    own.clear()
    rows = {
        label: _common.summary(times, count) for label, times in _common.round_robin(configurations, rounds).items()
    }
    speed = {label: row["records_per_s"] for label, row in rows.items()}
    exact = [label for label in rows if "16)" not in label and "(cold)" not in label]
    warm, ranks = [lb for lb in exact if lb.startswith("model-only")], [lb for lb in exact if lb.startswith("rank")]
    best_rank, best_warm = max(ranks, key=speed.get), max(warm, key=speed.get)
    best_cold = max((label for label in rows if label.endswith("(cold)")), key=speed.get)
    ratios = {
        "rank_over_best_model_only": speed[best_rank] / speed[best_warm],
        "rank_over_best_model_only_best_rounds": max(rows[lb]["records_per_s_best_round"] for lb in ranks)
        / max(rows[lb]["records_per_s_best_round"] for lb in warm),
        "rank_over_best_cold_model_only": speed[best_rank] / speed[best_cold],
        "rank_torchscript_over_cold_model_only": speed["rank torchscript"]
        / speed["model-only torchscript-frozen (cold)"],
        "rank_onnx_over_cold_model_only": speed["rank onnx"] / speed["model-only onnxruntime (cold)"],
    }
    if precision:
        ratios[f"rank_torchscript_{precision}_over_model_only"] = (
            speed[f"rank torchscript ({precision})"] / speed[f"model-only torchscript-frozen ({precision})"]
        )
    print("\n".join(f"  {label:<40} {value:8.1f} records/s" for label, value in speed.items()))
    print("  " + ", ".join(f"{key} {value:.3f}" for key, value in ratios.items()))
    best_key = "ts" if best_rank == "rank torchscript" else "onnx"
    sweep_plan = {size: functools.partial(rank, "sweep", best_key, size=size) for size in sweep}
    sweep_times = _common.round_robin(sweep_plan, max(1, rounds - 1))
    return {
        "gflop_per_record": files["gflop_per_record"],
        "records": count,
        "batch_size": batch_size,
        "configurations": rows,
        "best_model_only": best_warm,
        "best_rank": best_rank,
        "ratios": ratios,
        "checkpoint_share_of_rank": {
            label: statistics.median(shares) for label, shares in own.items() if label.startswith("rank")
        },
        "rank_batch_size_sweep": {
            "checkpoint": best_key,
            "sizes": [{"batch_size": size, **_common.summary(times, count)} for size, times in sweep_times.items()],
        },
    }


def end_to_end_figures(document: dict[str, Any]) -> list[str]:
    rows, notes = [], []
    for model, result in document["models"].items():
        speed, ratios = result["configurations"], result["ratios"]

        def cell(label: str, speed: dict = speed) -> str:
            return (
                f"{speed[label]['records_per_s']:.1f}/s ({speed[label]['median_s']:.2f} s)" if label in speed else "-"
            )

        rows.append(
            [f"{model} ({result['gflop_per_record']:.2f} GFLOP)", result["records"]]
            + [cell(f"model-only {backend}") for backend in ("torchscript-frozen", "onnxruntime")]
            + [cell(f"rank {fmt}") for fmt in ("torchscript", "onnx")]
            + [f"{ratios[key]:.3f}" for key in ("rank_over_best_model_only", "rank_over_best_model_only_best_rounds")]
            + [f"**{ratios['rank_over_best_cold_model_only']:.3f}**"]
        )
        notes.append(
            f"{model}: cold model-only TorchScript {cell('model-only torchscript-frozen (cold)')}, ONNX Runtime "
            f"{cell('model-only onnxruntime (cold)')}; rank / cold: TorchScript "
            f"{ratios['rank_torchscript_over_cold_model_only']:.3f}, ONNX "
            f"{ratios['rank_onnx_over_cold_model_only']:.3f}."
        )
        for bits in ("bfloat16", "float16"):
            if f"rank_torchscript_{bits}_over_model_only" in ratios:
                sixteen = speed[f"model-only torchscript-frozen ({bits})"]["records_per_s"]
                times = sixteen / speed["model-only torchscript-frozen"]["records_per_s"]
                notes.append(
                    f"{model}, `--precision {bits}`: model-only {sixteen:.1f}/s ({times:.2f}x float32), rank "
                    f"{cell(f'rank torchscript ({bits})')}, ratio "
                    f"{ratios[f'rank_torchscript_{bits}_over_model_only']:.3f}."
                )
        shares = ", ".join(f"{label} {share:.0%}" for label, share in result["checkpoint_share_of_rank"].items())
        notes.append(f"{model}: the checkpoint's own time (load, forward passes, score) in rank: {shares}.")
        sweep = result["rank_batch_size_sweep"]
        sizes = ", ".join(f"{row['batch_size']}: {row['records_per_s']:.1f}" for row in sweep["sizes"])
        notes.append(f"{model}: rank batch-size sweep ({sweep['checkpoint']}), records/s: {sizes}.")
    columns = ["model", "records", "model-only TorchScript frozen", "model-only ONNX Runtime", "rank TorchScript"]
    columns += ["rank ONNX", "rank / best warm model-only", "(best of rounds)", "rank / best cold model-only"]
    return [
        f"`melep_cli.rank` against the model alone on the same prepared records ({document['device']}), same rounds, "
        "medians; warm: the runtime started before the timing, cold: inside it:",
        "",
        *_common.table(columns, rows),
        "",
        *notes,
    ]


# ----- rank-vs-naive ----------------------------------------------------------------------------------------------
def run_versus_naive(quick: bool = False) -> dict[str, Any]:
    """rank against naive_baseline on the ResNet-101, then on both paper models in one ranking."""
    if missing := _common.missing_ptbxl():
        return missing
    (count, rounds), names = (64, 1) if quick else (256, 3), ("resnet101", "bilstm")
    plans = {"resnet101": names[:1], "resnet101 + bilstm": names}
    record_paths, labels = naive_baseline.ptbxl_target(_common.PTBXL_DIR, count)
    machine = _common.machine_description()
    with tempfile.TemporaryDirectory(prefix="melep-bench-naive-") as scratch:
        exported = _common.export_paper_models(names, Path(scratch), quick)
        target = _common.ptbxl_subset(count, Path(scratch) / "ptbxl")
        opened = melep_cli.open_target(target, labels=naive_baseline.SUPERCLASSES)
        if tuple(opened.label_names) != naive_baseline.SUPERCLASSES or not np.array_equal(opened.labels, labels):
            raise RuntimeError("melep's PTB-XL reader and the naive baseline disagree on records or labels")
        bits = _common.sixteen_bit(exported[names[0]]["ts"], "cpu")
        scenarios = {
            label: _versus_naive([exported[name] for name in members], target, record_paths, labels, rounds, bits)
            for label, members in plans.items()
        }
        import wfdb

        reading = {
            "melep reader": lambda: sum(len(batch) for batch in melep_cli.open_target(target).batches(32)),
            "wfdb.rdsamp": lambda: [wfdb.rdsamp(str(path)) for path in record_paths],
        }
        for configuration in reading.values():
            configuration()
        read_times = _common.round_robin(reading, max(3, rounds))
    payload = {
        "what": "melep_cli.rank (defaults) vs naive_baseline, same records and labels, round-robin; speed-up = naive "
        "median / rank median; reading: melep's reader (target opened inside) vs wfdb.rdsamp, the same records",
        "records": count,
        "machine": machine,
        "scenarios": scenarios,
        "reading_us_per_record": {label: statistics.median(t) / count * 1e6 for label, t in read_times.items()},
    }
    return _common.write_results("rank-vs-naive", payload, quick=quick)


def _versus_naive(exported, target, record_paths, labels, rounds, bits) -> dict[str, Any]:
    scores: dict[str, float] = {}
    precisions: dict[str, str | None] = {}
    members = [f"bench-{files['name']}" for files in exported]

    def naive() -> None:
        for name, files in zip(members, exported):  # each checkpoint reads the records again, as naively done
            logits = naive_baseline.naive_forward(files["module"], naive_baseline.WfdbRecords(record_paths))
            scores[f"naive {name}"] = naive_baseline.naive_melep(logits, labels)["score"]

    def ranked(key: str, precision: str = "float32") -> None:
        options = {"labels": naive_baseline.SUPERCLASSES}
        _, report = timed_rank([files[key] for files in exported], target, options, precision=precision)
        for outcome in report.outcomes:
            scores[f"rank {key} {precision} {outcome.name}"] = outcome.melep
            if precision != "float32":
                precisions[outcome.name] = outcome.precision

    configurations = {"naive": naive, "rank (torchscript)": lambda: ranked("ts"), "rank (onnx)": lambda: ranked("onnx")}
    if bits:  # reported apart: not the same arithmetic as the naive pipeline
        configurations[f"rank (torchscript, {bits})"] = lambda: ranked("ts", bits)
    for configuration in configurations.values():  # warm-up
        configuration()
    times = _common.round_robin(configurations, rounds)
    rows = {label: _common.summary(seconds, len(record_paths) * len(exported)) for label, seconds in times.items()}
    naive_s, ranks = rows["naive"]["median_s"], ["rank (torchscript)", "rank (onnx)"]
    best = min(ranks, key=lambda label: rows[label]["median_s"])
    agreement = max(
        abs(scores[f"rank {k} float32 {n}"] / scores[f"naive {n}"] - 1) for n in members for k in ("ts", "onnx")
    )
    if agreement > 1e-6:
        raise AssertionError(f"rank and the naive pipeline disagree: {scores}")
    result: dict[str, Any] = {
        "checkpoints": members,
        "configurations": rows,
        "best_rank": best,
        "speedup_best_rank_over_naive": naive_s / rows[best]["median_s"],
        "speedup_best_rank_over_naive_best_rounds": rows["naive"]["min_s"] / min(rows[lb]["min_s"] for lb in ranks),
        "max_rel_score_diff_rank_vs_naive": agreement,
    }
    if bits:
        result[f"speedup_{bits}_over_naive"] = naive_s / rows[f"rank (torchscript, {bits})"]["median_s"]
        result[f"{bits}_precisions"] = {name: precisions[name] for name in members}
        result[f"max_abs_score_diff_{bits}_vs_naive"] = max(
            abs(scores[f"rank ts {bits} {name}"] - scores[f"naive {name}"]) for name in members
        )
    print(f"{' + '.join(members)}: " + ", ".join(f"{label} {row['median_s']:.2f} s" for label, row in rows.items()))
    return result


def versus_naive_figures(document: dict[str, Any]) -> list[str]:
    rows, notes = [], []
    for scenario, result in document["scenarios"].items():
        times = result["configurations"]
        speedups = (result["speedup_best_rank_over_naive"], result["speedup_best_rank_over_naive_best_rounds"])
        rows.append(
            [
                scenario,
                *(f"{times[label]['median_s']:.2f} s" for label in ("naive", "rank (torchscript)", "rank (onnx)")),
            ]
        )
        rows[-1] += [
            f"**{speedups[0]:.2f}x**",
            f"{speedups[1]:.2f}x",
            f"{result['max_rel_score_diff_rank_vs_naive']:.0e}",
        ]
        for bits in ("bfloat16", "float16"):
            if f"speedup_{bits}_over_naive" in result:
                ran = ", ".join(f"{name} {value}" for name, value in result[f"{bits}_precisions"].items())
                notes.append(
                    f"{scenario}, `--precision {bits}`: rank {times[f'rank (torchscript, {bits})']['median_s']:.2f} s, "
                    f"{result[f'speedup_{bits}_over_naive']:.2f}x faster than the naive pipeline; MELEP within "
                    f"{result[f'max_abs_score_diff_{bits}_vs_naive']:.0e} of its float32 scores (ran in: {ran})."
                )
    us = document["reading_us_per_record"]
    notes.append(
        f"Reading a PTB-XL record: melep's reader {us['melep reader']:.0f} µs, wfdb.rdsamp {us['wfdb.rdsamp']:.0f} "
        f"µs ({us['wfdb.rdsamp'] / us['melep reader']:.1f}x)."
    )
    columns = ["checkpoints", "naive", "rank TorchScript", "rank ONNX", "speed-up (median)", "(best of rounds)"]
    return [
        "`melep rank` (defaults) against the naive pipeline (DataLoader batch 128 over wfdb.rdsamp, eager PyTorch, "
        f"Python loop over label pairs), {document['records']} PTB-XL records, same run, round-robin:",
        "",
        *_common.table([*columns, "scores agree to"], rows),
        "",
        *notes,
    ]


# ----- rank-decode-once -------------------------------------------------------------------------------------------
def small_checkpoint(directory: Path, index: int, rate: int, samples: int | None, normalization: str, fmt: str) -> Path:
    """A models.SmallCnn checkpoint (seed `index`), its metadata stating rate, length (None: any) and normalisation."""
    metadata = models.checkpoint_metadata("smallcnn", SOURCE_LABELS)
    metadata.update(name=f"small{index}", sampling_rate=rate, samples=samples, normalization=normalization)
    if samples is None:
        del metadata["samples"]
    torch.set_num_threads(1)
    model = models.small_cnn(SOURCE_LABELS, seed=index)
    path = models.export_checkpoint(model, directory, f"small{index}-{rate}hz", metadata, formats=(fmt,))[fmt]
    torch.set_num_threads(_common.physical_cores())
    return path


def run_decode_once(quick: bool = False) -> dict[str, Any]:
    """Records decoded for K checkpoints, one rank of K against K ranks of one, and the decode share of a rank."""
    if not _common.CINC_DIR.is_dir():
        return _common.skipped(f"CinC 2021 records not found at {_common.CINC_DIR}")
    rounds, specs = (1, DECODE_ONCE_SPECS[:4]) if quick else (3, DECODE_ONCE_SPECS)
    logging.getLogger("melep").setLevel(logging.ERROR)  # the same unmapped SNOMED code warned on every open
    machine, target = _common.machine_description(), _common.CINC_DIR
    records = len(melep_cli.open_target(target))
    with tempfile.TemporaryDirectory(prefix="melep-bench-decode-") as scratch:
        checkpoints = [small_checkpoint(Path(scratch), index, *spec) for index, spec in enumerate(specs)]
        together = melep_cli.forward(checkpoints, target, cache=None, device="cpu").decoded
        separately = sum(melep_cli.forward([path], target, cache=None, device="cpu").decoded for path in checkpoints)
        configurations = {
            "one rank, all checkpoints": lambda: timed_rank(checkpoints, target, device="cpu"),
            "one rank per checkpoint": lambda: [timed_rank([path], target, device="cpu") for path in checkpoints],
            "decoding alone": lambda: sum(len(batch) for batch in melep_cli.open_target(target).batches(32)),
        }
        for configuration in configurations.values():  # warm-up: file cache, imports
            configuration()
        rows = {
            label: _common.summary(times, records)
            for label, times in _common.round_robin(configurations, rounds).items()
        }
    one, each, decoding = (rows[label]["median_s"] for label in configurations)
    print(
        f"{together} decodes in one rank ({separately} in one rank each); {one:.2f} s, {each:.2f} s, {decoding:.2f} s"
    )
    if together != records:
        raise AssertionError(f"one rank decoded {together} records of a target of {records}")
    payload = {
        "what": "melep_cli.rank over K small checkpoints (four input specs) against one rank per checkpoint; records "
        "decoded as melep_cli.forward reports them; a decode-only pass (open_target + batches) in the same rounds",
        "machine": machine,
        "target_records": records,
        "checkpoints": [path.name for path in checkpoints],
        "distinct_input_specs": len({spec[:3] for spec in specs}),
        "decodes_per_rank": together,
        "decodes_one_rank_per_checkpoint": separately,
        "speedup_one_rank_over_separate_ranks": each / one,
        "decode_share_of_one_rank": decoding / one,
        "decode_share_of_ranks_per_checkpoint": len(checkpoints) * decoding / each,
        "configurations": rows,
    }
    return _common.write_results("rank-decode-once", payload, quick=quick)


def decode_once_figures(document: dict[str, Any]) -> list[str]:
    rows = document["configurations"]
    labels = ("one rank, all checkpoints", "one rank per checkpoint")
    one, each = (rows[label]["median_s"] for label in labels)
    share, share_each = document["decode_share_of_one_rank"], document["decode_share_of_ranks_per_checkpoint"]
    return [
        f"Decode once: {len(document['checkpoints'])} checkpoints ({document['distinct_input_specs']} input specs) on "
        f"{document['target_records']} CinC 2021 records (500 Hz WFDB): one rank decoded "
        f"**{document['decodes_per_rank']}** records, one rank per checkpoint "
        f"{document['decodes_one_rank_per_checkpoint']}; "
        f"one rank {one:.2f} s (decoding {share:.0%} of it), one rank per checkpoint {each:.2f} s (decoding "
        f"{share_each:.0%}): one rank is **{document['speedup_one_rank_over_separate_ranks']:.2f}x** faster."
    ]


# ----- rank-memory ------------------------------------------------------------------------------------------------
def write_hdf5_target(path: Path, count: int, samples: int, leads: int = 12) -> Path:
    """A FORMATS.md HDF5 target of `count` synthetic records (int16, gzip chunks of 1000 records, 100 Hz)."""
    import h5py

    rng = np.random.default_rng(0)
    wave = np.sin(np.linspace(0, 10 * np.pi, samples))[None, :, None] * 1000 + np.arange(leads) * 10
    with h5py.File(path, "w") as handle:
        chunks = (min(count, 1000), samples, leads)
        signals = handle.create_dataset(
            "signals", (count, samples, leads), np.int16, chunks=chunks, compression="gzip", compression_opts=1
        )
        for start in range(0, count, 10_000):
            stop = min(count, start + 10_000)
            signals[start:stop] = wave.astype(np.int16) + rng.integers(-50, 50, (stop - start, 1, leads), np.int16)
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
                  "failed": [outcome.error for outcome in report.failed]}))
"""


def run_memory(quick: bool = False) -> dict[str, Any]:
    """Peak RSS of a fresh process ranking HDF5 targets of growing size: MB, and MB per record."""
    if not Path("/proc/self/clear_refs").exists():
        return _common.skipped("needs /proc/self/status and clear_refs (Linux)")
    machine, rows = _common.machine_description(), []
    with tempfile.TemporaryDirectory(prefix="melep-bench-memory-") as scratch:
        checkpoint = small_checkpoint(Path(scratch), 0, 100, None, "none", "ts")  # fed whole records
        for count, samples in QUICK_MEMORY_SIZES if quick else MEMORY_SIZES:
            target = write_hdf5_target(Path(scratch) / f"target-{count}-{samples}.h5", count, samples)
            command = [sys.executable, "-c", _MEMORY_CHILD, str(target), str(checkpoint)]
            completed = subprocess.run(command, capture_output=True, text=True, env=_common.ENVIRONMENT, check=False)
            child = json.loads(completed.stdout.strip().splitlines()[-1]) if completed.returncode == 0 else None
            if not child or child["failed"]:
                raise RuntimeError(f"rank failed for n = {count}: {child or completed.stderr[-2000:]}")
            target.unlink()
            rows.append(
                {
                    "records": count,
                    "samples": samples,
                    "signals_float32_mb": count * samples * 12 * 4 / 1e6,
                    "outputs_float32_mb": count * SOURCE_LABELS * 4 / 1e6,
                    "baseline_rss_mb": child["baseline_kib"] * 1024 / 1e6,
                    "peak_rss_mb": child["peak_kib"] * 1024 / 1e6,
                    "rank_peak_above_baseline_mb": (child["peak_kib"] - child["baseline_kib"]) * 1024 / 1e6,
                    "seconds": child["seconds"],
                }
            )
            print(f"n = {count:>7,} x {samples}: peak RSS {rows[-1]['peak_rss_mb']:.0f} MB")
    same_length = [row for row in rows if row["samples"] == rows[0]["samples"]]
    first, last = same_length[0], same_length[-1]
    payload = {
        "what": "peak RSS (VmHWM, reset after imports) of a fresh process running melep_cli.rank(..., cache=None) "
        "on HDF5 targets (int16, gzip chunks of 1000 records, 12 leads), a SmallCnn fed whole records",
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
    columns = ["records n", "samples", "peak RSS", "above the RSS after imports", "signals as float32", "outputs"]
    rows = [
        [
            f"{row['records']:,}",
            row.get("samples", document["samples"]),
            *(f"{row[key]:,.0f} MB" for key in ("peak_rss_mb", "rank_peak_above_baseline_mb", "signals_float32_mb")),
            f"{row['outputs_float32_mb']:.1f} MB",
            f"{row['seconds']:.1f} s",
        ]
        for row in document["sizes"]
    ]
    return [
        f"Peak memory of `melep rank` (fresh process, VmHWM reset after imports; HDF5, records x 12 leads, "
        f"Z = {document['source_labels']}, batch {document['batch_size']}):",
        "",
        *_common.table([*columns, "seconds"], rows),
        "",
        f"Peak RSS grows **{document['peak_mb_per_record'] * 1e3:.2f} kB per record**; the signals take "
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
