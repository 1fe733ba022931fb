"""`backends-cpu` / `backends-cuda`: model-only forward-pass throughput of each backend, against eager PyTorch.

For the paper's two source models (models.py: 1-D ResNet-101, ~3 GFLOP a record, and Bi-LSTM) on real
PTB-XL 100 Hz records: eager PyTorch (inference_mode); TorchScript loaded from the checkpoint, plain,
frozen and optimize_for_inference; ONNX Runtime (ORT_ENABLE_ALL) sequential, parallel, and without thread
spinning; at intra-op threads = physical cores and = 1. Timed round-robin, one pass over the records each,
after untimed warm-up runs (TorchScript profiles on the first and optimises on the second); medians and best
of rounds. CUDA: torch with pinned host memory, ORT's CUDAExecutionProvider. (`rank-cpu` sweeps rank's batch
size, where melep's default comes from.)

    python benchmarks/run_all.py --only backends-cpu [--quick]   # a few minutes on 2 cores
"""

from __future__ import annotations

import statistics
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import _common
import models
import numpy as np
import torch

RECORDS = {"cpu": {"resnet101": 32, "bilstm": 64}, "cuda": {"resnet101": 1024, "bilstm": 1024}}
QUICK_RECORDS = {"resnet101": 4, "bilstm": 8}
Runner = Callable[[np.ndarray], np.ndarray]


def _torch_runner(module: torch.nn.Module, device: str, threads: int | None) -> Runner:
    def run(batch: np.ndarray) -> np.ndarray:
        if threads is not None:
            torch.set_num_threads(threads)
        tensor = torch.from_numpy(batch)
        with torch.inference_mode():
            if device == "cuda":  # pinned host memory: an asynchronous copy, as a DataLoader with pin_memory does
                return module(tensor.pin_memory().to(device, non_blocking=True)).float().cpu().numpy()
            return module(tensor).numpy()

    return run


def ort_runner(path: Path, intra: int, *, parallel: bool = False, spinning: bool = True, cuda: bool = False) -> Runner:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = intra
    options.inter_op_num_threads = intra if parallel else 1
    options.execution_mode = ort.ExecutionMode.ORT_PARALLEL if parallel else ort.ExecutionMode.ORT_SEQUENTIAL
    if not spinning:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    providers = ["CUDAExecutionProvider"] if cuda else ["CPUExecutionProvider"]
    session = ort.InferenceSession(str(path), options, providers=providers)
    name = session.get_inputs()[0].name
    return lambda batch: session.run(None, {name: batch})[0]


def backends(model: torch.nn.Module, files: dict[str, Path], device: str, cores: int) -> dict[str, Runner]:
    """Every configuration, eager at all cores first (the reference of every speed-up)."""
    import onnxruntime as ort

    load = lambda: torch.jit.load(str(files["ts"]), map_location=device).eval()  # noqa: E731
    modules = {
        "eager": model.to(device).eval(),
        "torchscript": load(),
        "torchscript-frozen": torch.jit.freeze(load()),
        "torchscript-optimized": torch.jit.optimize_for_inference(torch.jit.freeze(load())),
    }
    if device == "cuda":
        runners = {name: _torch_runner(module, device, None) for name, module in modules.items()}
        if "CUDAExecutionProvider" in ort.get_available_providers():
            runners["onnxruntime-cuda"] = ort_runner(files["onnx"], cores, cuda=True)
        return runners
    runners = {
        f"{name} (threads={threads})": _torch_runner(module, device, threads)
        for threads in sorted({cores, 1}, reverse=True)
        for name, module in modules.items()
    }
    runners[f"onnxruntime sequential (intra={cores})"] = ort_runner(files["onnx"], cores)
    runners[f"onnxruntime parallel (intra={cores}, inter={cores})"] = ort_runner(files["onnx"], cores, parallel=True)
    runners[f"onnxruntime sequential no-spin (intra={cores})"] = ort_runner(files["onnx"], cores, spinning=False)
    if cores > 1:
        runners["onnxruntime sequential (intra=1)"] = ort_runner(files["onnx"], 1)
    return runners


