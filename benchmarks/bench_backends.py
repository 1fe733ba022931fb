"""Model-only forward-pass throughput of each inference backend, as ratios against eager PyTorch.

For the paper's two source models (benchmarks/models.py: 1-D ResNet-101, ~3 GFLOP/record, and
Bi-LSTM) on real PTB-XL 100 Hz records, this times:
- eager PyTorch under torch.inference_mode;
- TorchScript loaded from a saved checkpoint: plain, frozen (torch.jit.freeze), and
  torch.jit.optimize_for_inference;
- ONNX Runtime (ORT_ENABLE_ALL graph optimisations): sequential and parallel execution mode,
  intra-op threads = physical cores, and without thread spinning;
each at torch/ORT intra-op threads = physical cores and = 1 (on a shared machine the
multi-threaded runs can be far slower). Configurations are timed round-robin (each round
starting one configuration later), one pass over the records each, so machine noise hits them
alike; warm-up passes are excluded; figures are medians (and best of rounds). Then a batch-size
sweep for the fastest configuration of each model.

    python benchmarks/bench_backends.py                # CPU, a few minutes on 2 cores
    python benchmarks/bench_backends.py --quick        # under a minute: fewer records
    python benchmarks/bench_backends.py --device cuda  # GPU (skips cleanly without one)

Writes benchmarks/results/backends-<device>.json.
"""

from __future__ import annotations

import argparse
import math
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import _common
import models
import numpy as np
import torch

CPU_RECORDS = {"resnet101": 32, "bilstm": 64}
QUICK_RECORDS = {"resnet101": 4, "bilstm": 8}
CUDA_RECORDS = {"resnet101": 1024, "bilstm": 1024}
CPU_SWEEP = (16, 32, 64, 128)
CUDA_SWEEP = (16, 32, 64, 128, 256, 512)
QUICK_SWEEP = (4, 8)


@dataclass
class Backend:
    """One way of running a model: `run(batch)` -> outputs as numpy; `threads` applied before each pass."""

    name: str
    family: str
    run: Callable[[np.ndarray], np.ndarray]
    threads: int | None = None
    options: dict[str, Any] = field(default_factory=dict)


def torch_backends(model: torch.nn.Module, ts_path: Path, device: str, thread_counts: list[int]) -> list[Backend]:
    """Eager, TorchScript plain / frozen / optimize_for_inference, at each torch thread count."""
    target = torch.device(device)
    eager = model.to(target).eval()
    plain = torch.jit.load(str(ts_path), map_location=target).eval()
    frozen = torch.jit.freeze(torch.jit.load(str(ts_path), map_location=target).eval())
    optimized = torch.jit.optimize_for_inference(torch.jit.freeze(torch.jit.load(str(ts_path), map_location=target)))
    modules = {
        "eager": eager,
        "torchscript": plain,
        "torchscript-frozen": frozen,
        "torchscript-optimized": optimized,
    }
    backends = []
    for threads in thread_counts:
        for name, module in modules.items():
            backends.append(
                Backend(
                    name=f"{name} (threads={threads})" if device == "cpu" else name,
                    family=name,
                    run=_torch_runner(module, target),
                    threads=threads if device == "cpu" else None,
                    options={"torch_threads": threads} if device == "cpu" else {"device": device},
                )
            )
    return backends


