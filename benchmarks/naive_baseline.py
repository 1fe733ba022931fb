"""The naive way to get MELEP scores, as the paper's authors describe their pipeline: the baseline
that `melep rank` is compared against.

Per checkpoint: a torch DataLoader (batch size 128) over a Dataset that reads each WFDB record
when asked, eager PyTorch under torch.no_grad to get the outputs, then MELEP with a Python loop
over every (target label, source label) pair, each pair a plain LEEP computation in numpy.
Nothing is shared between checkpoints: each one decodes the records again.

Its score must equal `melep_cli.metric.melep` on the same outputs (checked here to 1e-9, also
on the golden vectors in shared/spec/vectors.json when present).

    python benchmarks/naive_baseline.py                      # the benchmark models, 256 PTB-XL records
    python benchmarks/naive_baseline.py --checkpoints a.ts b.ts --records 512
"""

from __future__ import annotations

import argparse
import ast
import csv
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import _common
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

SUPERCLASSES = ("NORM", "MI", "STTC", "HYP", "CD")
PAPER_BATCH_SIZE = 128
EPS = 1e-12  # the same clipping as melep_cli.metric, so both see the same theta


class WfdbRecords(Dataset):
    """PTB-XL records read from disk on every access, (12, samples) float32 in mV."""

    def __init__(self, record_paths: list[Path], samples: int = 1000) -> None:
        self.record_paths = record_paths
        self.samples = samples

    def __len__(self) -> int:
        return len(self.record_paths)

    def __getitem__(self, index: int) -> torch.Tensor:
        import wfdb

        values, _ = wfdb.rdsamp(str(self.record_paths[index]))
        signal = np.zeros((values.shape[1], self.samples), dtype=np.float32)
        length = min(self.samples, values.shape[0])
        signal[:, :length] = np.nan_to_num(values[:length].T)
        return torch.from_numpy(signal)


def ptbxl_target(directory: Path, count: int) -> tuple[list[Path], np.ndarray]:
    """The first `count` PTB-XL records (100 Hz) and their diagnostic-superclass labels (n x 5)."""
    classes: dict[str, str] = {}
    with (directory / "scp_statements.csv").open(newline="") as handle:
        for row in csv.DictReader(handle):
            if row.get("diagnostic") and float(row["diagnostic"]) == 1.0:
                classes[row[""]] = row["diagnostic_class"]
    paths, labels = [], []
    with (directory / "ptbxl_database.csv").open(newline="") as handle:
        for row in csv.DictReader(handle):
            if len(paths) == count:
                break
            codes = ast.literal_eval(row["scp_codes"])
            present = {classes[code] for code in codes if code in classes}
            paths.append(directory / row["filename_lr"])
            labels.append([int(name in present) for name in SUPERCLASSES])
    return paths, np.array(labels, dtype=np.uint8)


def naive_forward(model: torch.nn.Module, dataset: Dataset, batch_size: int = PAPER_BATCH_SIZE) -> np.ndarray:
    """Outputs (n x Z) of `model` over a DataLoader, eager PyTorch, no_grad."""
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False)
    outputs = []
    model.eval()
    with torch.no_grad():
        for batch in loader:
            outputs.append(model(batch).numpy())
    return np.concatenate(outputs)


def leep_binary(theta: np.ndarray, target: np.ndarray) -> float:
    """LEEP of one binary source output (theta: n probabilities) for one binary target label.

    Straight from Nguyen et al. (2020): empirical joint P(t, s), conditional P(t | s), then the
    mean log of the expected empirical prediction of each record's own label.
    """
    n = theta.shape[0]
    source = np.stack([1.0 - theta, theta], axis=1)  # n x 2: P(s = 0), P(s = 1)
    joint = np.zeros((2, 2))
    for t in (0, 1):
        joint[t] = source[target == t].sum(axis=0) / n
    conditional = joint / joint.sum(axis=0, keepdims=True)  # P(t | s)
    expected = source @ conditional.T  # n x 2: sum_s P(t | s) P(s | x)
    return float(np.mean(np.log(expected[np.arange(n), target])))


