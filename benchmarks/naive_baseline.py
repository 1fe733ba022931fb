"""The naive way to get MELEP scores, as the paper's authors describe their pipeline: the baseline
that `melep rank` is compared against.

Per checkpoint: a torch DataLoader (batch size 128) over a Dataset that reads each WFDB record
when asked, eager PyTorch under torch.no_grad to get the outputs, then MELEP with a Python loop
over every (target label, source label) pair, each pair a plain LEEP computation in numpy.
Nothing is shared between checkpoints: each one decodes the records again.

`rank-vs-naive` (bench_rank.py) times it against `melep rank` and checks that both give the same MELEP;
`metric` (bench_metric.py) times `naive_melep` against `melep_cli.melep` on the same outputs.
"""

from __future__ import annotations

import ast
import csv
from pathlib import Path
from typing import Any

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
