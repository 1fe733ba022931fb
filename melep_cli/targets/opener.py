"""Which reader a path needs, and `open_target`, the one way in."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from enum import Enum
from pathlib import Path
from typing import Any

import h5py

from melep_cli.errors import TargetError, UsageError, fill_names
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
#: Why an option does not apply, where that helps: (option, format) -> the end of the message, with
#: {parameter} for each other parameter it names (see NotApplicableError.naming).
_WHY_NOT = {
    ("labels_csv", "ptbxl"): "PTB-XL labels come from scp_codes; for your own CSV read it as {target_format} wfdb",
    ("sampling_rate", "wfdb"): "WFDB headers give the rate",
}


class NotApplicableError(UsageError):
    """A target option given for a format it does not apply to (e.g. ptbxl_labels on an HDF5 file)."""

    def __init__(self, path: Path, option: str, target_format: str, *, hint: str | None = None) -> None:
        self.path = path
        self.option = option
        self.target_format = target_format
        formats = " and ".join(_FORMAT_NAMES[name] for name in APPLIES_TO[option])
        super().__init__(f"applies to {formats} targets only", parameter=option, hint=hint)

    def naming(self, name_of: Callable[[str], str] = str) -> str:
        why = _WHY_NOT.get((self.option, self.target_format))
        this = f"this is {self.target_format}" + (f": {fill_names(why, name_of)}" if why else "")
        hint = f"; {fill_names(self.hint, name_of)}" if self.hint else ""
        return f"{self.path}: {name_of(self.option)} {self.detail} ({this}){hint}"


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


@dataclass(frozen=True)
class TargetOptions:
    """How to read a target: which format, records and labels. Validated once, when it is made.

    target_format: 'hdf5' | 'wfdb' | 'ptbxl' (None: detected from the path).
    labels: label names, abbreviations or SNOMED codes to use, in this order (a str is split at commas;
        None: every label with at least `min_positives` positives and one negative).
    labels_csv: labels joined by record id (HDF5, plain WFDB directories).
    min_positives: the default label set's least number of positive records (at least 1).
    ptbxl_labels: PTB-XL label level: superclass, subclass, diagnostic, form, rhythm, all (None: superclass).
    folds: PTB-XL strat_fold selection, e.g. '9,10', '1-8' or [9, 10] (kept as a frozenset of ints).
    sampling_rate: the rate the records are read at. PTB-XL: 100 or 500 (which files to read, None: 100);
        HDF5: the rate of a file without the attribute (one with it must agree).
    strict: any skipped record raises TargetError instead of a warning.
    lead_names: the records' lead names in order, replacing what the files say (e.g. L1..L12 exports); any
        format (a str is split at commas).

    None means "not given". An option given for a format it does not apply to is a NotApplicableError
    when the target is opened (the format may be known only then): labels_csv is for HDF5 and WFDB,
    ptbxl_labels and folds for PTB-XL, sampling_rate for PTB-XL and HDF5. Other bad values are a
    UsageError naming the parameter here.
    """

    target_format: str | None = None
    labels: tuple[str, ...] | None = None
    labels_csv: Path | None = None
    min_positives: int = 10
    ptbxl_labels: str | None = None
    folds: frozenset[int] | None = None
    sampling_rate: float | None = None
    strict: bool = False
    lead_names: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        target_format = _plain(self.target_format)
        if target_format is not None:
            target_format = str(target_format).lower()
            if target_format not in TARGET_FORMATS:
                raise UsageError(
                    f"{self.target_format!r} is not one of {', '.join(TARGET_FORMATS)}", parameter="target_format"
                )
        ptbxl_labels = _plain(self.ptbxl_labels)
        if ptbxl_labels is not None and ptbxl_labels not in LABEL_LEVELS:
            raise UsageError(f"{ptbxl_labels!r} is not one of {', '.join(LABEL_LEVELS)}", parameter="ptbxl_labels")
        if isinstance(self.min_positives, bool) or not isinstance(self.min_positives, int) or self.min_positives < 1:
            raise UsageError(f"must be at least 1, got {self.min_positives!r}", parameter="min_positives")
        sampling_rate = None if self.sampling_rate is None else float(self.sampling_rate)
        if sampling_rate is not None and not sampling_rate > 0:
            raise UsageError(f"must be a positive number of Hz, got {self.sampling_rate!r}", parameter="sampling_rate")
        normal = {
            "target_format": target_format,
            "labels": _names(self.labels),
            "labels_csv": None if self.labels_csv is None else Path(self.labels_csv),
            "ptbxl_labels": ptbxl_labels,
            "folds": parse_folds(self.folds),
            "sampling_rate": sampling_rate,
            "strict": bool(self.strict),
            "lead_names": _names(self.lead_names),
        }
        for name, value in normal.items():
            object.__setattr__(self, name, value)


def _plain(value: object) -> object:
    """A choice's value: an Enum member (the CLI's choices) as its value, anything else as it is."""
    return value.value if isinstance(value, Enum) else value


def _names(value: str | Iterable[str] | None) -> tuple[str, ...] | None:
    """'a,b, c' or ['a', 'b', 'c'] -> ('a', 'b', 'c'); None stays None."""
    if value is None:
        return None
    parts = value.split(",") if isinstance(value, str) else value
    return tuple(name for name in (str(part).strip() for part in parts) if name)


def open_target(path: str | Path, options: TargetOptions | None = None, **kwargs: Any) -> Target:
    """Open the target at `path` as `options` say (see TargetOptions).

    The options may instead be given as TargetOptions' keyword arguments
    (`open_target(path, labels=["MI"], min_positives=1)`); with `options` as well, they replace its fields.
    """
    if options is None:
        options = TargetOptions(**kwargs)
    elif kwargs:
        options = replace(options, **kwargs)
    opened = _open(Path(path), options)
    if options.lead_names is not None:
        opened.rename_leads(list(options.lead_names))
    return opened


def target_of(target: str | Path | Target, options: TargetOptions | None = None) -> Target:
    """An open Target as it is, or the path opened with `options`.

    Options with an open Target are a UsageError: they choose how a path is opened, and that is done.
    """
    if not isinstance(target, Target):
        return open_target(target, options)
    if options is not None:
        raise UsageError(f"apply to a target path, not to the open target {target.path}", parameter="target_options")
    return target


def _open(path: Path, options: TargetOptions) -> Target:
    """`open_target` but the lead names: check the options against the format, then the format's reader."""
    if not path.exists():
        raise TargetError(f"{path}: no such file or directory")
    detected = detect_format(path) if options.target_format is None else options.target_format
    check_applicable(path, detected, {name: getattr(options, name) for name in APPLIES_TO})
    # What every reader takes; each adds the options of its format.
    common: dict[str, Any] = {
        "labels": list(options.labels) if options.labels is not None else None,
        "min_positives": options.min_positives,
        "strict": options.strict,
    }
    if detected == "hdf5":
        if not path.is_file():
            raise TargetError(f"{path}: not a file, cannot read it as HDF5")
        return Hdf5Target(path, labels_csv=options.labels_csv, sampling_rate=options.sampling_rate, **common)
    if not path.is_dir():
        raise TargetError(f"{path}: not a directory, cannot read it as {detected}")
    if detected == "ptbxl":
        if not (path / DATABASE_CSV).is_file():
            raise TargetError(f"{path}: no {DATABASE_CSV}, not a PTB-XL directory")
        level = "superclass" if options.ptbxl_labels is None else options.ptbxl_labels
        return PtbxlTarget(path, ptbxl_labels=level, folds=options.folds, sampling_rate=options.sampling_rate, **common)
    return WfdbTarget(path, labels_csv=options.labels_csv, **common)
