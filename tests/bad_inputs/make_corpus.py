"""Generate the corpus of hostile inputs: broken targets, records and checkpoints, each with its documented answer.

The corpus is generated, never committed: targets are cut from the real sample data (PTB-XL records in
`sample_data/ptbxl_target.h5`, CinC 2021 records in `sample_data/cinc_wfdb/`), checkpoints are tiny
networks exported here. Synthetic bytes appear only where no real file can give the case (garbage).

Documented answers (`Case.kind`), checked by tests/test_bad_inputs.py through `melep rank`:

- "target": exit 2, one stderr line `melep: error: ...` naming the file and the problem; an
  `--output` file is not created.
- "checkpoint": exit 1; the checkpoint gets an error row naming the file and the problem, the good
  checkpoint beside it is ranked; the output file holds both rows.
- "record": a single record skipped by design (unreadable, NaN/inf, flat, header unreadable): exit 0
  and a warning naming the record and the reason; with `--strict`, exit 2 and one error line.
- "accepted": not an error at all (e.g. non-UTF-8 bytes in free-text header comments): exit 0.

Run `python tests/bad_inputs/make_corpus.py FOLDER` to write the corpus for manual runs; it prints
one `melep rank` command per case.
"""

from __future__ import annotations

import argparse
import json
import pickle
import shlex
import shutil
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import scipy.io
import torch

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "sample_data"
SAMPLE_TARGET = SAMPLE / "ptbxl_target.h5"
SAMPLE_WFDB = SAMPLE / "cinc_wfdb"
#: The good checkpoint ranked beside every bad one, and used to rank every bad target.
GOOD_CHECKPOINT = SAMPLE / "checkpoints" / "ptbxl_superclass_resnet1d.onnx"
#: Records of the sample PTB-XL target that the HDF5 cases start from (real signals and labels).
TARGET_RECORDS = 60
#: Options every WFDB case takes: the 20 sample CinC records have one label with 10 positives (NSR), and a
#: case that breaks one of its records must still have labels to rank on.
WFDB_OPTIONS = ("--min-positives", "2")


@dataclass(frozen=True)
class Case:
    """One hostile input and the answer melep must give for it.

    kind: "target" | "checkpoint" | "record" | "accepted" (see the module docstring).
    path: the bad target (target, record, accepted) or the bad checkpoint (checkpoint).
    names: the file (or record id) the message must name.
    reason: a fragment of the reason the message must give (case-insensitive).
    options: extra `melep rank` options the case needs.
    """

    name: str
    kind: str
    path: Path
    names: str
    reason: str
    options: tuple[str, ...] = ()


CASE_NAMES = (
    # HDF5 targets
    "hdf5_truncated",
    "hdf5_not_hdf5",
    "hdf5_signals_wrong_rank",
    "hdf5_signals_not_numbers",
    "hdf5_labels_not_binary",
    "hdf5_label_names_count",
    "hdf5_no_sampling_rate",
    "hdf5_zero_records",
    "hdf5_every_label_degenerate",
    "hdf5_requested_label_degenerate",
    "hdf5_nan_and_inf_records",
    "hdf5_flat_record",
    "hdf5_every_record_nan",
    "labels_csv_ids_match_nothing",
    "labels_csv_not_utf8",
    # WFDB / CinC directories
    "wfdb_header_garbage",
    "wfdb_every_header_garbage",
    "wfdb_header_numbers_garbage",
    "wfdb_non_utf8_comments",
    "wfdb_missing_mat",
    "wfdb_missing_dat",
    "wfdb_mat_shorter_than_header",
    "wfdb_mat_truncated",
    "wfdb_dat_shorter_than_header",
    "wfdb_labels_csv_ids_match_nothing",
    "wfdb_invalid_samples",
    "wfdb_multi_segment_missing_segment",
    # checkpoints
    "checkpoint_not_a_model",
    "checkpoint_empty",
    "checkpoint_truncated_onnx",
    "checkpoint_pickled_module",
    "checkpoint_state_dict",
    "checkpoint_pickle_in_torchscript_zip",
    "checkpoint_eight_leads",
    "checkpoint_output_width",
    "checkpoint_nan_outputs",
    "checkpoint_metadata_invalid_json",
    "checkpoint_metadata_wrong_type",
    "checkpoint_metadata_unknown_layout",
)