def _passes(runner: Runner, batches: list[np.ndarray], sync: Callable[[], None] | None) -> Callable[[], None]:
    def run() -> None:
        for batch in batches:
            runner(batch)
        if sync:
            sync()

    return run


def run(device: str = "cpu", quick: bool = False) -> dict[str, Any]:
    """Every backend for each model on `device`, round-robin; results/backends-<device>.json."""
    if device == "cuda" and not torch.cuda.is_available():
        return _common.skipped("CUDA not available")
    cores, machine = _common.physical_cores(), _common.machine_description()
    counts = QUICK_RECORDS if quick else RECORDS[device]
    batch_size, rounds = (4, 1) if quick else (256 if device == "cuda" else 16, 5)
    sync = torch.cuda.synchronize if device == "cuda" else None
    signals, origin = _common.load_ptbxl_signals(max(*counts.values(), 32))
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="melep-bench-") as scratch:
        for name, count in counts.items():
            torch.set_num_threads(1)  # setup, untimed: one thread is never slow on a shared machine
            model = models.build(name, calibration=torch.from_numpy(signals[: 8 if quick else 32]))
            metadata = models.checkpoint_metadata(name, models.DEFAULT_OUTPUTS)
            files = models.export_checkpoint(model, Path(scratch), f"bench-{name}", metadata)
            runners = backends(model, files, device, cores)
            torch.set_num_threads(cores)
            records = signals[np.arange(count) % len(signals)]
            batches = [np.ascontiguousarray(records[i : i + batch_size]) for i in range(0, count, batch_size)]
            reference = next(iter(runners.values()))(batches[0])
            difference = {label: float(np.max(np.abs(run(batches[0]) - reference))) for label, run in runners.items()}
            configurations = {label: _passes(runner, batches, sync) for label, runner in runners.items()}
            for configuration in configurations.values():  # with the check above: two untimed runs each
                configuration()
            times = _common.round_robin(configurations, rounds)
            eager = next(iter(times))
            rows = []
            for label, seconds in times.items():
                rows.append(
                    {
                        "backend": label,
                        **_common.summary(seconds, count),
                        "speedup_vs_eager": statistics.median(times[eager]) / statistics.median(seconds),
                        "speedup_vs_eager_best_of_rounds": min(times[eager]) / min(seconds),
                        "max_abs_diff_vs_eager": difference[label],
                    }
                )
                print(f"  {name} {label:<44} {rows[-1]['records_per_s']:8.1f} records/s")
            best = max(rows, key=lambda row: row["records_per_s"])["backend"]
            results[name] = {
                "gflop_per_record": models.flops_per_record(model) / 1e9,
                "records": count,
                "batch_size": batch_size,
                "repeats": rounds,
                "backends": rows,
                "best_backend": best,
            }
    payload = {"device": device, "input": origin, "machine": machine, "models": results}
    return _common.write_results(f"backends-{device}", payload, quick=quick)


def figures(document: dict[str, Any]) -> list[str]:
    machine = document["machine"]
    lines = [
        f"Forward pass, model only ({document['device']}; torch {machine['torch']}, onnxruntime "
        f"{machine['onnxruntime']}). Speed-up = eager PyTorch (all cores) time / backend time, same run: of the "
        "medians, and of the fastest of the rounds:",
        "",
        "| model | backend | records/s (median) | speed-up (median) | speed-up (best of rounds) |",
        "| --- | --- | ---: | ---: | ---: |",
    ]
    for model, result in document["models"].items():
        for row in result["backends"]:
            lines.append(
                f"| {model} ({result['gflop_per_record']:.2f} GFLOP) | {row['backend']} | {row['records_per_s']:.1f} "
                f"| {row['speedup_vs_eager']:.2f} | {row['speedup_vs_eager_best_of_rounds']:.2f} |"
            )
    return lines


BENCHMARKS = {
    "backends-cpu": (lambda quick: run("cpu", quick), figures),
    "backends-cuda": (lambda quick: run("cuda", quick), figures),
}
