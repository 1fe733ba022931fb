"""`adaptive-ptbxl`, `adaptive-large`: what `rank(adaptive=...)` saves, and whether its winner is the full rank's.

Through the public API (`melep_cli.rank`, `AdaptiveSettings`), every cost beside a full rank timed round-robin
in the same run (`cache=None` for both: every forward pass counted):

- `adaptive-ptbxl`: the 2,992 PTB-XL records of ../shared/data (the five superclasses) with the five sample
  checkpoints: records run through a model (`RankReport.adaptive.records_used`) against a full rank's, and
  the time. Goal: at most 1/2. Then the winner: the sample checkpoints plus two close copies of the best-scoring
  sample TorchScript checkpoint (every weight moved by 2% and 5% of its tensor's spread: checkpoints close to
  each other), outputs stored once by a full rank, then one adaptive rank per seed reading them (the rule is
  what varies with the seed, not the outputs): the share of seeds whose adaptive top-1 is the full-pass top-1
  (goal: at least the confidence, 0.95), and for those that differ, whether the pick's full-pass score lies in
  the interval the adaptive rank showed (200 bootstrap resamples there, for time). The same for the five sample
  checkpoints alone.
- `adaptive-large`: a 10^5-record HDF5 target built from the 300 real records of sample_data/ptbxl_target.h5
  (their first 2.5 s at 100 Hz, 250 samples, tiled 334 times, each copy with its own Gaussian noise of 0.02 mV,
  the labels of the record copied; chunks of 64 records, uncompressed) and 8 small CNN checkpoints
  (`models.SmallCnn`, 5 outputs, z-scored input): one trained for 300 Adam steps on the 300 sample records'
  five superclasses (the clearly best), seven with random weights (seeds 1-7). Goal: at most 1/4.

    python benchmarks/run_all.py --only adaptive-ptbxl adaptive-large [--quick]   # --quick: fewer seeds, 10^4 records
"""

from __future__ import annotations

import statistics
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import _common
import h5py
import numpy as np

import melep_cli
from melep_cli import AdaptiveSettings, BootstrapSettings

SAMPLE_CHECKPOINTS = _common.SAMPLE_DIR / "checkpoints"
SAMPLE_TARGET = _common.SAMPLE_DIR / "ptbxl_target.h5"
CLOSE_TO = "ptbxl_superclass_bilstm.ts"
SEEDS, QUICK_SEEDS = 100, 10
AGREEMENT_RESAMPLES = 200  # the interval a differing pick is checked against; fewer than a rank's 1000, for time
ROUNDS, QUICK_ROUNDS = 3, 1
LARGE, QUICK_LARGE = 100_000, 10_000
LARGE_SAMPLES = 250
GOAL_PTBXL, GOAL_LARGE = 0.5, 0.25


def perturbed_copy(source: Path, destination: Path, scale: float, seed: int) -> Path:
    """A TorchScript checkpoint with every weight moved by `scale` times its tensor's spread (same metadata)."""
    import torch

    with zipfile.ZipFile(source) as archive:
        names = [entry.split("/")[2] for entry in archive.namelist() if entry.count("/") == 2 and "/extra/" in entry]
    extra = dict.fromkeys(names, "")
    module = torch.jit.load(str(source), map_location="cpu", _extra_files=extra)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in module.parameters():
            spread = parameter.std() if parameter.numel() > 1 else parameter.abs()
            parameter.add_(torch.randn(parameter.shape, generator=generator) * spread * scale)
    torch.jit.save(module, str(destination), _extra_files=extra)
    return destination


def _cost(checkpoints: list[Path], target: Any, rounds: int) -> dict[str, Any]:
    """A full rank and an adaptive one (seed 0), both without a store, timed round-robin."""
    reports: dict[str, Any] = {}

    def full() -> None:
        reports["full"] = melep_cli.rank(checkpoints, target, cache=None)

    def adaptive() -> None:
        reports["adaptive"] = melep_cli.rank(checkpoints, target, cache=None, adaptive=AdaptiveSettings(seed=0))

    times = _common.round_robin({"full rank": full, "adaptive rank": adaptive}, rounds)
    medians = {name: statistics.median(values) for name, values in times.items()}
    summary = reports["adaptive"].adaptive
    return {
        "times": times,
        "medians": medians,
        "time_ratio": medians["adaptive rank"] / medians["full rank"],
        "records_full": summary.records_full,
        "records_forwarded": summary.records_forwarded,
        "records_ratio": summary.records_forwarded / summary.records_full,
        "looks": list(summary.looks),
        "full_top1": reports["full"].ok[0].name,
        "adaptive_top1": reports["adaptive"].ok[0].name,
        "stops": [(o.name, o.records, o.stop.reason if o.stop else None) for o in reports["adaptive"].ok],
    }


