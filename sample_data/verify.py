"""Check what `build.py` produced: the target's layout, every checkpoint's metadata and outputs, their MELEP.

    PYTHONPATH=. python sample_data/verify.py [--out sample_data]

Loads each ONNX file with onnxruntime and each TorchScript file with torch.jit.load, reads the embedded
metadata back, runs the target records through it (normalised as the metadata says) and prints MELEP
(`melep_cli.metric.melep`, logits) on all target labels and on the five superclasses alone.
Exits non-zero when a check fails.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import h5py
import numpy as np
import onnx
import onnxruntime
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from build import LEADS, SUPERCLASSES, normalize, read_cinc_header, read_cinc_record

from melep_cli.metric import melep

REQUIRED_KEYS = {"labels", "sampling_rate", "samples", "leads", "layout", "output", "normalization", "dtype"}


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
    """(metadata dict, function mapping an NCT float32 batch to outputs)."""
    if path.suffix == ".onnx":
        props = {entry.key: entry.value for entry in onnx.load(str(path)).metadata_props}
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        return json.loads(props["melep"]), lambda x: session.run(None, {name: x})[0]
    extra = {"melep.json": ""}
    module = torch.jit.load(str(path), _extra_files=extra)
    module.eval()

    def forward(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return module(torch.from_numpy(x)).numpy()

    return json.loads(extra["melep.json"]), forward


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
        outputs = np.concatenate([forward(inputs[i : i + 64]) for i in range(0, len(inputs), 64)])
        assert outputs.shape == (len(signals), len(meta["labels"])) and np.isfinite(outputs).all(), outputs.shape
        for size in (1, 7):  # dynamic batch: a single record and an odd batch give the same numbers
            assert np.allclose(forward(inputs[:size]), outputs[:size], atol=1e-4), (path.name, size)
        cinc_outputs = forward(normalize(cinc.transpose(0, 2, 1), meta["normalization"]))
        assert cinc_outputs.shape == (len(cinc), len(meta["labels"])) and np.isfinite(cinc_outputs).all()
        overall = melep(outputs, labels, activation="logits", label_names=names, source_names=meta["labels"])
        superclass = melep(outputs, labels[:, :5], activation="logits")
        weighted = melep(outputs, labels, activation="logits", source_weights=meta["source_prevalence"])
        scores[path.name] = (overall.score, superclass.score, weighted.score)
        print(f"{path.name}: {meta['name']!r}, {len(meta['labels'])} labels, normalization {meta['normalization']}")
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
