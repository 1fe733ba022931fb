"""`bootstrap`: what the paired bootstrap (intervals, P(best), ties) adds to a rank, and its cost at scale.

Two measurements, each a ratio of timings taken round-robin in the same run (medians of the rounds):

- on `sample_data/` (the README's quick start, five checkpoints, 300 records), in-process through
  `melep_cli.rank(...)`: the rank with the default bootstrap (1000 resamples) against the same rank with
  `BootstrapSettings(resamples=0)`, both cold (`cache=None`: every forward pass) and warm (outputs read
  from a filled store: the re-rank, where stage 2 is all there is). Goal: the bootstrap adds under 20%.
- at scale, stage 2 alone through the public scoring API: 8 checkpoints' outputs of 10^5 records x 100 source
  labels and 20 target labels (synthetic logits driven by shared latent factors, so the scores differ and
  correlate as real ones do), `MelepScore().compute(..., influence=True)` plus `paired_bootstrap` against
  `MelepScore().compute(...)` alone (the metric without intervals). Goal: under 60 s on a 2-core machine,
  with peak memory O(n (Y + Z)) (no n x B array): the tracemalloc peak is reported beside n (Y + Z) float64s.

    python benchmarks/run_all.py --only bootstrap [--quick]   # --quick: 2 rounds, 2 * 10^4 records at scale
"""

from __future__ import annotations

import statistics
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

import _common
import numpy as np

import melep_cli
from melep_cli.bootstrap import BootstrapSettings, Estimate, paired_bootstrap
from melep_cli.scores import MelepScore, ModelOutputs

SAMPLE_CHECKPOINTS = _common.SAMPLE_DIR / "checkpoints"
SAMPLE_TARGET = _common.SAMPLE_DIR / "ptbxl_target.h5"
ROUNDS, QUICK_ROUNDS = 7, 2
SCALE = {"records": 100_000, "target_labels": 20, "source_labels": 100, "checkpoints": 8}
QUICK_RECORDS = 20_000
SAMPLE_GOAL = 1.20  # the bootstrap adds under 20% to a rank
SCALE_GOAL_SECONDS = 60.0


def _sample(rounds: int) -> dict[str, Any]:
    off = BootstrapSettings(resamples=0)

    def ranker(cache: Path | None, settings: BootstrapSettings):  # type: ignore[no-untyped-def]
        return lambda: melep_cli.rank([SAMPLE_CHECKPOINTS], SAMPLE_TARGET, cache=cache, bootstrap=settings)

    with tempfile.TemporaryDirectory(prefix="melep-bench-bootstrap-") as directory:
        store = Path(directory)
        melep_cli.rank([SAMPLE_CHECKPOINTS], SAMPLE_TARGET, cache=store)  # fills the store; warms the imports
        times = _common.round_robin(
            {
                "cold, bootstrap": ranker(None, BootstrapSettings()),
                "cold, no bootstrap": ranker(None, off),
                "warm, bootstrap": ranker(store, BootstrapSettings()),
                "warm, no bootstrap": ranker(store, off),
            },
            rounds,
        )
    medians = {name: statistics.median(values) for name, values in times.items()}
    return {
        "times": times,
        "medians": medians,
        "cold_ratio": medians["cold, bootstrap"] / medians["cold, no bootstrap"],
        "warm_ratio": medians["warm, bootstrap"] / medians["warm, no bootstrap"],
    }