def _agreement(checkpoints: list[Path], target: Any, store: Path, seeds: int) -> dict[str, Any]:
    """Adaptive ranks for `seeds` seeds on outputs read from `store` (filled here by a full rank)."""
    full = melep_cli.rank(checkpoints, target, cache=store)
    full_scores = {outcome.name: outcome.value for outcome in full.ok}
    winner = full.ok[0].name
    agree, covered, ratios, differing = 0, 0, [], []
    for seed in range(seeds):
        report = melep_cli.rank(
            checkpoints,
            target,
            cache=store,
            adaptive=AdaptiveSettings(seed=seed),
            bootstrap=BootstrapSettings(seed=seed),
        )
        pick = report.ok[0]
        ratios.append(report.adaptive.records_used / report.adaptive.records_full)
        if pick.name == winner:
            agree += 1
            continue
        low, high = pick.uncertainty.ci if pick.uncertainty else (float("nan"), float("nan"))
        inside = bool(low <= full_scores[pick.name] <= high)
        covered += inside
        differing.append(
            {"seed": seed, "pick": pick.name, "records": pick.records, "ci": [low, high], "inside": inside}
        )
    return {
        "checkpoints": [path.name for path in checkpoints],
        "full_scores": full_scores,
        "full_top1": winner,
        "seeds": seeds,
        "agreement": agree / seeds,
        "differing": differing,
        "differing_inside_interval": covered,
        "records_ratio_mean": float(np.mean(ratios)),
        "records_ratio_max": float(np.max(ratios)),
    }


def run_ptbxl(quick: bool) -> dict[str, Any]:
    if not (_common.PTBXL_DIR / "records100").is_dir():
        return _common.skipped(f"needs PTB-XL at {_common.PTBXL_DIR}")
    target = melep_cli.open_target(_common.PTBXL_DIR)
    samples = sorted(SAMPLE_CHECKPOINTS.iterdir())
    cost = _cost(samples, target, QUICK_ROUNDS if quick else ROUNDS)
    seeds = QUICK_SEEDS if quick else SEEDS
    with tempfile.TemporaryDirectory(prefix="melep-bench-adaptive-") as directory:
        folder = Path(directory)
        close = [
            perturbed_copy(SAMPLE_CHECKPOINTS / CLOSE_TO, folder / "close_2pct.ts", 0.02, seed=1),
            perturbed_copy(SAMPLE_CHECKPOINTS / CLOSE_TO, folder / "close_5pct.ts", 0.05, seed=2),
        ]
        store = folder / "store"
        with_close = _agreement([*samples, *close], target, store, seeds)
        alone = _agreement(samples, target, store, seeds)
    return _common.write_results(
        "adaptive-ptbxl",
        {"records": len(target), "cost": cost, "agreement_close": with_close, "agreement_sample": alone},
        quick=quick,
    )


