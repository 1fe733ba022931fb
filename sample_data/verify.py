"""Check what `build.py` produced: the target's layout, every checkpoint's metadata and outputs, their MELEP.

    PYTHONPATH=. python sample_data/verify.py [--out sample_data]

Loads each ONNX file with onnxruntime and each TorchScript file with torch.jit.load, reads the embedded
metadata back, runs the target records through it (normalised as the metadata says), checks both named
outputs (`scores_output` (n, Z) and `features_output` (n, D), the head's input: a linear map of the features
with an intercept gives the scores) and prints MELEP (`melep_cli.metric.melep`, logits) on all target labels
and on the five superclasses alone. Exits non-zero when a check fails.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import h5py
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from build import FEATURES_OUTPUT, LEADS, SCORES_OUTPUT, SUPERCLASSES, normalize, read_cinc_header, read_cinc_record
from reexport import load_outputs, read_metadata

from melep_cli.metric import melep

REQUIRED_KEYS = {
    "labels",
    "sampling_rate",
    "samples",
    "leads",
    "layout",
    "output",
    "normalization",
    "dtype",
    "scores_output",
    "features_output",
}


def read_target(path: Path) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Signals (n, T, L), labels (n, Y) and label names, after checking the FORMATS.md layout."""
    with h5py.File(path, "r") as file:
        signals, labels = file["signals"], file["labels"]
        names = [str(name) for name in labels.attrs["label_names"]]
        leads = [str(name) for name in file.attrs["leads"]]
        assert signals.ndim == 3 and signals.shape[1:] == (1000, 12), signals.shape
        assert file.attrs["sampling_rate"] == 100 and leads == list(LEADS), (file.attrs["sampling_rate"], leads)
        assert labels.dtype == np.uint8 and labels.shape == (signals.shape[0], len(names))
        assert file["record_ids"].shape == (signals.shape[0],)
        assert names[:5] == list(SUPERCLASSES)
        data, label_matrix = signals[:].astype(np.float32), labels[:]
    assert np.isfinite(data).all() and set(np.unique(label_matrix)) <= {0, 1}
    print(f"{path.name}: signals {data.shape} {data.dtype}, labels {label_matrix.shape}, names {names}")
    print(f"  positives {dict(zip(names, label_matrix.sum(0).tolist()))}")
    return data, label_matrix, names


def load(path: Path):
    """(metadata dict, function mapping an NCT float32 batch to (scores, features)), the outputs it names."""
    meta = json.loads(read_metadata(path))
    outputs = load_outputs(path)
    assert (meta["scores_output"], meta["features_output"]) == (SCORES_OUTPUT, FEATURES_OUTPUT), meta
    assert list(outputs(np.zeros((1, 12, 1000), np.float32))) == [SCORES_OUTPUT, FEATURES_OUTPUT], path.name

    def forward(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        result = outputs(x)
        return result[meta["scores_output"]], result[meta["features_output"]]

    return meta, forward


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent)
    args = parser.parse_args()
    torch.set_num_threads(2)
    signals, labels, names = read_target(args.out / "ptbxl_target.h5")
    cinc_dir = args.out / "cinc_wfdb"
    cinc = np.stack([read_cinc_record(read_cinc_header(h), cinc_dir) for h in sorted(cinc_dir.glob("*.hea"))])
    print(f"cinc_wfdb: {len(cinc)} records read, {cinc.shape}")
    scores = {}
    for path in sorted((args.out / "checkpoints").iterdir()):
        meta, forward = load(path)
        assert meta.keys() >= REQUIRED_KEYS, meta.keys()
        inputs = normalize(signals.transpose(0, 2, 1), meta["normalization"])
        batches = [forward(inputs[i : i + 64]) for i in range(0, len(inputs), 64)]
        outputs = np.concatenate([scores for scores, _ in batches])
        features = np.concatenate([feature for _, feature in batches])
        assert outputs.shape == (len(signals), len(meta["labels"])) and np.isfinite(outputs).all(), outputs.shape
        assert features.ndim == 2 and len(features) == len(signals) and np.isfinite(features).all(), features.shape
        for size in (1, 7):  # dynamic batch: a single record and an odd batch give the same numbers
            head_scores, feature = forward(inputs[:size])
            assert np.allclose(head_scores, outputs[:size], atol=1e-4), (path.name, size)
            assert np.allclose(feature, features[:size], atol=1e-4), (path.name, size)
        cinc_outputs, cinc_features = forward(normalize(cinc.transpose(0, 2, 1), meta["normalization"]))
        assert cinc_outputs.shape == (len(cinc), len(meta["labels"])) and np.isfinite(cinc_outputs).all()
        assert cinc_features.shape == (len(cinc), features.shape[1]) and np.isfinite(cinc_features).all()
        # The features are the linear head's input: least squares on [features, 1] over the target records gives
        # a map that reproduces the scores of the CinC records too (held out: with D = 256 and 300 records a
        # fit alone would prove little).
        design = np.hstack([features.astype(np.float64), np.ones((len(features), 1))])
        head = np.linalg.lstsq(design, outputs.astype(np.float64), rcond=None)[0]
        held_out = np.hstack([cinc_features.astype(np.float64), np.ones((len(cinc_features), 1))]) @ head
        assert np.abs(held_out - cinc_outputs).max() < 1e-3, (path.name, np.abs(held_out - cinc_outputs).max())
        overall = melep(outputs, labels, activation="logits", label_names=names, source_names=meta["labels"])
        superclass = melep(outputs, labels[:, :5], activation="logits")
        weighted = melep(outputs, labels, activation="logits", source_weights=meta["source_prevalence"])
        scores[path.name] = (overall.score, superclass.score, weighted.score)
        print(
            f"{path.name}: {meta['name']!r}, {len(meta['labels'])} labels, normalization {meta['normalization']}, "
            f"outputs {meta['scores_output']} (n, {outputs.shape[1]}) and {meta['features_output']} "
            f"(n, {features.shape[1]})"
        )
        print(
            f"  MELEP all {len(names)} labels {overall.score:.4f}, superclasses {superclass.score:.4f}, "
            f"source-weighted {weighted.score:.4f}"
        )
        print("  per label " + ", ".join(f"{n} {v:.4f}" for n, v in zip(names, overall.per_label)))
    best = min(scores, key=lambda name: scores[name][1])
    print(f"best on the superclass labels: {best}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
