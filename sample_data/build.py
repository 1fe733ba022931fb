"""Rebuild everything in `sample_data/` from PTB-XL and the PhysioNet/CinC Challenge 2021 records.

    python sample_data/build.py --ptbxl ../shared/data/ptbxl --cinc ../shared/data/cinc2021 [--out sample_data]

Produces
- `ptbxl_target.h5`: a real target task (PTB-XL `strat_fold == 10`, 100 Hz, 10 s, 12 leads, mV) in the
  project's HDF5 layout, with the five diagnostic superclasses and a few frequent SCP statements;
- `cinc_wfdb/`: twenty CinC 2021 records copied verbatim (header quirks included);
- `checkpoints/`: small real models (1-D ResNet and Bi-LSTM; ONNX and TorchScript) trained on data disjoint
  from both targets, each with its `melep` metadata embedded and two named outputs, `logits` (batch, Z) and
  `features` (batch, D, the linear head's input; metadata `scores_output` / `features_output`);
- `training_log.json`: per-epoch training loss and validation AUROC of every checkpoint.

Standalone on purpose (torch, numpy, scipy, h5py, wfdb, onnx, pandas through wfdb): it must not depend on
the tool it produces test data for. Deterministic: fixed seed, deterministic torch algorithms, fixed threads.
Progress goes to stderr. `reexport.py` adds the features output to checkpoints exported before it existed,
without retraining (same weights, same scores).
"""

from __future__ import annotations

import argparse
import ast
import json
import shutil
import sys
import time
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import h5py
import numpy as np
import onnx
import pandas as pd
import scipy.io
import scipy.signal
import scipy.stats
import torch
import wfdb
from torch import nn

SEED = 20240601
THREADS = 2
RATE = 100
SAMPLES = 1000
LEADS = ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")
SUPERCLASSES = ("NORM", "MI", "STTC", "HYP", "CD")
#: The two named outputs of every exported checkpoint (metadata `scores_output` / `features_output`): the logits
#: (batch, Z) and the penultimate features (batch, D), the input of the linear head.
SCORES_OUTPUT = "logits"
FEATURES_OUTPUT = "features"

TARGET_FOLD = 10
VALIDATION_FOLD = 9
TRAIN_FOLDS = tuple(range(1, 9))
#: The first TARGET_RECORDS records of fold 10 by ecg_id (all 328 would not fit the size budget).
TARGET_RECORDS = 300
#: Frequent SCP statements added to the target labels (a mix of diagnostic, rhythm and form statements).
TARGET_STATEMENTS = ("IMI", "LVH", "AFIB", "PVC")
MIN_TARGET_POSITIVES = 10
#: Signals are rounded to multiples of 2**-8 mV (3.9 microvolt steps, error <= 2 microvolts, finer than the
#: 5 microvolt resolution the AHA recommends); the zeroed low mantissa bits let gzip halve the file.
SIGNAL_QUANTUM_MV = 2.0**-8

#: CinC records copied into `cinc_wfdb/` (never used for training). Chosen for the real-world quirks:
#: CPSC A* (A2712 is 12 s long: the tool must crop), Georgia E* (record line `E00271.mat 12 500 5000`,
#: dates like 05-May-2020), JS20005 (`,,` in #Dx), JS20006 (251238007, a code in no mapping), and HR06003
#: (a PTB-XL patient in CinC format). The other HR* (PTB-XL records in CinC format, none in the PTB-XL data
#: the checkpoints were trained on; main() checks it) bring NSR to 10 positives, so that `melep rank` on
#: `cinc_wfdb/` has a label at the default --min-positives 10.
CINC_TARGET_RECORDS = (
    "A0689",
    "A2712",
    "E00271",
    "E01137",
    "E07506",
    "E07517",
    "E09657",
    "JS20005",
    "JS20006",
    "JS22627",
    "JS36330",
    "HR06003",
    "HR06000",
    "HR06001",
    "HR06002",
    "HR08883",
    "HR09008",
    "HR09739",
    "HR14287",
    "HR19293",
)
#: Scored-equivalent SNOMED CT pairs of the challenge, merged into the first code.
CINC_EQUIVALENT = {"59118001": "713427006", "63593006": "284470004", "17338001": "427172004", "164909002": "733534002"}
MIN_CINC_POSITIVES = 10
#: CinC abbreviation -> PTB-XL statement with the same meaning: the CinC model is also scored on PTB-XL fold 9.
CINC_TO_PTBXL = {"NSR": "SR", "SB": "SBRAD", "STach": "STACH", "AF": "AFIB", "PAC": "PAC", "PVC": "PVC"}

