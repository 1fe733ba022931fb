"""HDF5 targets in the FORMATS.md layout (also the CODE-15% names `tracings` and `exam_id`).

Signals are streamed in chunk-aligned row slices, so a file of 100,000 records is never loaded
whole; labels and ids (small) are read at open time.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from melep_cli.errors import TargetError, UsageError
from melep_cli.targets.base import (
    STANDARD_LEADS,
    Batch,
    Target,
    bad_rows,
    check_unique_ids,
    normalize_id,
    select_labels,
    stack_if_uniform,
)
from melep_cli.targets.labels_csv import join_labels, read_labels_csv

log = logging.getLogger("melep")

SIGNAL_DATASETS = ("signals", "tracings")
ID_DATASETS = ("record_ids", "exam_id")
#: CODE-15% files carry no rate attribute; their tracings are 400 Hz.
CODE15_SAMPLING_RATE = 400.0
#: Upper bound on the signal bytes one read pulls into memory (float32), whatever the batch size.
READ_BUDGET_BYTES = 64 * 2**20


def _text_list(values: Any) -> list[str]:
    array = np.asarray(values).reshape(-1)
    return [value.decode("utf-8") if isinstance(value, bytes) else str(value) for value in array.tolist()]


def _attribute(objects: Sequence[h5py.HLObject], name: str) -> Any:
    for obj in objects:
        if name in obj.attrs:
            return obj.attrs[name]
    return None


class Hdf5Target(Target):
    """An HDF5 file: `signals`/`tracings` (n, T, L), labels from `labels` or a labels CSV joined by id."""

    format = "hdf5"

    def __init__(
        self,
        path: Path,
        *,
        labels: Sequence[str] | None = None,
        labels_csv: str | Path | None = None,
        min_positives: int = 10,
        sampling_rate: float | None = None,
        strict: bool = False,
    ) -> None:
        try:
            handle = h5py.File(path, "r")
        except OSError as error:
            raise TargetError(f"{path}: cannot open as HDF5 ({error})") from None
        with handle:
            self.signal_name = next((name for name in SIGNAL_DATASETS if name in handle), None)
            if self.signal_name is None or not isinstance(handle[self.signal_name], h5py.Dataset):
                raise TargetError(f"{path}: no 'signals' (or 'tracings') dataset; found {', '.join(handle) or 'none'}")
            signals = handle[self.signal_name]
            if signals.ndim != 3:
                raise TargetError(f"{path}: dataset {self.signal_name!r} has shape {signals.shape}, expected (n, T, L)")
            if not (np.issubdtype(signals.dtype, np.number) and not np.issubdtype(signals.dtype, np.complexfloating)):
                raise TargetError(f"{path}: dataset {self.signal_name!r} has type {signals.dtype}, not numbers")
            count, samples, n_leads = signals.shape
            if count == 0:
                raise TargetError(f"{path}: no records (dataset {self.signal_name!r} has shape {signals.shape})")
            self.shape = (count, samples, n_leads)
            self.chunk_rows = int(signals.chunks[0]) if signals.chunks else 1  # records a chunk stores
            self.native_rate = self._sampling_rate(path, handle, signals, sampling_rate)
            self.leads = self._leads(path, handle, signals, n_leads)
            self.lengths = self._lengths(path, handle, count, samples)

            id_name = next((name for name in ID_DATASETS if name in handle), None)
            file_ids = [normalize_id(value) for value in handle[id_name][()]] if id_name else None
            if file_ids is not None and len(file_ids) != count:
                raise TargetError(f"{path}: {id_name!r} has {len(file_ids)} ids for {count} records")
            all_ids = file_ids if file_ids is not None else [str(i) for i in range(count)]

            excluded: list[tuple[str, str]] = []
            aliases: dict[str, str] = {}
            elsewhere: dict[str, str] = {}
            if labels_csv is not None:
                if file_ids is None:
                    raise TargetError(
                        f"{path}: no 'record_ids' (or 'exam_id') dataset to join {labels_csv} by id "
                        "(labels are never matched by position)"
                    )
                check_unique_ids(file_ids, path)
                table = read_labels_csv(labels_csv)
                join = join_labels(file_ids, table, source=path, strict=strict)
                rows, names, matrix = join.record_positions, list(table.names), join.matrix
                excluded = [(record_id, f"no row in {table.path.name}") for record_id in join.missing_in_csv]
                elsewhere = table.not_binary_hints()
                label_source = f"{table.path} (column {table.id_column!r} joined to {id_name!r})"
            elif "labels" in handle:
                matrix, names = self._file_labels(path, handle, count)
                rows = np.arange(count, dtype=np.int64)
                label_source = f"{path}:labels"
            else:
                raise TargetError(
                    f"{path}: no 'labels' dataset", hint="pass {labels_csv}, a CSV with one 0/1 column per label"
                )
        label_names, label_matrix, excluded_labels = select_labels(
            names, matrix, labels, min_positives=min_positives, source=path, aliases=aliases, elsewhere=elsewhere
        )
        self._labels_csv = Path(labels_csv) if labels_csv is not None else None
        #: Row of every selected record in the signals dataset, ascending.
        self.rows = np.asarray(rows, dtype=np.int64)
        super().__init__(
            path,
            label_names=label_names,
            labels=label_matrix,
            excluded_labels=excluded_labels,
            record_ids=[all_ids[row] for row in self.rows],
            excluded=excluded,
            strict=strict,
            label_source=label_source,
        )

    # -- open-time metadata -------------------------------------------------------------------------------------
    @staticmethod
    def _sampling_rate(path: Path, handle: h5py.File, signals: h5py.Dataset, given: float | None) -> float:
        stored = _attribute([signals, handle], "sampling_rate")
        if stored is not None:
            try:
                rate = float(np.asarray(stored).reshape(-1)[0])
            except (TypeError, ValueError, IndexError):
                raise TargetError(f"{path}: attribute sampling_rate {stored!r} is not a number") from None
            if given is not None and abs(given - rate) > 1e-9:
                raise UsageError(
                    f"{given:g} contradicts the sampling_rate attribute {rate:g} of {path}", parameter="sampling_rate"
                )
        elif given is not None:
            rate = float(given)
        elif signals.name.endswith("tracings"):
            rate = CODE15_SAMPLING_RATE
            log.warning(f"{path}: no sampling_rate attribute; assuming CODE-15%'s {rate:g} Hz (sampling_rate)")
        else:
            raise TargetError(f"{path}: no sampling_rate attribute on the file or dataset", hint="pass {sampling_rate}")
        if not (np.isfinite(rate) and rate > 0):
            raise TargetError(f"{path}: sampling_rate {rate!r} is not a positive number")
        return rate

    @staticmethod
    def _leads(path: Path, handle: h5py.File, signals: h5py.Dataset, n_leads: int) -> tuple[str, ...]:
        stored = _attribute([signals, handle], "leads")
        if stored is None:
            if n_leads != len(STANDARD_LEADS):
                raise TargetError(f"{path}: {n_leads} leads but no 'leads' attribute naming them")
            return STANDARD_LEADS
        leads = tuple(_text_list(stored))
        if len(leads) != n_leads:
            raise TargetError(f"{path}: attribute leads names {len(leads)} leads, the signals have {n_leads}")
        return leads

    @staticmethod
    def _lengths(path: Path, handle: h5py.File, count: int, samples: int) -> np.ndarray | None:
        """Optional `lengths` (n,): true record lengths of a padded file (written by `melep convert`)."""
        if "lengths" not in handle:
            return None
        lengths = np.asarray(handle["lengths"][()]).reshape(-1)
        if lengths.shape[0] != count or (lengths < 0).any() or (lengths > samples).any():
            raise TargetError(f"{path}: dataset 'lengths' does not give {count} lengths between 0 and {samples}")
        return lengths.astype(np.int64)

    @staticmethod
    def _file_labels(path: Path, handle: h5py.File, count: int) -> tuple[np.ndarray, list[str]]:
        dataset = handle["labels"]
        matrix = np.asarray(dataset[()])
        if matrix.ndim == 1:
            matrix = matrix[:, None]
        if matrix.ndim != 2 or matrix.shape[0] != count:
            raise TargetError(f"{path}: 'labels' has shape {matrix.shape}; expected ({count}, labels)")
        if not np.isin(matrix, (0, 1)).all():
            raise TargetError(f"{path}: 'labels' holds values other than 0 and 1")
        if "label_names" in dataset.attrs:
            names = _text_list(dataset.attrs["label_names"])
        elif "label_names" in handle:
            names = _text_list(handle["label_names"][()])
        else:
            names = [f"label{j}" for j in range(matrix.shape[1])]
            log.warning(f"{path}: no label_names; calling the labels {names[0]}..{names[-1]}")
        if len(names) != matrix.shape[1]:
            raise TargetError(f"{path}: {len(names)} label_names for {matrix.shape[1]} label columns")
        return matrix.astype(np.uint8), names

    @property
    def sampling_rates(self) -> tuple[float, ...]:
        return (float(self.native_rate),)

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        count, samples, n_leads = self.shape
        info.update(
            signals_dataset=self.signal_name,
            stored_records=count,
            stored_shape=[count, samples, n_leads],
            sampling_rate=self.native_rate,
            leads=list(self.leads),
        )
        return info

    # -- streaming ----------------------------------------------------------------------------------------------
    def _block_rows(self, signals: h5py.Dataset, batch_size: int) -> int:
        """Rows per read: whole chunks along the record axis, at least a batch, within READ_BUDGET_BYTES."""
        chunk_rows = signals.chunks[0] if signals.chunks else 1
        rows = -(-max(batch_size, chunk_rows) // chunk_rows) * chunk_rows
        row_bytes = max(1, self.shape[1] * self.shape[2] * max(4, signals.dtype.itemsize))
        return max(1, min(rows, READ_BUDGET_BYTES // row_bytes))

    def storage_blocks(self) -> list[np.ndarray]:
        """The record positions grouped by the HDF5 chunk (along the record axis) that stores them."""
        if len(self) == 0:
            return []
        chunk_of = np.asarray(self.rows, dtype=np.int64) // self.chunk_rows
        starts = np.flatnonzero(np.diff(chunk_of)) + 1  # rows ascend, so a chunk's positions are consecutive
        return np.split(np.arange(len(self), dtype=np.int64), starts)

    def _batches(self, batch_size: int, positions: np.ndarray | None) -> Iterator[Batch]:
        if len(self) == 0 or (positions is not None and positions.size == 0):
            return
        try:
            handle = h5py.File(self.path, "r")
        except OSError as error:
            raise TargetError(f"{self.path}: cannot open as HDF5 ({error})") from None
        with handle:
            signals = handle[self.signal_name]
            block_rows = self._block_rows(signals, batch_size)
            if positions is not None:
                yield from self._chosen_batches(signals, positions, block_rows, batch_size)
                return
            first_block = int(self.rows[0]) // block_rows
            for start in range(first_block * block_rows, int(self.rows[-1]) + 1, block_rows):
                stop = min(start + block_rows, self.shape[0])
                lo, hi = np.searchsorted(self.rows, [start, stop])
                if lo == hi:
                    continue
                try:
                    block = signals[start:stop]
                except (OSError, ValueError) as error:
                    raise TargetError(f"{self.path}: cannot read records {start}..{stop - 1} ({error})") from None
                positions = np.arange(lo, hi)
                block = _select_rows(block, self.rows[lo:hi] - start)
                if not _exact_in_float32(block.dtype):
                    block = np.asarray(block, dtype=np.float32)  # checks must see the float32 values
                yield from self._block_batches(block, positions, batch_size)
                del block  # before the next read: never two blocks at once

    def _chosen_batches(
        self, signals: h5py.Dataset, positions: np.ndarray, block_rows: int, batch_size: int
    ) -> Iterator[Batch]:
        """The records at `positions`, in that order: `block_rows` of them per read (one slice when they lie
        close together, else one read of their rows in file order), put back in the order asked."""
        for first in range(0, positions.size, block_rows):
            group = positions[first : first + block_rows]
            rows = np.asarray(self.rows[group], dtype=np.int64)
            order = np.argsort(rows, kind="stable")
            ascending = rows[order]
            start, stop = int(ascending[0]), int(ascending[-1]) + 1
            try:
                if stop - start <= block_rows:
                    block = _select_rows(signals[start:stop], ascending - start)
                else:
                    block = signals[ascending]
            except (OSError, ValueError) as error:
                raise TargetError(f"{self.path}: cannot read records {start}..{stop - 1} ({error})") from None
            if not (order == np.arange(order.size)).all():
                block = block[np.argsort(order)]
            if not _exact_in_float32(block.dtype):
                block = np.asarray(block, dtype=np.float32)
            yield from self._block_batches(block, group, batch_size)
            del block

    def _block_batches(self, block: np.ndarray, positions: np.ndarray, batch_size: int) -> Iterator[Batch]:
        """Check, crop to `lengths` where stored, and cut one read block into float32 batches.

        `block` holds float32 or a type float32 represents exactly (int16, ...): the checks give the same
        answers on it, and only one batch at a time is converted, not the whole block.
        """
        lengths = self.lengths[self.rows[positions]] if self.lengths is not None else None
        if lengths is None:
            reasons = bad_rows(block)
        else:
            reasons = [bad_rows(block[i : i + 1, :length])[0] for i, length in enumerate(lengths)]
        keep = []
        for i, reason in enumerate(reasons):
            if reason is None:
                keep.append(i)
            else:
                self._skip(self.record_ids[positions[i]], reason)
        for first in range(0, len(keep), batch_size):
            chosen = np.asarray(keep[first : first + batch_size], dtype=np.int64)
            if lengths is None:
                signals: np.ndarray | list[np.ndarray] = _rows_as_float32(block, chosen)
            else:
                signals = stack_if_uniform([np.asarray(block[i, : lengths[i]], dtype=np.float32) for i in chosen])
            chosen_positions = positions[chosen]
            yield Batch(
                signals=signals,
                sampling_rate=self.native_rate,
                leads=self.leads,
                labels=self.labels[chosen_positions],
                ids=[self.record_ids[p] for p in chosen_positions],
            )
            del signals  # the consumer has it: not kept here while the next batch is made


def _contiguous(rows: np.ndarray) -> bool:
    """Ascending consecutive row numbers (so a slice selects them without a copy)."""
    return rows.size > 0 and int(rows[-1]) - int(rows[0]) + 1 == rows.size and bool((np.diff(rows) == 1).all())


def _select_rows(block: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """block[rows]: the block itself or a view when the rows are consecutive, a copy only otherwise."""
    if _contiguous(rows):
        return block if rows.size == block.shape[0] else block[int(rows[0]) : int(rows[-1]) + 1]
    return block[rows]


def _rows_as_float32(block: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """block[rows] as float32: a view of a float32 block when the rows are consecutive, else one new array.

    A view is safe: the block is this reader's own fresh read, and batches take disjoint rows of it.
    """
    if _contiguous(rows):
        part = block[int(rows[0]) : int(rows[-1]) + 1]
        return part if part.dtype == np.float32 else part.astype(np.float32)
    return block[rows].astype(np.float32, copy=False)


def _exact_in_float32(dtype: np.dtype) -> bool:
    """float32 holds every value of `dtype` exactly and keeps distinct values distinct."""
    return (
        dtype == np.float32 or dtype == np.float16 or dtype.kind == "b" or (dtype.kind in "iu" and dtype.itemsize <= 2)
    )
