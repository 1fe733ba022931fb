"""Read an n x k matrix (model outputs or target labels) from `.npy`, `.csv` or HDF5.

Used by `melep score`, which takes outputs a user already has. HDF5 is addressed as
`file.h5:dataset`. A CSV's header row, or a `label_names`/`names` attribute on an HDF5
dataset, gives the column names.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from melep_cli.errors import InputError

#: File suffixes read as HDF5 (by `melep score` here, and by `melep_cli.targets.opener` for targets).
HDF5_SUFFIXES: tuple[str, ...] = (".h5", ".hdf5", ".hdf", ".he5")
_NAME_ATTRIBUTES = ("label_names", "names", "source_labels", "columns")


@dataclass(frozen=True)
class Matrix:
    """A 2-D array read from a file, with its column names when the file gives them."""

    values: np.ndarray
    names: tuple[str, ...] | None
    source: str


def load_matrix(spec: str | Path) -> Matrix:
    """Read `path.npy`, `path.csv` or `path.h5:dataset` as a records x columns matrix."""
    spec = str(spec)
    path, dataset = _split_hdf5_spec(spec)
    if not path.exists():
        raise InputError(f"{path}: no such file")
    if path.is_dir():
        raise InputError(f"{path}: is a directory, expected a .npy, .csv or .h5 file")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        values, names = _read_npy(path), None
    elif suffix == ".csv":
        values, names = _read_csv(path)
    elif suffix in HDF5_SUFFIXES:
        values, names = _read_hdf5(path, dataset)
    else:
        raise InputError(f"{path}: unsupported file type {suffix or '(none)'}: use .npy, .csv or .h5:dataset")
    if values.ndim == 1:
        values = values[:, None]
    if values.ndim != 2:
        raise InputError(f"{spec}: expected a 2-D matrix (records x columns), got shape {values.shape}")
    if names is not None and len(names) != values.shape[1]:
        raise InputError(f"{spec}: {len(names)} column names for {values.shape[1]} columns")
    return Matrix(values=values, names=names, source=spec)


def _split_hdf5_spec(spec: str) -> tuple[Path, str | None]:
    """'data.h5:group/outputs' -> (data.h5, 'group/outputs'); other paths have no dataset."""
    lowered = spec.lower()
    for suffix in HDF5_SUFFIXES:
        marker = suffix + ":"
        index = lowered.rfind(marker)
        if index >= 0:
            return Path(spec[: index + len(suffix)]), spec[index + len(marker) :] or None
    return Path(spec), None


def _read_npy(path: Path) -> np.ndarray:
    try:
        values = np.load(path, allow_pickle=False)
    except ValueError as error:
        raise InputError(f"{path}: not a numeric .npy array ({error})") from None
    except (OSError, EOFError) as error:
        raise InputError(f"{path}: cannot read as .npy ({error})") from None
    if not isinstance(values, np.ndarray):
        raise InputError(f"{path}: holds several arrays (.npz); save one array with numpy.save")
    if not (np.issubdtype(values.dtype, np.number) or values.dtype == np.bool_):
        raise InputError(f"{path}: expected numbers, got dtype {values.dtype}")
    return values


def _read_csv(path: Path) -> tuple[np.ndarray, tuple[str, ...] | None]:
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            rows = [row for row in csv.reader(handle) if any(cell.strip() for cell in row)]
    except UnicodeDecodeError:
        raise InputError(f"{path}: not UTF-8 text") from None
    except (OSError, csv.Error) as error:
        raise InputError(f"{path}: cannot read as CSV ({error})") from None
    if not rows:
        raise InputError(f"{path}: empty CSV")
    names: tuple[str, ...] | None = None
    if not all(_is_number(cell) for cell in rows[0]):
        names = tuple(cell.strip() for cell in rows[0])
        rows = rows[1:]
    width = len(names) if names is not None else len(rows[0]) if rows else 0
    values = np.empty((len(rows), width), dtype=np.float64)
    for line, row in enumerate(rows, start=2 if names is not None else 1):
        if len(row) != width:
            raise InputError(f"{path}: line {line} has {len(row)} fields, expected {width}")
        for column, cell in enumerate(row):
            try:
                values[line - (2 if names is not None else 1), column] = float(cell)
            except ValueError:
                raise InputError(f"{path}: line {line}, column {column + 1}: {cell!r} is not a number") from None
    return values, names


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def _read_hdf5(path: Path, dataset: str | None) -> tuple[np.ndarray, tuple[str, ...] | None]:
    import h5py

    try:
        handle = h5py.File(path, "r")
    except OSError as error:
        raise InputError(f"{path}: not a readable HDF5 file ({error})") from None
    with handle:
        available = sorted(name for name, obj in handle.items() if isinstance(obj, h5py.Dataset))
        if dataset is None:
            raise InputError(f"{path}: name the dataset as {path}:NAME (datasets: {', '.join(available) or 'none'})")
        node = handle.get(dataset)
        if not isinstance(node, h5py.Dataset):
            raise InputError(f"{path}: no dataset {dataset!r} (datasets: {', '.join(available) or 'none'})")
        if not (np.issubdtype(node.dtype, np.number) or node.dtype == np.bool_):
            raise InputError(f"{path}:{dataset}: expected numbers, got dtype {node.dtype}")
        values = node[()]
        names = None
        for attribute in _NAME_ATTRIBUTES:
            if attribute in node.attrs:
                names = tuple(_decode(name) for name in np.atleast_1d(node.attrs[attribute]))
                break
    return np.asarray(values), names


def _decode(value: object) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)