MIN_RHYTHM_POSITIVES = 25
MIN_FORM_POSITIVES = 40


def log(message: str) -> None:
    """Progress to stderr."""
    print(f"[build] {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------- data


@dataclass
class Dataset:
    """Signals (n, SAMPLES, 12) in mV, a label matrix (n, Z) and its label names."""

    signals: np.ndarray
    labels: np.ndarray
    label_names: tuple[str, ...]
    record_ids: list


def read_ptbxl(ptbxl: Path) -> tuple[pd.DataFrame, pd.DataFrame, dict[int, np.ndarray]]:
    """PTB-XL's tables, each record's SCP statements parsed, and every 100 Hz record (samples x 12, mV)."""
    database = pd.read_csv(ptbxl / "ptbxl_database.csv", index_col="ecg_id")
    statements = pd.read_csv(ptbxl / "scp_statements.csv", index_col=0)
    database["statements"] = database["scp_codes"].apply(lambda text: set(ast.literal_eval(text)))
    signals: dict[int, np.ndarray] = {}
    for count, (ecg_id, filename) in enumerate(database["filename_lr"].items(), start=1):
        values, fields = wfdb.rdsamp(str(ptbxl / filename))
        names = [name.upper() for name in fields["sig_name"]]
        if fields["fs"] != RATE or values.shape != (SAMPLES, 12) or names != [lead.upper() for lead in LEADS]:
            raise SystemExit(f"{filename}: expected {RATE} Hz, {SAMPLES} x 12 in the standard lead order")
        signals[int(ecg_id)] = values.astype(np.float32)
        if count % 500 == 0:
            log(f"PTB-XL: read {count}/{len(database)} records")
    return database, statements, signals


def statement_groups(statements: pd.DataFrame) -> dict[str, dict[str, str]]:
    """Maps statement -> label for the three source label sets and the superclasses."""
    diagnostic = statements[statements["diagnostic"] == 1]
    return {
        "superclass": {code: str(cls) for code, cls in diagnostic["diagnostic_class"].items()},
        "rhythm": {code: code for code in statements.index[statements["rhythm"] == 1]},
        "form": {code: code for code in statements.index[statements["form"] == 1]},
    }


def label_matrix(record_statements: pd.Series, mapping: dict[str, str], names: tuple[str, ...]) -> np.ndarray:
    """0/1 matrix (records x names): a record carries a label if any of its statements maps to it."""
    column = {name: j for j, name in enumerate(names)}
    matrix = np.zeros((len(record_statements), len(names)), dtype=np.uint8)
    for i, codes in enumerate(record_statements):
        for code in codes:
            label = mapping.get(code)
            if label in column:
                matrix[i, column[label]] = 1
    return matrix


def frequent(record_statements: pd.Series, mapping: dict[str, str], minimum: int) -> tuple[str, ...]:
    """Labels of `mapping` with at least `minimum` positive records, most frequent first."""
    counts = pd.Series([mapping[code] for codes in record_statements for code in codes if code in mapping])
    counts = counts.value_counts()
    counts = counts[counts >= minimum]
    return tuple(sorted(counts.index, key=lambda name: (-counts[name], name)))


def ptbxl_dataset(database: pd.DataFrame, signals: dict, folds, mapping, names) -> Dataset:
    """Records of the given folds with labels `names` (statements mapped through `mapping`)."""
    rows = database[database["strat_fold"].isin(folds)].sort_index()
    return Dataset(
        signals=np.stack([signals[int(i)] for i in rows.index]),
        labels=label_matrix(rows["statements"], mapping, names),
        label_names=tuple(names),
        record_ids=[int(i) for i in rows.index],
    )


@dataclass
class CincHeader:
    """The few header fields the build needs."""

    record: str
    rate: float
    samples: int
    leads: list[str]
    gains: np.ndarray
    baselines: np.ndarray
    codes: list[str]


def read_cinc_header(path: Path) -> CincHeader:
    """Parse a CinC 2021 `.hea` by hand.

    Hand-written because `wfdb.rdheader` rejects real challenge headers: Georgia record lines start with the
    file name (`E00271.mat 12 500 5000`), base dates are written `05-May-2020`, and `#Dx` may hold an empty
    code (`,,` in JS20005). Only the fields used here are read: rate, length, per-lead gain/baseline/name, #Dx.
    """
    lines = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    record_fields = lines[0].split()
    count, rate, samples = int(record_fields[1]), float(record_fields[2].split("/")[0]), int(record_fields[3])
    leads, gains, baselines = [], [], []
    for line in lines[1 : 1 + count]:
        fields = line.split()
        gain_text = fields[2].split("/")[0]  # "1000/mV" or "1000(0)/mV"
        if "(" in gain_text:
            gain_text, baseline_text = gain_text.rstrip(")").split("(")
            baseline = int(baseline_text)
        else:
            baseline = int(fields[4]) if len(fields) > 4 else 0  # WFDB: baseline defaults to ADC zero
        gains.append(float(gain_text) or 200.0)  # WFDB: gain 0 means the default 200 adu/mV
        baselines.append(baseline)
        leads.append(fields[-1])
    codes: list[str] = []
    for line in lines:
        if line.startswith("#Dx"):
            codes = [code.strip() for code in line.split(":", 1)[1].split(",") if code.strip()]
    return CincHeader(path.stem, rate, samples, leads, np.array(gains), np.array(baselines), codes)


def read_cinc_record(header: CincHeader, directory: Path) -> np.ndarray:
    """The record at RATE Hz, first SAMPLES samples (zero-padded if shorter), samples x 12, mV."""
    adu = scipy.io.loadmat(str(directory / f"{header.record}.mat"))["val"].astype(np.float64)
    if [lead.upper() for lead in header.leads] != [lead.upper() for lead in LEADS]:
        raise SystemExit(f"{header.record}: unexpected lead order {header.leads}")
    millivolts = ((adu - header.baselines[:, None]) / header.gains[:, None]).T
    ratio = Fraction(RATE) / Fraction(header.rate).limit_denominator(1000)
    if ratio != 1:
        millivolts = scipy.signal.resample_poly(millivolts, ratio.numerator, ratio.denominator, axis=0)
    fitted = np.zeros((SAMPLES, 12), dtype=np.float32)
    length = min(SAMPLES, millivolts.shape[0])
    fitted[:length] = millivolts[:length]
    return fitted


def cinc_dataset(cinc: Path) -> tuple[Dataset, dict[str, str]]:
    """Training records: all CinC records except the copied targets and the HR* (PTB-XL patients)."""
    mapping = pd.read_csv(cinc / "dx_mapping_challenge2021.csv", dtype={"snomed_code": str})
    abbreviation = dict(zip(mapping["snomed_code"], mapping["abbreviation"]))
    headers = [
        read_cinc_header(path)
        for path in sorted(cinc.glob("*.hea"))
        if path.stem not in CINC_TARGET_RECORDS and not path.stem.startswith("HR")
    ]
    record_codes = [{CINC_EQUIVALENT.get(code, code) for code in header.codes} for header in headers]
    counts = pd.Series([code for codes in record_codes for code in codes if code in abbreviation]).value_counts()
    counts = counts[counts >= MIN_CINC_POSITIVES]
    codes = sorted(counts.index, key=lambda code: (-counts[code], code))
    labels = np.array([[int(code in rec) for code in codes] for rec in record_codes], dtype=np.uint8)
    signals = np.stack([read_cinc_record(header, cinc) for header in headers])
    names = tuple(abbreviation[code] for code in codes)
    log(f"CinC: {len(headers)} training records, labels {dict(zip(names, labels.sum(0).tolist()))}")
    return Dataset(signals, labels, names, [h.record for h in headers]), dict(zip(names, codes))


# --------------------------------------------------------------------------------------------- target


def write_target(path: Path, database: pd.DataFrame, statements: pd.DataFrame, signals: dict) -> Dataset:
    """The PTB-XL fold-10 target in the FORMATS.md HDF5 layout."""
    groups = statement_groups(statements)
    rows = database[database["strat_fold"] == TARGET_FOLD].sort_index().iloc[:TARGET_RECORDS]
    superclass = label_matrix(rows["statements"], groups["superclass"], SUPERCLASSES)
    extra = label_matrix(rows["statements"], {code: code for code in TARGET_STATEMENTS}, TARGET_STATEMENTS)
    labels = np.concatenate([superclass, extra], axis=1)
    names = SUPERCLASSES + TARGET_STATEMENTS
    positives = labels.sum(axis=0)
    if positives.min() < MIN_TARGET_POSITIVES:
        raise SystemExit(f"target label with fewer than {MIN_TARGET_POSITIVES} positives: {positives}")
    data = np.stack([signals[int(i)] for i in rows.index]).astype(np.float64)
    data = (np.round(data / SIGNAL_QUANTUM_MV) * SIGNAL_QUANTUM_MV).astype(np.float32)
    strings = h5py.string_dtype()
    with h5py.File(path, "w") as file:
        file.attrs["sampling_rate"] = RATE
        file.attrs["leads"] = np.array(LEADS, dtype=strings)
        file.attrs["description"] = (
            f"PTB-XL (Wagner et al., Scientific Data 2020, CC BY 4.0): the first {len(rows)} records of "
            f"strat_fold {TARGET_FOLD} by ecg_id, 100 Hz, 10 s, 12 leads, mV (rounded to 2**-8 mV)."
        )
        dataset = file.create_dataset(
            "signals", data=data, chunks=(16, SAMPLES, 12), compression="gzip", compression_opts=9, shuffle=True
        )
        dataset.attrs["sampling_rate"] = RATE
        dataset.attrs["units"] = "mV"
        label_set = file.create_dataset("labels", data=labels, compression="gzip", shuffle=True)
        label_set.attrs["label_names"] = np.array(names, dtype=strings)
        file.create_dataset("record_ids", data=np.array(rows.index, dtype=np.int64))
    log(
        f"target: {path} ({path.stat().st_size / 1e6:.2f} MB), {len(rows)} records, "
        f"positives {dict(zip(names, positives.tolist()))}"
    )
    return Dataset(data, labels, names, [int(i) for i in rows.index])


def copy_cinc_records(cinc: Path, out: Path) -> None:
    """Copy the chosen CinC records byte for byte (headers keep their quirks)."""
    out.mkdir(parents=True, exist_ok=True)
    for record in CINC_TARGET_RECORDS:
        for suffix in (".hea", ".mat"):
            shutil.copyfile(cinc / f"{record}{suffix}", out / f"{record}{suffix}")
    log(f"copied {len(CINC_TARGET_RECORDS)} CinC records to {out}")


# --------------------------------------------------------------------------------------------- models


class ResidualBlock(nn.Module):
    """Two Conv1d/BatchNorm layers with a (projected when needed) identity shortcut."""

    def __init__(self, channels_in: int, channels_out: int, stride: int, kernel: int = 5) -> None:
        super().__init__()
        pad = kernel // 2
        self.conv1 = nn.Conv1d(channels_in, channels_out, kernel, stride=stride, padding=pad, bias=False)
        self.bn1 = nn.BatchNorm1d(channels_out)
        self.conv2 = nn.Conv1d(channels_out, channels_out, kernel, padding=pad, bias=False)
        self.bn2 = nn.BatchNorm1d(channels_out)
        self.relu = nn.ReLU()
        self.shortcut = nn.Identity()
        if stride != 1 or channels_in != channels_out:
            self.shortcut = nn.Sequential(
                nn.Conv1d(channels_in, channels_out, 1, stride=stride, bias=False), nn.BatchNorm1d(channels_out)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return self.relu(y + self.shortcut(x))


class TwoOutputs:
    """Mixin: `forward` gives the logits while training; the exported module gives both named outputs.

    `features(x)` is the penultimate layer (the input of the linear `head`). With `with_features` set (`export`
    sets it while tracing), `forward` returns {SCORES_OUTPUT: logits, FEATURES_OUTPUT: features}. The flag is a
    plain attribute, not a parameter: the state_dict (names and values) is the same either way.
    """

    with_features = False

    def features(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor):
        features = self.features(x)
        logits = self.head(features)
        if self.with_features:
            return {SCORES_OUTPUT: logits, FEATURES_OUTPUT: features}
        return logits


class ResNet1d(TwoOutputs, nn.Module):
    """Small 1-D ResNet: strided stem, three residual blocks, global average pooling, linear head.

    Features: the 2 x width channels after global average pooling (32).
    """

    def __init__(self, outputs: int, leads: int = 12, width: int = 16) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv1d(leads, width, 15, stride=4, padding=7, bias=False),
            nn.BatchNorm1d(width),
            nn.ReLU(),
            nn.MaxPool1d(3, stride=2, padding=1),
        )
        self.blocks = nn.Sequential(
            ResidualBlock(width, width, 1), ResidualBlock(width, 2 * width, 2), ResidualBlock(2 * width, 2 * width, 2)
        )
        self.head = nn.Linear(2 * width, outputs)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.stem(x)).mean(dim=2)