class CreatesAFile:
    """Unpickling this opens (creates) `marker` for writing: the proof that a pickle was loaded."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def malicious_pickle(marker: Path, protocol: int = pickle.DEFAULT_PROTOCOL) -> bytes:
    """Pickle bytes whose loading creates `marker` (no class of ours needed to unpickle it)."""
    return pickle.dumps(CreatesAFile(marker), protocol=protocol)


# ----- targets -----------------------------------------------------------------------------------
def _sample_records(count: int = TARGET_RECORDS) -> dict:
    """The first `count` real records of the sample PTB-XL target, with their labels and attributes."""
    with h5py.File(SAMPLE_TARGET, "r") as handle:
        return {
            "signals": handle["signals"][:count],
            "labels": handle["labels"][:count],
            "label_names": [str(name) for name in handle["labels"].attrs["label_names"]],
            "record_ids": handle["record_ids"][:count],
            "sampling_rate": float(handle.attrs["sampling_rate"]),
            "leads": [str(lead) for lead in handle.attrs["leads"]],
        }


def write_hdf5(
    path: Path,
    signals: np.ndarray,
    labels: np.ndarray | None,
    label_names: list[str] | None,
    *,
    sampling_rate: float | None = 100.0,
    leads: list[str] | None = None,
    record_ids: np.ndarray | None = None,
) -> Path:
    """A target in the FORMATS.md layout; None leaves a part out."""
    with h5py.File(path, "w") as handle:
        handle.create_dataset("signals", data=signals)
        if sampling_rate is not None:
            handle.attrs["sampling_rate"] = sampling_rate
        if leads is not None:
            handle.attrs["leads"] = leads
        if labels is not None:
            dataset = handle.create_dataset("labels", data=labels)
            if label_names is not None:
                dataset.attrs["label_names"] = label_names
        if record_ids is not None:
            handle.create_dataset("record_ids", data=record_ids)
    return path


def _hdf5_cases(folder: Path) -> list[Case]:
    folder.mkdir(parents=True, exist_ok=True)
    real = _sample_records()
    signals, labels, names = real["signals"], real["labels"], real["label_names"]
    common = {"sampling_rate": real["sampling_rate"], "leads": real["leads"], "record_ids": real["record_ids"]}
    good = write_hdf5(folder / "good_target.h5", signals, labels, names, **common)
    ids = [str(value) for value in real["record_ids"]]
    cases: list[Case] = []

    truncated = folder / "truncated.h5"
    data = good.read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    cases.append(Case("hdf5_truncated", "target", truncated, "truncated.h5", "cannot open as HDF5"))

    not_hdf5 = folder / "not_hdf5.h5"
    not_hdf5.write_bytes(b"record_id,NORM\n1,0\n")  # a CSV saved under an HDF5 name
    cases.append(Case("hdf5_not_hdf5", "target", not_hdf5, "not_hdf5.h5", "cannot open as HDF5"))

    path = write_hdf5(folder / "wrong_rank.h5", signals[:, :, 0], labels, names, **common)
    cases.append(Case("hdf5_signals_wrong_rank", "target", path, "wrong_rank.h5", "expected (n, T, L)"))

    text_signals = np.array([[["x"] * 12] * 10] * len(labels), dtype="S1")
    path = write_hdf5(folder / "text_signals.h5", text_signals, labels, names, **common)
    cases.append(Case("hdf5_signals_not_numbers", "target", path, "text_signals.h5", "not numbers"))

    not_binary = labels.astype(np.int64)
    not_binary[3, 0] = 2
    path = write_hdf5(folder / "labels_not_binary.h5", signals, not_binary, names, **common)
    cases.append(Case("hdf5_labels_not_binary", "target", path, "labels_not_binary.h5", "other than 0 and 1"))

    path = write_hdf5(folder / "label_names_count.h5", signals, labels, names[:-1], **common)
    cases.append(
        Case("hdf5_label_names_count", "target", path, "label_names_count.h5", f"{len(names) - 1} label_names")
    )

    path = write_hdf5(folder / "no_rate.h5", signals, labels, names, **{**common, "sampling_rate": None})
    cases.append(Case("hdf5_no_sampling_rate", "target", path, "no_rate.h5", "no sampling_rate"))

    path = write_hdf5(
        folder / "zero_records.h5",
        signals[:0],
        labels[:0],
        names,
        **{**common, "record_ids": real["record_ids"][:0]},
    )
    cases.append(Case("hdf5_zero_records", "target", path, "zero_records.h5", "no records"))

    path = write_hdf5(folder / "degenerate.h5", signals, np.zeros_like(labels), names, **common)
    cases.append(Case("hdf5_every_label_degenerate", "target", path, "degenerate.h5", "no label has at least"))
    # Asked for by name, the label exists but has no positive among the records: no score to give.
    cases.append(
        Case(
            "hdf5_requested_label_degenerate",
            "target",
            path,
            "degenerate.h5",
            "every target label is all 0 or all 1",
            ("--labels", "NORM,MI"),
        )
    )

    nan_inf = signals.copy()
    nan_inf[4, 100, 2] = np.nan
    nan_inf[9, :, 5] = np.inf
    path = write_hdf5(folder / "nan_inf.h5", nan_inf, labels, names, **common)
    cases.append(
        Case("hdf5_nan_and_inf_records", "record", path, f"{ids[4]}: contains NaN", "contains NaN or infinite")
    )

    flat = signals.copy()
    flat[7] = 0.25
    path = write_hdf5(folder / "flat_record.h5", flat, labels, names, **common)
    cases.append(Case("hdf5_flat_record", "record", path, f"{ids[7]}: flat", "flat on every lead"))

    path = write_hdf5(folder / "all_nan.h5", np.full_like(signals, np.nan), labels, names, **common)
    cases.append(Case("hdf5_every_record_nan", "target", path, "all_nan.h5", "no usable record"))

    csv_path = folder / "labels_other_ids.csv"
    rows = ["record_id,NORM,MI"] + [
        f"9{value}{index},{index % 2},{(index // 2) % 2}" for index, value in enumerate(ids)
    ]
    csv_path.write_text("\n".join(rows) + "\n")
    cases.append(
        Case(
            "labels_csv_ids_match_nothing",
            "target",
            good,
            "labels_other_ids.csv",
            "no id in column 'record_id' matches",
            ("--labels-csv", str(csv_path)),
        )
    )

    latin1 = folder / "labels_latin1.csv"
    latin1.write_bytes(
        ("record_id,NORM,Bloc de branche droit (é)\n" + "".join(f"{value},1,0\n" for value in ids)).encode("latin-1")
    )
    cases.append(
        Case(
            "labels_csv_not_utf8",
            "target",
            good,
            "labels_latin1.csv",
            "not UTF-8",
            ("--labels-csv", str(latin1)),
        )
    )
    return cases


def _copy_wfdb(folder: Path) -> Path:
    """A fresh copy of the real CinC 2021 records of sample_data/cinc_wfdb."""
    shutil.copytree(SAMPLE_WFDB, folder)
    return folder


def _as_format16(folder: Path, record: str, new_name: str) -> Path:
    """A real CinC record rewritten as WFDB format 16 `.hea` + `.dat` (same samples, same #Dx) under a new name."""
    import wfdb

    from melep_cli.targets.challenge import parse_header

    header = parse_header(folder / f"{record}.hea")
    values = scipy.io.loadmat(folder / f"{record}.mat")["val"].T.astype(np.int16)
    wfdb.wrsamp(
        new_name,
        fs=header.sampling_rate,
        units=[signal.units for signal in header.signals],
        sig_name=list(header.leads),
        d_signal=values,
        fmt=["16"] * header.n_signals,
        adc_gain=[signal.gain for signal in header.signals],
        baseline=[int(signal.baseline) for signal in header.signals],
        comments=list(header.comments),
        write_dir=str(folder),
    )
    return folder / f"{new_name}.hea"


def _wfdb_cases(folder: Path) -> list[Case]:
    folder.mkdir(parents=True, exist_ok=True)
    cases: list[Case] = []
    options = WFDB_OPTIONS

    directory = _copy_wfdb(folder / "header_garbage")
    (directory / "E00271.hea").write_bytes(bytes(range(256)) * 3)  # binary garbage where a header belongs
    cases.append(Case("wfdb_header_garbage", "record", directory, "E00271", "header", options))

    directory = _copy_wfdb(folder / "every_header_garbage")
    for header in directory.glob("*.hea"):
        header.write_bytes(b"\x00\xff garbage \xfe\n" + bytes(range(40)))
    cases.append(Case("wfdb_every_header_garbage", "target", directory, "every_header_garbage", "no readable"))

    directory = _copy_wfdb(folder / "header_numbers_garbage")
    for header in directory.glob("*.hea"):
        lines = header.read_text(encoding="latin-1").splitlines()
        fields = lines[0].split()
        lines[0] = " ".join([fields[0], "twelve", *fields[2:]])  # number of signals is not a number
        header.write_text("\n".join(lines) + "\n", encoding="latin-1")
    cases.append(
        Case("wfdb_header_numbers_garbage", "target", directory, "header_numbers_garbage", "number of signals")
    )

    directory = _copy_wfdb(folder / "non_utf8")
    for header in directory.glob("*.hea"):
        text = header.read_bytes()
        header.write_bytes(text + b"#Name: M\xfcller \xff\xfe Fran\xe7ois\n")  # latin-1 / invalid UTF-8 comments
    cases.append(Case("wfdb_non_utf8_comments", "accepted", directory, "", "", options))

    directory = _copy_wfdb(folder / "missing_mat")
    (directory / "A2712.mat").unlink()
    cases.append(Case("wfdb_missing_mat", "record", directory, "A2712", "A2712.mat: signal file missing", options))

    directory = _copy_wfdb(folder / "missing_dat")
    _as_format16(directory, "E07506", "D07506")
    (directory / "D07506.dat").unlink()
    cases.append(Case("wfdb_missing_dat", "record", directory, "D07506", "D07506.dat: signal file missing", options))

    directory = _copy_wfdb(folder / "short_mat")
    values = scipy.io.loadmat(directory / "JS20005.mat")["val"]
    scipy.io.savemat(directory / "JS20005.mat", {"val": values[:, : values.shape[1] // 2]})
    cases.append(Case("wfdb_mat_shorter_than_header", "record", directory, "JS20005", "the header announces", options))

    directory = _copy_wfdb(folder / "truncated_mat")
    data = (directory / "HR06003.mat").read_bytes()
    (directory / "HR06003.mat").write_bytes(data[: len(data) // 3])
    cases.append(Case("wfdb_mat_truncated", "record", directory, "HR06003", "HR06003.mat", options))

    directory = _copy_wfdb(folder / "short_dat")
    _as_format16(directory, "E07517", "D07517")
    data = (directory / "D07517.dat").read_bytes()
    (directory / "D07517.dat").write_bytes(data[: len(data) // 2])
    cases.append(Case("wfdb_dat_shorter_than_header", "record", directory, "D07517", "the header announces", options))

    directory = _copy_wfdb(folder / "csv_no_match")
    csv_path = folder / "wfdb_other_ids.csv"
    records = sorted(path.stem for path in directory.glob("*.hea"))
    csv_path.write_text("record,AF\n" + "".join(f"X{record},{i % 2}\n" for i, record in enumerate(records)))
    cases.append(
        Case(
            "wfdb_labels_csv_ids_match_nothing",
            "target",
            directory,
            "wfdb_other_ids.csv",
            "matches a record",
            ("--labels-csv", str(csv_path)),
        )
    )

    directory = _copy_wfdb(folder / "invalid_samples")
    values = scipy.io.loadmat(directory / "JS20005.mat")["val"]
    values[1, 100:103] = -32768  # WFDB's invalid-sample value of format 16: wfdb reads NaN there
    scipy.io.savemat(directory / "JS20005.mat", {"val": values}, format="4")  # the Challenge layout, 16+24
    cases.append(Case("wfdb_invalid_samples", "record", directory, "JS20005", "3 missing samples", options))

    directory = _copy_wfdb(folder / "multi_segment")
    _as_multi_segment(directory, "E07506", "MS07506")
    (directory / "MS07506_0002.hea").unlink()
    cases.append(
        Case("wfdb_multi_segment_missing_segment", "record", directory, "MS07506", "segment MS07506_0002", options)
    )
    return cases


def _as_multi_segment(folder: Path, record: str, new_name: str) -> Path:
    """A real CinC record rewritten as a two-segment WFDB record (fixed layout, format 16, same #Dx)."""
    import wfdb

    from melep_cli.targets.challenge import parse_header

    header = parse_header(folder / f"{record}.hea")
    values = scipy.io.loadmat(folder / f"{record}.mat")["val"].T.astype(np.int16)
    half = len(values) // 2
    for index, part in enumerate((values[:half], values[half:]), start=1):
        wfdb.wrsamp(
            f"{new_name}_{index:04d}",
            fs=header.sampling_rate,
            units=[signal.units for signal in header.signals],
            sig_name=list(header.leads),
            d_signal=part,
            fmt=["16"] * header.n_signals,
            adc_gain=[signal.gain for signal in header.signals],
            baseline=[int(signal.baseline) for signal in header.signals],
            write_dir=str(folder),
        )
    lines = [f"{new_name}/2 {header.n_signals} {header.sampling_rate:g} {len(values)}"]
    lines += [f"{new_name}_0001 {half}", f"{new_name}_0002 {len(values) - half}"]
    lines += [f"#{comment}" for comment in header.comments]
    (folder / f"{new_name}.hea").write_text("\n".join(lines) + "\n")
    return folder / f"{new_name}.hea"


# ----- checkpoints -------------------------------------------------------------------------------
class MeanHead(torch.nn.Module):
    """Per-lead mean and peak into a linear layer: (batch, leads, time) -> (batch, outputs)."""

    def __init__(self, leads: int = 12, outputs: int = 5) -> None:
        super().__init__()
        self.head = torch.nn.Linear(2 * leads, outputs)

    def forward(self, ecg: torch.Tensor) -> torch.Tensor:
        return self.head(torch.cat([ecg.mean(dim=2), ecg.abs().amax(dim=2)], dim=1))


class NanHead(MeanHead):
    """Like MeanHead, but every score is NaN (a model whose weights diverged)."""

    def forward(self, ecg: torch.Tensor) -> torch.Tensor:
        return self.head(torch.cat([ecg.mean(dim=2), ecg.abs().amax(dim=2)], dim=1)) * float("nan")


class EightLeads(torch.nn.Module):
    """A convolution over 8 input channels (I, II, V1-V6): it cannot take 12 leads in either layout."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv1d(8, 4, kernel_size=5)
        self.head = torch.nn.Linear(4, 5)

    def forward(self, ecg: torch.Tensor) -> torch.Tensor:
        return self.head(self.conv(ecg).mean(dim=2))


def _save_script(module, path: Path, metadata: dict | None = None) -> Path:
    module.eval()
    extra = {"melep.json": json.dumps(metadata)} if metadata is not None else {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.script(module), str(path), _extra_files=extra)
    return path


def _checkpoint_cases(folder: Path) -> list[Case]:
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    cases: list[Case] = []

    def case(name: str, path: Path, reason: str) -> None:
        cases.append(Case(name, "checkpoint", path, path.name, reason))

    path = folder / "notes.pt"
    path.write_text("These are my training notes, not a model.\n")
    case("checkpoint_not_a_model", path, "not a TorchScript archive")

    path = folder / "empty.onnx"
    path.write_bytes(b"")
    case("checkpoint_empty", path, "empty file")

    path = folder / "truncated.onnx"
    path.write_bytes(GOOD_CHECKPOINT.read_bytes()[:3000])
    case("checkpoint_truncated_onnx", path, "not a loadable ONNX model")

    path = folder / "whole_module.pt"
    torch.save(MeanHead(), path)
    case("checkpoint_pickled_module", path, "refused to load a pickled object")

    path = folder / "weights.pth"
    torch.save(MeanHead().state_dict(), path)
    case("checkpoint_state_dict", path, "state_dict")

    # A real TorchScript archive whose data.pkl was swapped for a malicious pickle.
    path = folder / "hidden_pickle.pt"
    archive = _save_script(MeanHead(), folder / "hidden_pickle_source.pt")
    # Protocol 2, the one TorchScript's own unpickler reads, so it gets as far as the global it refuses.
    _swap_data_pkl(archive, path, malicious_pickle(folder / "UNPICKLED_hidden_pickle", protocol=2))
    archive.unlink()
    case("checkpoint_pickle_in_torchscript_zip", path, "not a loadable TorchScript archive (Unknown type name")

    path = _save_script(EightLeads(), folder / "eight_leads.pt")
    case("checkpoint_eight_leads", path, "runs in neither layout")

    metadata = {"labels": ["A", "B", "C"], "sampling_rate": 100, "layout": "NCT"}
    path = _save_script(MeanHead(outputs=5), folder / "wrong_width.pt", metadata)
    case("checkpoint_output_width", path, "outputs 5 scores per record but its metadata names 3 labels")

    path = _save_script(NanHead(), folder / "nan_outputs.pt", {"layout": "NCT", "sampling_rate": 100})
    case("checkpoint_nan_outputs", path, "NaN or infinite outputs")

    for name, stem, sidecar, reason in [
        ("checkpoint_metadata_invalid_json", "bad_json", '{"labels": ["A", "B",', "not valid JSON"),
        ("checkpoint_metadata_wrong_type", "bad_types", '{"sampling_rate": "fast"}', "'sampling_rate' must be"),
        ("checkpoint_metadata_unknown_layout", "bad_layout", '{"layout": "NLC"}', "must be one of NCT, NTC"),
    ]:
        path = _save_script(MeanHead(), folder / f"{stem}.pt")
        (folder / f"{stem}.json").write_text(sidecar)
        case(name, path, reason)
    return cases


def _swap_data_pkl(source: Path, destination: Path, payload: bytes) -> None:
    """Copy a zip archive, replacing its `<archive>/data.pkl` entry with `payload`."""
    import zipfile

    with zipfile.ZipFile(source) as reader, zipfile.ZipFile(destination, "w") as writer:
        for entry in reader.infolist():
            data = reader.read(entry)
            if entry.filename.endswith("/data.pkl"):
                data = payload
            writer.writestr(entry, data)


# ----- the corpus ---------------------------------------------------------------------------------
def make_corpus(directory: str | Path) -> dict[str, Case]:
    """Write every case below `directory` (created) and return them by name, in CASE_NAMES order."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    cases = [
        *_hdf5_cases(directory / "hdf5"),
        *_wfdb_cases(directory / "wfdb"),
        *_checkpoint_cases(directory / "checkpoints"),
    ]
    by_name = {case.name: case for case in cases}
    missing = set(CASE_NAMES) ^ set(by_name)
    assert not missing, f"CASE_NAMES and the generated cases differ: {sorted(missing)}"
    return {name: by_name[name] for name in CASE_NAMES}


def good_target(directory: str | Path) -> Path:
    """The real HDF5 target the checkpoint cases are ranked on (written by make_corpus)."""
    return Path(directory) / "hdf5" / "good_target.h5"


def rank_command(case: Case, corpus: Path) -> list[str]:
    """The `melep rank` arguments that exercise `case`."""
    if case.kind == "checkpoint":
        return ["rank", "-c", str(case.path), "-c", str(GOOD_CHECKPOINT), "-t", str(good_target(corpus))]
    return ["rank", "-c", str(GOOD_CHECKPOINT), "-t", str(case.path), *case.options]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path, help="where to write the corpus (created; must be empty or absent)")
    arguments = parser.parse_args(argv)
    if arguments.folder.exists() and any(arguments.folder.iterdir()):
        parser.error(f"{arguments.folder} is not empty")
    sys.path.insert(0, str(REPO))
    cases = make_corpus(arguments.folder)
    for case in cases.values():
        command = " ".join(shlex.quote(part) for part in ["melep", *rank_command(case, arguments.folder)])
        print(f"# {case.name} ({case.kind}): {case.reason or 'accepted'}\n{command}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
