"""Which reader a path needs, and `open_target`, the one way in."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import h5py

from melep_cli.errors import TargetError, UsageError
from melep_cli.targets.base import Target, parse_folds
from melep_cli.targets.hdf5 import Hdf5Target
from melep_cli.targets.ptbxl import DATABASE_CSV, LABEL_LEVELS, PtbxlTarget
from melep_cli.targets.wfdb_dir import WfdbTarget

TARGET_FORMATS = ("hdf5", "wfdb", "ptbxl")
HDF5_SUFFIXES = (".h5", ".hdf5", ".hdf", ".he5")


def detect_format(path: str | Path) -> str:
    """'hdf5' for an HDF5 file, 'ptbxl' for a directory with ptbxl_database.csv, 'wfdb' for one with .hea files."""
    path = Path(path)
    if not path.exists():
        raise TargetError(f"{path}: no such file or directory")
    if path.is_file():
        if path.suffix.lower() in HDF5_SUFFIXES or h5py.is_hdf5(path):
            return "hdf5"
        raise TargetError(
            f"{path}: unknown target format (expected an HDF5 file, a WFDB directory or a PTB-XL directory)"
        )
    if (path / DATABASE_CSV).is_file():
        return "ptbxl"
    if next(path.rglob("*.hea"), None) is not None:
        return "wfdb"
    raise TargetError(f"{path}: unknown target format (a directory without *.hea records or {DATABASE_CSV})")


def open_target(
    path: str | Path,
    *,
    target_format: str | None = None,
    labels: Sequence[str] | None = None,
    labels_csv: str | Path | None = None,
    min_positives: int = 10,
    ptbxl_labels: str = "superclass",
    folds: str | Iterable[int] | None = None,
    sampling_rate: float | None = None,
    strict: bool = False,
    lead_names: Sequence[str] | None = None,
) -> Target:
    """Open the target at `path`.

    target_format: 'hdf5' | 'wfdb' | 'ptbxl' (default: detected from the path).
    labels: label names, abbreviations or SNOMED codes to use, in this order (default: every label
        with at least `min_positives` positives and one negative).
    labels_csv: labels joined by record id (HDF5, plain WFDB directories).
    ptbxl_labels: PTB-XL label level: superclass, subclass, diagnostic, form, rhythm, all.
    folds: PTB-XL strat_fold selection, e.g. '9,10' or '1-8'.
    sampling_rate: PTB-XL: 100 or 500 (which files to read); HDF5: the rate of a file without the attribute.
    strict: any skipped record raises TargetError instead of a warning.
    lead_names: the records' lead names in order, replacing what the files say (e.g. L1..L12 exports).
    """
    opened = _open(path, target_format, labels, labels_csv, min_positives, ptbxl_labels, folds, sampling_rate, strict)
    if lead_names is not None:
        opened.rename_leads(lead_names)
    return opened


def _open(
    path: str | Path,
    target_format: str | None,
    labels: Sequence[str] | None,
    labels_csv: str | Path | None,
    min_positives: int,
    ptbxl_labels: str,
    folds: str | Iterable[int] | None,
    sampling_rate: float | None,
    strict: bool,
) -> Target:
    path = Path(path)
    if not path.exists():
        raise TargetError(f"{path}: no such file or directory")
    detected = detect_format(path) if target_format is None else str(target_format).lower()
    if detected not in TARGET_FORMATS:
        raise UsageError(f"--target-format: {target_format!r} is not one of {', '.join(TARGET_FORMATS)}")
    if min_positives < 1:
        raise UsageError(f"--min-positives must be at least 1, got {min_positives}")
    if ptbxl_labels not in LABEL_LEVELS:
        raise UsageError(f"--ptbxl-labels: {ptbxl_labels!r} is not one of {', '.join(LABEL_LEVELS)}")
    fold_set = parse_folds(folds)
    label_list = list(labels) if labels is not None else None
    if detected != "ptbxl" and fold_set is not None:
        raise UsageError(f"{path}: --folds applies to PTB-XL targets only (this is {detected})")
    if detected == "hdf5":
        if not path.is_file():
            raise TargetError(f"{path}: not a file, cannot read it as HDF5")
        return Hdf5Target(
            path,
            labels=label_list,
            labels_csv=labels_csv,
            min_positives=min_positives,
            sampling_rate=sampling_rate,
            strict=strict,
        )
    if not path.is_dir():
        raise TargetError(f"{path}: not a directory, cannot read it as {detected}")
    if detected == "ptbxl":
        if labels_csv is not None:
            raise UsageError(
                f"{path}: PTB-XL labels come from scp_codes; for your own CSV use --target-format wfdb --labels-csv"
            )
        if not (path / DATABASE_CSV).is_file():
            raise TargetError(f"{path}: no {DATABASE_CSV}, not a PTB-XL directory")
        return PtbxlTarget(
            path,
            labels=label_list,
            ptbxl_labels=ptbxl_labels,
            min_positives=min_positives,
            folds=fold_set,
            sampling_rate=sampling_rate,
            strict=strict,
        )
    if sampling_rate is not None:
        raise UsageError(f"{path}: --sampling-rate applies to PTB-XL and HDF5 targets; WFDB headers give the rate")
    return WfdbTarget(path, labels=label_list, labels_csv=labels_csv, min_positives=min_positives, strict=strict)