class BiLSTM(TwoOutputs, nn.Module):
    """Strided Conv1d stem (1000 -> 50 steps), bidirectional LSTM, mean+max pooled outputs, linear head.

    Features: mean and max over time of both directions' LSTM outputs, concatenated (4 x hidden = 256).
    """

    def __init__(self, outputs: int, leads: int = 12, channels: int = 32, hidden: int = 64) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv1d(leads, channels, 10, stride=5, padding=3),
            nn.BatchNorm1d(channels),
            nn.ReLU(),
            nn.Conv1d(channels, channels, 5, stride=4, padding=2),
            nn.BatchNorm1d(channels),
            nn.ReLU(),
        )
        self.lstm = nn.LSTM(channels, hidden, batch_first=True, bidirectional=True)
        self.head = nn.Linear(4 * hidden, outputs)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        sequence, _ = self.lstm(self.stem(x).transpose(1, 2))
        return torch.cat([sequence.mean(dim=1), sequence.amax(dim=1)], dim=1)


def normalize(signals: np.ndarray, method: str) -> np.ndarray:
    """Per record and lead along time, as the tool applies `normalization` before the forward pass.

    Input and output (n, leads, time). minmax maps to [-1, 1]; a flat lead becomes 0 under both methods.
    """
    x = signals.astype(np.float64)
    if method == "minmax":
        low, high = x.min(axis=2, keepdims=True), x.max(axis=2, keepdims=True)
        span = high - low
        return np.where(span > 0, 2 * (x - low) / np.where(span > 0, span, 1) - 1, 0).astype(np.float32)
    if method == "zscore":
        mean, std = x.mean(axis=2, keepdims=True), x.std(axis=2, keepdims=True)
        return np.where(std > 0, (x - mean) / np.where(std > 0, std, 1), 0).astype(np.float32)
    return x.astype(np.float32)


