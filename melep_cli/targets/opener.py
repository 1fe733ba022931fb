"""Which reader a path needs, and `open_target`, the one way in."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import h5py

from melep_cli.errors import TargetError, UsageError
from melep_cli.matrices import HDF5_SUFFIXES
from melep_cli.targets.base import Target, parse_folds
from melep_cli.targets.hdf5 import Hdf5Target
from melep_cli.targets.ptbxl import DATABASE_CSV, LABEL_LEVELS, PtbxlTarget
from melep_cli.targets.wfdb_dir import WfdbTarget

TARGET_FORMATS = ("hdf5", "wfdb", "ptbxl")

#: The formats each format-specific option applies to (every other option applies to all of them).
APPLIES_TO: dict[str, tuple[str, ...]] = {
    "labels_csv": ("hdf5", "wfdb"),
    "ptbxl_labels": ("ptbxl",),
    "folds": ("ptbxl",),
    "sampling_rate": ("ptbxl", "hdf5"),
}
_FORMAT_NAMES = {"hdf5": "HDF5", "wfdb": "WFDB", "ptbxl": "PTB-XL"}
#: Why an option does not apply, where that helps: (option, format) -> the end of the message.
_WHY_NOT = {
    ("labels_csv", "ptbxl"): "PTB-XL labels come from scp_codes; for your own CSV read it as target_format wfdb",
    ("sampling_rate", "wfdb"): "WFDB headers give the rate",
}


class NotApplicableError(UsageError):
    """A target option given for a format it does not apply to (e.g. ptbxl_labels on an HDF5 file)."""

    def __init__(self, path: Path, option: str, target_format: str) -> None:
        formats = " and ".join(_FORMAT_NAMES[name] for name in APPLIES_TO[option])
        why = _WHY_NOT.get((option, target_format))
        this = f"this is {target_format}" + (f": {why}" if why else "")
        super().__init__(f"{path}: {option} applies to {formats} targets only ({this})")
        self.option = option
        self.target_format = target_format


def check_applicable(path: Path, target_format: str, given: dict[str, object]) -> None:
    """Raise NotApplicableError for the first option in `given` (name -> value, None: not given) that
    does not apply to `target_format`: a silently ignored option would be a wrong result."""
    for option, value in given.items():
        if value is not None and target_format not in APPLIES_TO[option]:
            raise NotApplicableError(path, option, target_format)


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
    ptbxl_labels: str | None = None,
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
    ptbxl_labels: PTB-XL label level: superclass, subclass, diagnostic, form, rhythm, all (None: superclass).
    folds: PTB-XL strat_fold selection, e.g. '9,10' or '1-8'.
    sampling_rate: the rate the records are read at. PTB-XL: 100 or 500 (which files to read, None: 100);
        HDF5: the rate of a file without the attribute (one with it must agree).
    strict: any skipped record raises TargetError instead of a warning.
    lead_names: the records' lead names in order, replacing what the files say (e.g. L1..L12 exports); any format.

    An option given (not None) for a format it does not apply to is a NotApplicableError (a UsageError)
    naming the parameter and the format: labels_csv is for HDF5 and WFDB, ptbxl_labels and folds for
    PTB-XL, sampling_rate for PTB-XL and HDF5.
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
    ptbxl_labels: str | None,
    folds: str | Iterable[int] | None,
    sampling_rate: float | None,
    strict: bool,
) -> Target:
    """`open_target` but the lead names: check the options against the format, then the format's reader."""
    path = Path(path)
    if not path.exists():
        raise TargetError(f"{path}: no such file or directory")
    detected = detect_format(path) if target_format is None else str(target_format).lower()
    if detected not in TARGET_FORMATS:
        raise UsageError(f"--target-format: {target_format!r} is not one of {', '.join(TARGET_FORMATS)}")
    if min_positives < 1:
        raise UsageError(f"--min-positives must be at least 1, got {min_positives}")
    given = {"labels_csv": labels_csv, "ptbxl_labels": ptbxl_labels, "folds": folds, "sampling_rate": sampling_rate}
    check_applicable(path, detected, given)
    if ptbxl_labels is not None and ptbxl_labels not in LABEL_LEVELS:
        raise UsageError(f"--ptbxl-labels: {ptbxl_labels!r} is not one of {', '.join(LABEL_LEVELS)}")
    fold_set = parse_folds(folds)
    label_list = list(labels) if labels is not None else None
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
        if not (path / DATABASE_CSV).is_file():
            raise TargetError(f"{path}: no {DATABASE_CSV}, not a PTB-XL directory")
        return PtbxlTarget(
            path,
            labels=label_list,
            ptbxl_labels="superclass" if ptbxl_labels is None else ptbxl_labels,
            min_positives=min_positives,
            folds=fold_set,
            sampling_rate=sampling_rate,
            strict=strict,
        )
    return WfdbTarget(path, labels=label_list, labels_csv=labels_csv, min_positives=min_positives, strict=strict)