def naive_melep(logits: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    """MELEP (prevalence weighting) with a Python loop over (target label, source label) pairs."""
    theta = np.clip(1.0 / (1.0 + np.exp(-logits.astype(np.float64))), EPS, 1.0 - EPS)
    n, n_target = labels.shape
    per_label = np.full(n_target, np.nan)
    phi = np.full((n_target, theta.shape[1]), np.nan)
    for y in range(n_target):
        target = labels[:, y].astype(np.int64)
        if target.sum() in (0, n):
            continue  # degenerate: no information, left out as melep_cli does
        for z in range(theta.shape[1]):
            phi[y, z] = -leep_binary(theta[:, z], target)
        per_label[y] = phi[y].mean()
    prevalence = labels.sum(axis=0) / n
    informative = ~np.isnan(per_label)
    weights = prevalence[informative] / prevalence[informative].sum()
    return {"score": float(np.sum(weights * per_label[informative])), "per_label": per_label, "phi": phi}


def naive_rank(checkpoints: list[Path], record_paths: list[Path], labels: np.ndarray) -> list[dict[str, Any]]:
    """Score every TorchScript checkpoint the naive way; best (lowest MELEP) first."""
    rows = []
    for path in checkpoints:
        start = time.perf_counter()
        model = torch.jit.load(str(path))
        logits = naive_forward(model, WfdbRecords(record_paths))
        scored = naive_melep(logits, labels)
        rows.append({"checkpoint": path.name, "melep": scored["score"], "seconds": time.perf_counter() - start})
    return sorted(rows, key=lambda row: row["melep"])


def check_against_melep_cli(logits: np.ndarray, labels: np.ndarray, tolerance: float = 1e-9) -> float:
    """Largest relative difference between the naive and melep_cli scores, per-label values and phi."""
    from melep_cli.metric import melep

    fast = melep(logits, labels, activation="logits")
    slow = naive_melep(logits, labels)
    differences = [
        abs(fast.score - slow["score"]) / abs(fast.score),
        float(np.nanmax(np.abs(fast.per_label - slow["per_label"]) / np.abs(fast.per_label))),
        float(np.nanmax(np.abs(fast.phi - slow["phi"]) / np.abs(fast.phi))),
    ]
    worst = max(differences)
    if worst > tolerance:
        raise AssertionError(f"naive MELEP differs from melep_cli.metric.melep by {worst:.2e} (relative)")
    return worst


def check_golden_vectors() -> float | None:
    """The naive MELEP against shared/spec/vectors.json (prevalence weighting); None when absent."""
    path = _common.REPO_ROOT.parent / "shared" / "spec" / "vectors.json"
    if not path.is_file():
        return None
    worst = 0.0
    for case in json.loads(path.read_text())["cases"]:
        labels = np.array(case["labels"], dtype=np.uint8)
        if "logits" in case:
            logits = np.array(case["logits"], dtype=np.float64)
        else:  # probabilities: the logit gives them back through the sigmoid
            probabilities = np.clip(np.array(case["probs"], dtype=np.float64), EPS, 1 - EPS)
            logits = np.log(probabilities) - np.log1p(-probabilities)
        score = naive_melep(logits, labels)["score"]
        worst = max(worst, abs(score - case["expected"]["prevalence"]) / abs(case["expected"]["prevalence"]))
    if worst > 1e-9:
        raise AssertionError(f"naive MELEP misses the golden vectors by {worst:.2e} (relative)")
    return worst


def run(*, quick: bool = False, records: int | None = None, checkpoints: list[Path] | None = None) -> dict[str, Any]:
    """Time the naive pipeline on PTB-XL and check it against melep_cli; write results/naive-baseline.json."""
    import models

    directory = _common.PTBXL_DIR
    if not (directory / "ptbxl_database.csv").is_file():
        print(f"PTB-XL not found at {directory}: skipping the naive baseline (it reads real records)")
        return {"skipped": f"PTB-XL not found at {directory}"}
    count = records or (64 if quick else 256)
    record_paths, labels = ptbxl_target(directory, count)
    golden = check_golden_vectors()
    rows = []
    with tempfile.TemporaryDirectory(prefix="melep-naive-") as scratch:
        if not checkpoints:
            torch.set_num_threads(1)  # setup only
            calibration = torch.from_numpy(_common.load_ptbxl_signals(8 if quick else 32)[0])
            checkpoints = []
            for name in ("bilstm",) if quick else ("resnet101", "bilstm"):
                model = models.build(name, calibration=calibration)
                metadata = models.checkpoint_metadata(name, models.DEFAULT_OUTPUTS)
                checkpoints.append(
                    models.export_checkpoint(model, Path(scratch), f"bench-{name}", metadata, formats=("ts",))["ts"]
                )
            torch.set_num_threads(_common.physical_cores())
        for path in checkpoints:
            model = torch.jit.load(str(path))
            start = time.perf_counter()
            logits = naive_forward(model, WfdbRecords(record_paths))
            forward_s = time.perf_counter() - start
            start = time.perf_counter()
            scored = naive_melep(logits, labels)
            metric_s = time.perf_counter() - start
            worst = check_against_melep_cli(logits, labels)
            rows.append(
                {
                    "checkpoint": path.name,
                    "melep": scored["score"],
                    "forward_s": forward_s,
                    "metric_s": metric_s,
                    "seconds": forward_s + metric_s,
                    "max_rel_diff_vs_melep_cli": worst,
                }
            )
            print(
                f"{path.name}: MELEP {scored['score']:.6f}  forward {forward_s:.2f} s + pair loop {metric_s:.3f} s; "
                f"matches melep_cli to {worst:.1e}"
            )
    payload = {
        "what": "naive pipeline: DataLoader(batch 128) over WFDB reads, eager PyTorch, per-pair LEEP loop",
        "records": count,
        "target_labels": list(SUPERCLASSES),
        "torch_threads": torch.get_num_threads(),
        "golden_vectors_max_rel_diff": golden,
        "note": _common.NOISE_NOTE,
        "checkpoints": rows,
    }
    path = _common.write_results("naive-baseline" + ("-quick" if quick else ""), payload)
    print(f"wrote {path}")
    return payload


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--checkpoints", type=Path, nargs="+", help="TorchScript checkpoints (default: the bench models)"
    )
    parser.add_argument("--records", type=int, help="PTB-XL records to score (default 256; 64 with --quick)")
    parser.add_argument("--quick", action="store_true", help="64 records, the Bi-LSTM only")
    args = parser.parse_args()
    run(quick=args.quick, records=args.records, checkpoints=args.checkpoints)


if __name__ == "__main__":
    main()