def macro_auroc(labels: np.ndarray, scores: np.ndarray) -> tuple[float, list[float | None]]:
    """Mean AUROC over labels with both classes present (Mann-Whitney U via ranks; sklearn is no dependency)."""
    per_label: list[float | None] = []
    for j in range(labels.shape[1]):
        positives = labels[:, j] == 1
        n_pos, n_neg = int(positives.sum()), int((~positives).sum())
        if n_pos == 0 or n_neg == 0:
            per_label.append(None)
            continue
        ranks = scipy.stats.rankdata(scores[:, j])
        per_label.append(float((ranks[positives].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)))
    valid = [value for value in per_label if value is not None]
    return float(np.mean(valid)), per_label


def predict(model: nn.Module, inputs: np.ndarray, batch: int = 256) -> np.ndarray:
    """Logits of `inputs` (n, 12, SAMPLES) in eval mode."""
    model.eval()
    with torch.no_grad():
        return np.concatenate(
            [model(torch.from_numpy(inputs[i : i + batch])).numpy() for i in range(0, len(inputs), batch)]
        )


def train(
    model: nn.Module,
    train_set: Dataset,
    normalization: str,
    epochs: int,
    validation=None,
    lr: float = 2e-3,
    batch: int = 128,
):
    """Adam + BCEWithLogitsLoss on NCT inputs; returns the per-epoch log (loss, validation macro AUROC)."""
    generator = np.random.default_rng(SEED)
    inputs = normalize(train_set.signals.transpose(0, 2, 1), normalization)
    targets = train_set.labels.astype(np.float32)
    val_inputs = None
    if validation is not None:
        val_inputs = normalize(validation[0].transpose(0, 2, 1), normalization)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=1e-4)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
    loss_function = nn.BCEWithLogitsLoss()
    history = []
    for epoch in range(1, epochs + 1):
        start = time.perf_counter()
        model.train()
        order = generator.permutation(len(inputs))
        total = 0.0
        for i in range(0, len(order), batch):
            index = order[i : i + batch]
            if len(index) < 2:  # BatchNorm needs more than one record
                continue
            x = torch.from_numpy(inputs[index])
            scale = torch.from_numpy(generator.uniform(0.8, 1.2, size=(len(index), 1, 1)).astype(np.float32))
            if normalization == "none":  # amplitude augmentation only where amplitudes are not re-normalised
                x = x * scale
            optimizer.zero_grad()
            loss = loss_function(model(x), torch.from_numpy(targets[index]))
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * len(index)
        scheduler.step()
        entry = {"epoch": epoch, "train_loss": round(total / len(order), 4)}
        if val_inputs is not None:
            macro, _ = macro_auroc(validation[1], predict(model, val_inputs)[:, validation[2]])
            entry["val_macro_auroc"] = round(macro, 4)
        history.append(entry)
        log(f"  epoch {epoch}/{epochs}: {entry} ({time.perf_counter() - start:.1f} s)")
    return history