def _synthetic(records: int, seed: int = 0) -> tuple[np.ndarray, list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    latent = rng.normal(size=(records, 6))
    mixing = rng.normal(size=(6, SCALE["target_labels"]))
    labels = (latent @ mixing + rng.normal(size=(records, SCALE["target_labels"])) > 1.0).astype(np.uint8)
    outputs = []
    for k in range(SCALE["checkpoints"]):
        strength = 0.3 + 0.1 * k  # checkpoints that see the latent factors more or less clearly
        weights = rng.normal(size=(6, SCALE["source_labels"])) * strength
        logits = latent @ weights + rng.normal(size=(records, SCALE["source_labels"]))
        outputs.append(logits.astype(np.float32))
    return labels, outputs


def _scale(records: int, rounds: int) -> dict[str, Any]:
    labels, outputs = _synthetic(records)
    names = [f"y{i}" for i in range(labels.shape[1])]
    score = MelepScore()

    def metric_alone() -> None:
        for logits in outputs:
            score.compute(ModelOutputs(logits, "logits"), labels, names)

    def with_intervals() -> list[Any]:
        estimates = []
        for logits in outputs:
            value = score.compute(ModelOutputs(logits, "logits"), labels, names, influence=True)
            estimates.append(Estimate(value.value, value.influence, value.per_label, value.per_label_influence))  # type: ignore[arg-type]
        return paired_bootstrap(estimates)

    times = _common.round_robin({"metric alone": metric_alone, "metric + bootstrap": with_intervals}, rounds)
    medians = {name: statistics.median(values) for name, values in times.items()}
    tracemalloc.start()
    started = time.perf_counter()
    with_intervals()
    traced_seconds = time.perf_counter() - started
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    inputs = sum(logits.nbytes for logits in outputs) + labels.nbytes
    per_checkpoint = records * (SCALE["target_labels"] + SCALE["source_labels"]) * 8
    return {
        "shape": {**SCALE, "records": records},
        "times": times,
        "medians": medians,
        "ratio": medians["metric + bootstrap"] / medians["metric alone"],
        "peak_bytes_beyond_inputs": peak,
        "inputs_bytes": inputs,
        "n_times_y_plus_z_float64_bytes": per_checkpoint,
        "peak_over_n_y_plus_z": peak / per_checkpoint,
        "seconds_under_tracemalloc": traced_seconds,
    }


def run(quick: bool) -> dict[str, Any]:
    rounds = QUICK_ROUNDS if quick else ROUNDS
    sample = _sample(rounds)
    scale = _scale(QUICK_RECORDS if quick else SCALE["records"], max(1, rounds // 2))
    return _common.write_results("bootstrap", {"sample": sample, "scale": scale}, quick=quick)


def figures(document: dict[str, Any]) -> list[str]:
    sample, scale = document["sample"], document["scale"]
    shape = scale["shape"]
    medians = sample["medians"]
    return [
        "| measurement | with bootstrap | without | ratio | goal |",
        "|---|---|---|---|---|",
        f"| rank on sample_data, cold (every forward pass) | {medians['cold, bootstrap']:.2f} s"
        f" | {medians['cold, no bootstrap']:.2f} s | {sample['cold_ratio']:.3f} | < {SAMPLE_GOAL:.2f} |",
        f"| re-rank on sample_data, warm (outputs from the store) | {medians['warm, bootstrap']:.3f} s"
        f" | {medians['warm, no bootstrap']:.3f} s | {sample['warm_ratio']:.3f} | < {SAMPLE_GOAL:.2f} |",
        f"| stage 2 at {shape['records']:,} records x {shape['target_labels']} target x {shape['source_labels']}"
        f" source labels x {shape['checkpoints']} checkpoints | {scale['medians']['metric + bootstrap']:.1f} s"
        f" | {scale['medians']['metric alone']:.1f} s | {scale['ratio']:.2f} | < {SCALE_GOAL_SECONDS:.0f} s |",
        "",
        f"Peak memory of stage 2 with the bootstrap at that size, beyond the outputs themselves: "
        f"{scale['peak_bytes_beyond_inputs'] / 2**20:.0f} MiB, {scale['peak_over_n_y_plus_z']:.1f} times"
        f" n (Y + Z) float64s ({scale['n_times_y_plus_z_float64_bytes'] / 2**20:.0f} MiB); an n x B array of"
        f" float64 would be {shape['records'] * 1000 * 8 / 2**20:.0f} MiB per checkpoint.",
    ]


if __name__ == "__main__":
    result = run(quick=False)
    print("\n".join(figures(result)))