def _large_target(path: Path, records: int) -> Path:
    """`records` records from the 300 real sample records (first LARGE_SAMPLES samples), tiled with noise."""
    with h5py.File(SAMPLE_TARGET, "r") as source:
        signals = source["signals"][:, :LARGE_SAMPLES, :].astype(np.float32)
        labels = source["labels"][()]
        attributes = dict(source.attrs)
        label_names = source["labels"].attrs["label_names"]
    rng = np.random.default_rng(0)
    count = len(signals)
    with h5py.File(path, "w") as handle:
        out = handle.create_dataset(
            "signals", (records, LARGE_SAMPLES, 12), dtype="float32", chunks=(64, LARGE_SAMPLES, 12)
        )
        for start in range(0, records, count):
            stop = min(start + count, records)
            noise = rng.normal(0.0, 0.02, size=(stop - start, LARGE_SAMPLES, 12)).astype(np.float32)
            out[start:stop] = signals[: stop - start] + noise
        out.attrs["sampling_rate"] = 100
        out.attrs["units"] = "mV"
        handle.create_dataset("labels", data=np.tile(labels, (records // count + 1, 1))[:records])
        handle["labels"].attrs["label_names"] = label_names
        handle.create_dataset("record_ids", data=np.arange(records, dtype=np.int64))
        for key in ("sampling_rate", "leads"):
            handle.attrs[key] = attributes[key]
    return path


def _large_checkpoints(directory: Path) -> list[Path]:
    """One SmallCnn trained on the sample records' superclasses, seven with random weights."""
    import models
    import torch

    with h5py.File(SAMPLE_TARGET, "r") as source:
        signals = torch.tensor(source["signals"][:, :LARGE_SAMPLES, :]).transpose(1, 2)
        labels = torch.tensor(source["labels"][:, :5], dtype=torch.float32)
    signals = (signals - signals.mean(dim=2, keepdim=True)) / (signals.std(dim=2, keepdim=True) + 1e-6)
    paths = []
    for index in range(8):
        model = models.small_cnn(5, seed=index)
        if index == 0:
            optimiser = torch.optim.Adam(model.parameters(), lr=0.01)
            model.train()
            for _ in range(300):
                optimiser.zero_grad()
                loss = torch.nn.functional.binary_cross_entropy_with_logits(model(signals), labels)
                loss.backward()
                optimiser.step()
            model.eval()
        metadata = models.checkpoint_metadata("smallcnn", 5)
        metadata.update(
            name=f"small{index}",
            sampling_rate=100,
            samples=LARGE_SAMPLES,
            normalization="zscore",
            description="trained on the sample records" if index == 0 else "random weights",
        )
        paths.append(models.export_checkpoint(model, directory, f"small{index}", metadata, formats=("ts",))["ts"])
    return paths


def run_large(quick: bool) -> dict[str, Any]:
    records = QUICK_LARGE if quick else LARGE
    with tempfile.TemporaryDirectory(prefix="melep-bench-adaptive-large-") as directory:
        folder = Path(directory)
        target = melep_cli.open_target(_large_target(folder / "large.h5", records))
        checkpoints = _large_checkpoints(folder / "checkpoints")
        cost = _cost(checkpoints, target, QUICK_ROUNDS if quick else 1)
    return _common.write_results("adaptive-large", {"records": records, "cost": cost}, quick=quick)


def _cost_row(what: str, cost: dict[str, Any], goal: float) -> str:
    medians = cost["medians"]
    return (
        f"| {what} | {cost['records_forwarded']:,} of {cost['records_full']:,} ({cost['records_ratio']:.3f},"
        f" goal ≤ {goal}) | {medians['adaptive rank']:.1f} s | {medians['full rank']:.1f} s |"
        f" {cost['time_ratio']:.2f} | {cost['adaptive_top1']} / {cost['full_top1']} |"
    )


_COST_HEADER = [
    "| target, checkpoints | records forwarded, adaptive of full | adaptive | full rank | time ratio"
    " | top-1 adaptive / full |",
    "|---|---|---|---|---|---|",
]


def figures_ptbxl(document: dict[str, Any]) -> list[str]:
    lines = [
        *_COST_HEADER,
        _cost_row(f"PTB-XL {document['records']:,} records, 5 sample checkpoints", document["cost"], GOAL_PTBXL),
    ]
    lines += [
        "",
        "| checkpoints | seeds | adaptive top-1 = full top-1 | differing, full score in the interval shown"
        " | records used, mean / max of full |",
        "|---|---|---|---|---|",
    ]
    for key, what in (
        ("agreement_sample", "5 sample"),
        ("agreement_close", "5 sample + 2 close copies of ptbxl_superclass_bilstm"),
    ):
        found = document[key]
        lines.append(
            f"| {what} | {found['seeds']} | {found['agreement']:.3f} (goal ≥ 0.95) |"
            f" {found['differing_inside_interval']} of {len(found['differing'])} |"
            f" {found['records_ratio_mean']:.3f} / {found['records_ratio_max']:.3f} |"
        )
    return lines


def figures_large(document: dict[str, Any]) -> list[str]:
    what = f"{document['records']:,} tiled records, 8 small CNNs (one trained)"
    return [*_COST_HEADER, _cost_row(what, document["cost"], GOAL_LARGE)]


BENCHMARKS = {"adaptive-ptbxl": (run_ptbxl, figures_ptbxl), "adaptive-large": (run_large, figures_large)}


if __name__ == "__main__":
    for run, figures in BENCHMARKS.values():
        print("\n".join(figures(run(quick=False))))