# --------------------------------------------------------------------------------------------- export


def metadata(spec: dict, labels: tuple[str, ...], prevalence: np.ndarray) -> str:
    """The FORMATS.md metadata JSON for one checkpoint."""
    return json.dumps(
        {
            "name": spec["name"],
            "description": spec["description"],
            "labels": list(labels),
            "sampling_rate": RATE,
            "samples": SAMPLES,
            "leads": list(LEADS),
            "layout": "NCT",
            "output": "logits",
            "normalization": spec["normalization"],
            "dtype": "float32",
            "source_prevalence": [round(float(p), 4) for p in prevalence],
            "scores_output": SCORES_OUTPUT,
            "features_output": FEATURES_OUTPUT,
        },
        indent=None,
    )


def export(model: TwoOutputs, path: Path, meta_json: str) -> None:
    """ONNX (legacy exporter, dynamic batch, metadata_props `melep`) or TorchScript (extra file `melep.json`).

    Both formats get two named outputs, SCORES_OUTPUT (batch, Z) then FEATURES_OUTPUT (batch, D): ONNX graph
    outputs of those names, a TorchScript result dict with those keys.
    """
    model.eval()
    example = torch.zeros(2, 12, SAMPLES)
    model.with_features = True
    try:
        if path.suffix == ".onnx":
            names = [SCORES_OUTPUT, FEATURES_OUTPUT]
            torch.onnx.export(
                model,
                (example,),
                str(path),
                input_names=["ecg"],
                output_names=names,
                dynamic_axes={"ecg": {0: "batch"}, **{name: {0: "batch"} for name in names}},
                opset_version=17,
                dynamo=False,
            )
            proto = onnx.load(str(path))
            del proto.metadata_props[:]
            entry = proto.metadata_props.add()
            entry.key, entry.value = "melep", meta_json
            onnx.checker.check_model(proto)
            onnx.save(proto, str(path))
        else:
            scripted = torch.jit.trace(model, example, strict=False)  # strict=False: a dict result
            torch.jit.save(scripted, str(path), _extra_files={"melep.json": meta_json})
    finally:
        model.with_features = False
    log(f"  saved {path} ({path.stat().st_size / 1e3:.0f} kB)")