def _torch_runner(module: torch.nn.Module, device: torch.device) -> Callable[[np.ndarray], np.ndarray]:
    if device.type == "cuda":

        def run_cuda(batch: np.ndarray) -> np.ndarray:
            # Pinned host memory makes the copy asynchronous, as a DataLoader with pin_memory does.
            host = torch.from_numpy(batch).pin_memory()
            with torch.inference_mode():
                return module(host.to(device, non_blocking=True)).float().cpu().numpy()

        return run_cuda

    def run_cpu(batch: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return module(torch.from_numpy(batch)).numpy()

    return run_cpu


def ort_backends(onnx_path: Path, device: str, cores: int) -> list[Backend]:
    """ONNX Runtime sessions: execution mode and thread options (CUDA provider on `cuda`)."""
    import onnxruntime as ort

    def session(
        intra: int,
        mode: str = "sequential",
        inter: int = 1,
        spinning: bool = True,
        provider: str = "CPUExecutionProvider",
    ) -> Callable[[np.ndarray], np.ndarray]:
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = intra
        options.inter_op_num_threads = inter
        options.execution_mode = (
            ort.ExecutionMode.ORT_PARALLEL if mode == "parallel" else ort.ExecutionMode.ORT_SEQUENTIAL
        )
        if not spinning:
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
            options.add_session_config_entry("session.inter_op.allow_spinning", "0")
        sess = ort.InferenceSession(str(onnx_path), options, providers=[provider])
        input_name = sess.get_inputs()[0].name
        return lambda batch: sess.run(None, {input_name: batch})[0]

    if device == "cuda":
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            return []
        return [
            Backend("onnxruntime-cuda", "onnxruntime-cuda", session(cores, provider="CUDAExecutionProvider"), None, {})
        ]
    backends = [
        Backend(
            f"onnxruntime sequential (intra={cores})",
            "onnxruntime",
            session(cores),
            None,
            {"execution_mode": "sequential", "intra_op_threads": cores},
        ),
        Backend(
            f"onnxruntime parallel (intra={cores}, inter={cores})",
            "onnxruntime",
            session(cores, "parallel", cores),
            None,
            {"execution_mode": "parallel", "intra_op_threads": cores, "inter_op_threads": cores},
        ),
        Backend(
            f"onnxruntime sequential no-spin (intra={cores})",
            "onnxruntime",
            session(cores, spinning=False),
            None,
            {"execution_mode": "sequential", "intra_op_threads": cores, "allow_spinning": False},
        ),
    ]
    if cores > 1:
        backends.append(
            Backend(
                "onnxruntime sequential (intra=1)",
                "onnxruntime",
                session(1),
                None,
                {"execution_mode": "sequential", "intra_op_threads": 1},
            )
        )
    return backends


def batches_of(signals: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """Contiguous float32 batches, made before timing so decoding is not part of the figure."""
    return [np.ascontiguousarray(signals[start : start + batch_size]) for start in range(0, len(signals), batch_size)]


def one_pass(backend: Backend, batches: list[np.ndarray], sync: Callable[[], None] | None) -> float:
    """Seconds to run every batch through `backend`, outputs back on the host."""
    if backend.threads is not None:
        torch.set_num_threads(backend.threads)
    start = time.perf_counter()
    for batch in batches:
        backend.run(batch)
    if sync:
        sync()
    return time.perf_counter() - start


def compare_backends(
    backends: list[Backend],
    batches: list[np.ndarray],
    *,
    repeats: int,
    warmup: int,
    sync: Callable[[], None] | None,
) -> list[dict[str, Any]]:
    """Round-robin timing of every backend over the same batches; medians, ratios to eager."""
    records = sum(len(batch) for batch in batches)
    reference = None
    checks: dict[str, float] = {}
    for backend in backends:
        if backend.threads is not None:
            torch.set_num_threads(backend.threads)
        outputs = backend.run(batches[0])
        if reference is None:
            reference = outputs
        checks[backend.name] = float(np.max(np.abs(outputs - reference)))
        for _ in range(warmup):  # with the check above: two untimed runs (TorchScript profiles, then optimises)
            one_pass(backend, batches[:1], sync)
    times: dict[str, list[float]] = {backend.name: [] for backend in backends}
    for round_index in range(repeats):
        # Each round starts one configuration later, so none always runs right after the same one.
        shift = round_index % len(backends)
        for backend in backends[shift:] + backends[:shift]:
            times[backend.name].append(one_pass(backend, batches, sync))
    eager = statistics.median(times[backends[0].name])
    eager_best = min(times[backends[0].name])
    eager_at = {
        backend.threads: statistics.median(times[backend.name]) for backend in backends if backend.family == "eager"
    }
    rows = []
    for backend in backends:
        median = statistics.median(times[backend.name])
        same_threads = eager_at.get(
            backend.threads if backend.family != "onnxruntime" else backend.options.get("intra_op_threads")
        )
        rows.append(
            {
                "backend": backend.name,
                "family": backend.family,
                **backend.options,
                "median_s": median,
                "min_s": min(times[backend.name]),
                "max_s": max(times[backend.name]),
                "records": records,
                "records_per_s": records / median,
                "speedup_vs_eager": eager / median,
                "speedup_vs_eager_same_threads": None if same_threads is None else same_threads / median,
                "speedup_vs_eager_best_of_rounds": eager_best / min(times[backend.name]),
                "max_abs_diff_vs_eager": checks[backend.name],
            }
        )
    return rows


def batch_size_sweep(
    backend: Backend,
    signals: np.ndarray,
    sizes: tuple[int, ...],
    *,
    repeats: int,
    sync: Callable[[], None] | None,
) -> list[dict[str, Any]]:
    """Throughput of `backend` at each batch size, sizes timed round-robin (at least one full batch each)."""
    plans = {}
    for size in sizes:
        count = math.ceil(max(len(signals), size) / size) * size
        plans[size] = batches_of(signals[np.arange(count) % len(signals)], size)
        one_pass(backend, plans[size][:1], sync)  # warm-up at this shape
    times: dict[int, list[float]] = {size: [] for size in sizes}
    for _ in range(repeats):
        for size in sizes:
            times[size].append(one_pass(backend, plans[size], sync))
    rows = []
    for size in sizes:
        count = sum(len(batch) for batch in plans[size])
        median = statistics.median(times[size])
        rows.append(
            {
                "batch_size": size,
                "records": count,
                "median_s": median,
                "min_s": min(times[size]),
                "max_s": max(times[size]),
                "records_per_s": count / median,
            }
        )
        print(f"    batch {size:>4}: {count / median:9.1f} records/s")
    return rows


def run(
    *,
    device: str = "cpu",
    records: int | None = None,
    batch_size: int | None = None,
    quick: bool = False,
    model_names: tuple[str, ...] = ("resnet101", "bilstm"),
    sweep: tuple[int, ...] | None = None,
    repeats: int | None = None,
) -> dict[str, Any]:
    """Benchmark every backend for each model on `device`; write results/backends-<device>.json."""
    if device == "cuda" and not torch.cuda.is_available():
        print("CUDA is not available (torch.cuda.is_available() is False): skipping the CUDA benchmark")
        return {"skipped": "CUDA not available"}
    cores = _common.physical_cores()
    thread_counts = sorted({cores, 1}, reverse=True) if device == "cpu" else [cores]
    default_records = QUICK_RECORDS if quick else CUDA_RECORDS if device == "cuda" else CPU_RECORDS
    batch_size = batch_size or (4 if quick else 256 if device == "cuda" else 16)
    repeats = repeats or (1 if quick else 5)
    sweep = sweep or (QUICK_SWEEP if quick else CUDA_SWEEP if device == "cuda" else CPU_SWEEP)
    sync = torch.cuda.synchronize if device == "cuda" else None
    machine = _common.machine_description()
    print(f"machine: {machine['cpu']}, {cores} physical cores, load {machine['load_average_at_start']}")

    count = max(records or max(default_records[name] for name in model_names), 32)
    signals, origin = _common.load_ptbxl_signals(count)
    print(f"input: {origin}")
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="melep-bench-") as scratch:
        for name in model_names:
            model_records = records or default_records[name]
            # Setup is not timed: one thread, which is never slow on a shared machine.
            torch.set_num_threads(1)
            calibration = torch.from_numpy(signals[: 8 if quick else 32])
            model = models.build(name, calibration=calibration)
            flops = models.flops_per_record(model)
            files = models.export_checkpoint(
                model, Path(scratch), f"bench-{name}", models.checkpoint_metadata(name, models.DEFAULT_OUTPUTS)
            )
            backends = torch_backends(model, files["ts"], device, thread_counts)
            backends += ort_backends(files["onnx"], device, cores)
            torch.set_num_threads(cores)
            batches = batches_of(signals[np.arange(model_records) % len(signals)], batch_size)
            print(f"{name}: {flops / 1e9:.2f} GFLOP/record, {model_records} records, batch size {batch_size}")
            rows = compare_backends(backends, batches, repeats=repeats, warmup=1, sync=sync)
            for row in rows:
                print(
                    f"  {row['backend']:<48} {row['records_per_s']:9.1f} records/s  "
                    f"x{row['speedup_vs_eager']:6.2f} vs eager, "
                    f"x{row['speedup_vs_eager_same_threads'] or 0:5.2f} vs eager at its threads  "
                    f"(max |diff| {row['max_abs_diff_vs_eager']:.1e})"
                )
            best = max(rows, key=lambda row: row["records_per_s"])
            best_backend = next(backend for backend in backends if backend.name == best["backend"])
            print(f"  batch-size sweep for {best['backend']}:")
            sweep_rows = batch_size_sweep(best_backend, signals, sweep, repeats=repeats, sync=sync)
            best_size = max(sweep_rows, key=lambda row: row["records_per_s"])["batch_size"]
            results[name] = {
                "gflop_per_record": flops / 1e9,
                "records": model_records,
                "batch_size": batch_size,
                "repeats": repeats,
                "backends": rows,
                "best_backend": best["backend"],
                "best_speedup_vs_eager": best["speedup_vs_eager"],
                "batch_size_sweep": {"backend": best["backend"], "sizes": sweep_rows, "best_batch_size": best_size},
            }
            del backends, model
    payload = {
        "device": device,
        "input": origin,
        "quick": quick,
        "note": _common.NOISE_NOTE + " Speedups are eager median time / backend median time, same run.",
        "load_average_at_end": list(__import__("os").getloadavg()),
        "machine": machine,
        "models": results,
    }
    path = _common.write_results(f"backends-{device}" + ("-quick" if quick else ""), payload)
    print(f"wrote {path}")
    return payload


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--records", type=int, help="records per timed pass (default: per model and device)")
    parser.add_argument(
        "--batch-size", type=int, help="batch size of the backend comparison (default 16 CPU, 256 CUDA)"
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: 4-8 records, one pass each, two sweep sizes")
    parser.add_argument("--models", nargs="+", choices=sorted(models.MODELS), default=["resnet101", "bilstm"])
    parser.add_argument("--sweep", type=int, nargs="+", help="batch sizes of the sweep")
    parser.add_argument("--repeats", type=int, help="timed passes per backend (median reported)")
    args = parser.parse_args()
    run(
        device=args.device,
        records=args.records,
        batch_size=args.batch_size,
        quick=args.quick,
        model_names=tuple(args.models),
        sweep=tuple(args.sweep) if args.sweep else None,
        repeats=args.repeats,
    )


if __name__ == "__main__":
    main()