# --------------------------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ptbxl", type=Path, required=True, help="PTB-XL directory (ptbxl_database.csv, records100/)")
    parser.add_argument("--cinc", type=Path, required=True, help="CinC 2021 directory (.hea/.mat, mapping CSV)")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent, help="output directory")
    args = parser.parse_args(argv)

    torch.manual_seed(SEED)
    np.random.seed(SEED)
    torch.set_num_threads(THREADS)
    torch.use_deterministic_algorithms(True)
    started = time.perf_counter()
    out: Path = args.out
    checkpoints = out / "checkpoints"
    checkpoints.mkdir(parents=True, exist_ok=True)

    database, statements, signals = read_ptbxl(args.ptbxl)
    write_target(out / "ptbxl_target.h5", database, statements, signals)
    copy_cinc_records(args.cinc, out / "cinc_wfdb")
    # HR* records are PTB-XL records in CinC format: none of the copied ones may be a PTB-XL training record.
    copied = {int(record[2:]) for record in CINC_TARGET_RECORDS if record.startswith("HR")}
    trained = copied & set(database[database["strat_fold"].isin(TRAIN_FOLDS)].index)
    assert not trained, f"CinC target records that are PTB-XL training records: {sorted(trained)}"

    groups = statement_groups(statements)
    train_rows = database[database["strat_fold"].isin(TRAIN_FOLDS)]["statements"]
    label_sets = {
        "superclass": SUPERCLASSES,
        "rhythm": frequent(train_rows, groups["rhythm"], MIN_RHYTHM_POSITIVES),
        "form": frequent(train_rows, groups["form"], MIN_FORM_POSITIVES),
    }
    cinc_train, cinc_codes = cinc_dataset(args.cinc)
    # Fold 9 labelled with the PTB-XL statements that mean the same as the CinC labels (where one exists).
    cinc_mapped = [name for name in cinc_train.label_names if name in CINC_TO_PTBXL]
    cinc_validation_mapping = {CINC_TO_PTBXL[name]: name for name in cinc_mapped}

    source_folds = f"PTB-XL strat_fold {TRAIN_FOLDS[0]}-{TRAIN_FOLDS[-1]}"
    specs = [
        dict(file="ptbxl_superclass_resnet1d.onnx", arch="resnet", labels="superclass", normalization="minmax"),
        dict(file="ptbxl_rhythm_bilstm.pt", arch="bilstm", labels="rhythm", normalization="zscore"),
        dict(file="ptbxl_form_resnet1d.pt", arch="resnet", labels="form", normalization="none"),
        dict(file="cinc2021_snomed_bilstm.onnx", arch="bilstm", labels="cinc", normalization="zscore", batch=16),
        dict(file="ptbxl_superclass_bilstm.ts", arch="bilstm", labels="superclass", normalization="none"),
    ]
    architecture_text = {
        "resnet": "1-D ResNet (Conv1d stem, 3 residual blocks of Conv1d/BatchNorm/ReLU, global average pooling, "
        "linear head)",
        "bilstm": "Bi-LSTM (strided Conv1d stem 1000 -> 50 steps, bidirectional LSTM hidden 64, mean+max pooling, "
        "linear head)",
    }
    training_log = {"seed": SEED, "threads": THREADS, "checkpoints": {}}
    for spec in specs:
        torch.manual_seed(SEED)
        if spec["labels"] == "cinc":
            train_set = cinc_train
            val_rows = database[database["strat_fold"] == VALIDATION_FOLD].sort_index()
            val_names = tuple(cinc_validation_mapping)
            val_labels = label_matrix(val_rows["statements"], {c: c for c in val_names}, val_names)
            val_columns = [cinc_train.label_names.index(cinc_validation_mapping[c]) for c in val_names]
            data_text = (
                f"PhysioNet/CinC Challenge 2021: {len(train_set.record_ids)} CPSC/Georgia/Chapman-Ningbo records "
                "(500 Hz resampled to 100 Hz, first 10 s; no HR*/PTB-XL records, none of sample_data/cinc_wfdb), "
                f"SNOMED CT codes with >= {MIN_CINC_POSITIVES} positives"
            )
            spec["name"] = "CinC 2021 SNOMED Bi-LSTM"
        else:
            train_set = ptbxl_dataset(
                database, signals, TRAIN_FOLDS, groups[spec["labels"]], label_sets[spec["labels"]]
            )
            val_rows = database[database["strat_fold"] == VALIDATION_FOLD].sort_index()
            val_labels = label_matrix(val_rows["statements"], groups[spec["labels"]], train_set.label_names)
            val_columns = list(range(len(train_set.label_names)))
            data_text = f"{source_folds} ({len(train_set.record_ids)} records, 100 Hz), {spec['labels']} statements"
            arch_name = "ResNet-1d" if spec["arch"] == "resnet" else "Bi-LSTM"
            spec["name"] = f"PTB-XL {spec['labels']} {arch_name}"
        val_signals = np.stack([signals[int(i)] for i in val_rows.index])
        outputs = len(train_set.label_names)
        model = ResNet1d(outputs) if spec["arch"] == "resnet" else BiLSTM(outputs)
        parameters = sum(p.numel() for p in model.parameters())
        log(f"training {spec['file']}: {spec['name']}, {parameters} parameters, labels {train_set.label_names}")
        spec.setdefault("epochs", 15 if spec["labels"] != "cinc" else 30)
        spec.setdefault("batch", 64)
        history = train(
            model,
            train_set,
            spec["normalization"],
            spec["epochs"],
            (val_signals, val_labels, val_columns),
            batch=spec["batch"],
        )
        val_inputs = normalize(val_signals.transpose(0, 2, 1), spec["normalization"])
        macro, per_label = macro_auroc(val_labels, predict(model, val_inputs)[:, val_columns])
        val_names = [train_set.label_names[c] for c in val_columns]
        prevalence = train_set.labels.mean(axis=0)
        spec["description"] = (
            f"{architecture_text[spec['arch']]}, {parameters} parameters; trained {spec['epochs']} epochs "
            f"(Adam, batch {spec['batch']}, BCEWithLogitsLoss, {spec['normalization']} inputs) on {data_text}. "
            f"Macro AUROC on PTB-XL fold {VALIDATION_FOLD}: {macro:.3f}"
            + (f" (labels {', '.join(val_names)} via their PTB-XL equivalents)." if spec["labels"] == "cinc" else ".")
        )
        meta_json = metadata(spec, train_set.label_names, prevalence)
        export(model, checkpoints / spec["file"], meta_json)
        training_log["checkpoints"][spec["file"]] = {
            "name": spec["name"],
            "architecture": spec["arch"],
            "parameters": parameters,
            "labels": list(train_set.label_names),
            **({"snomed_codes": [cinc_codes[n] for n in train_set.label_names]} if spec["labels"] == "cinc" else {}),
            "normalization": spec["normalization"],
            "training_records": len(train_set.record_ids),
            "batch": spec["batch"],
            "source_prevalence": [round(float(p), 4) for p in prevalence],
            "epochs": history,
            "validation": {
                "data": f"PTB-XL strat_fold {VALIDATION_FOLD} ({len(val_rows)} records)",
                "macro_auroc": round(macro, 4),
                "per_label_auroc": {n: (None if a is None else round(a, 4)) for n, a in zip(val_names, per_label)},
            },
        }
        if spec["labels"] == "cinc":
            training_log["checkpoints"][spec["file"]]["training_record_ids"] = train_set.record_ids
    (out / "training_log.json").write_text(json.dumps(training_log, indent=1) + "\n")
    log(f"done in {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
