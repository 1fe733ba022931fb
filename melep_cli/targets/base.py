"""What every target reader shares: the Batch, the Target base class, label selection, record skips.

A target is the user's labelled ECG set. Its labels are known when it is opened (so a report can
state them before any signal is decoded); its signals are decoded lazily, in batches of bounded
size, every time `batches()` is called.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import math
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from melep_cli.errors import TargetError, UsageError
from melep_cli.preprocess import STANDARD_LEADS as STANDARD_LEADS  # re-exported: leads of a file naming none

log = logging.getLogger("melep")

#: How many record ids a skip warning names before it says "and N more".
NAMED_SKIPS = 5


@dataclass(frozen=True)
class Batch:
    """Decoded records of one sampling rate and one lead set, with their labels and ids."""

    signals: np.ndarray | list[np.ndarray]  # b records, each (T_i, L) float32 mV; uniform: one (b, T, L) array
    sampling_rate: float
    leads: tuple[str, ...]
    labels: np.ndarray  # (b, Y) uint8, columns in Target.label_names order
    ids: list[str]

    def __len__(self) -> int:
        return len(self.ids)


class RecordRead(NamedTuple):
    """One record as a reader decoded it: the signal, or why it could not be read."""

    index: int  # position in Target.record_ids
    signal: np.ndarray | None  # (T, L) float32 mV
    sampling_rate: float
    leads: tuple[str, ...]
    failure: str | None = None


class Target:
    """A labelled ECG set: labels known at open time, signals streamed by `batches()`.

    Subclasses set the record list and labels in their constructor and implement either
    `_iter_records()` (one record at a time) or `_batches()` (already batched, e.g. HDF5 slices).
    """

    format: str = ""

    def __init__(
        self,
        path: Path,
        *,
        label_names: Sequence[str],
        labels: np.ndarray,
        record_ids: Sequence[str],
        excluded: Sequence[tuple[str, str]] = (),
        strict: bool = False,
        label_source: str = "",
        label_aliases: Mapping[str, str] | None = None,
        excluded_labels: Sequence[tuple[str, str]] = (),
    ) -> None:
        self.path = Path(path)
        self.label_names: tuple[str, ...] = tuple(label_names)
        self.labels: np.ndarray = np.ascontiguousarray(labels, dtype=np.uint8).reshape(len(record_ids), -1)
        self.record_ids: list[str] = list(record_ids)
        self.strict = strict
        self.label_source = label_source
        #: Other names of the selected labels (SNOMED codes, equivalent abbreviations), name -> label.
        self.label_aliases: dict[str, str] = dict(label_aliases or {})
        #: Labels the default selection left out (too few positives, no negative): (name, reason).
        self.excluded_labels: list[tuple[str, str]] = list(excluded_labels)
        #: Records left out before decoding (no labels row, file absent, unreadable header): (id, reason).
        self.excluded: list[tuple[str, str]] = list(excluded)
        self._decode_skips: list[tuple[str, str]] = []
        #: Names given to the records' leads in order, replacing the file's (`rename_leads`); None: the file's.
        self.lead_names: tuple[str, ...] | None = None

    def rename_leads(self, names: Sequence[str]) -> None:
        """Name the records' leads `names`, in order, instead of what the files say (or the standard order)."""
        names = tuple(str(name).strip() for name in names)
        if not names or not all(names):
            raise UsageError("lead_names: expected one name per lead, e.g. I,II,III,aVR,aVL,aVF,V1,V2,V3,V4,V5,V6")
        self.lead_names = names

    # -- the contract -------------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.record_ids)

    @property
    def skipped(self) -> list[tuple[str, str]]:
        """(record id, reason) of every record left out: at open time, then while iterating."""
        return [*self.excluded, *self._decode_skips]

    def batches(self, batch_size: int = 64, positions: Sequence[int] | np.ndarray | None = None) -> Iterator[Batch]:
        """Decoded records, at most `batch_size` per batch, in record order; each call re-reads from the start.

        `positions`: decode only the records at these positions of `record_ids`, in this order (each at most
        once); None: every record. Records that cannot be read, contain NaN or are flat on every lead are
        skipped (a warning at the end names the first few); with strict=True the first such record raises
        TargetError.
        """
        if batch_size < 1:
            raise UsageError(f"batch size must be at least 1, got {batch_size}")
        chosen = self._check_positions(positions)
        self._decode_skips = []
        for batch in self._batches(batch_size, chosen):
            if self.lead_names is not None:
                if len(self.lead_names) != len(batch.leads):
                    raise TargetError(
                        f"{self.path}: {len(self.lead_names)} lead names given ({', '.join(self.lead_names)}) but "
                        f"record {batch.ids[0]} has {len(batch.leads)} leads ({', '.join(batch.leads)})"
                    )
                batch = replace(batch, leads=self.lead_names)
            yield batch
        if self._decode_skips:
            log.warning(f"{self.path}: skipped {describe_skips(self._decode_skips)}")

    def storage_blocks(self) -> list[np.ndarray]:
        """The record positions, grouped as they are stored together (an HDF5 chunk along the record axis): a
        reader that visits blocks in any order reads sequentially within each. Default: one record a block."""
        return [np.array([position], dtype=np.int64) for position in range(len(self))]

    def _check_positions(self, positions: Sequence[int] | np.ndarray | None) -> np.ndarray | None:
        if positions is None:
            return None
        chosen = np.asarray(positions, dtype=np.int64).reshape(-1)
        if chosen.size and (chosen.min() < 0 or chosen.max() >= len(self)):
            raise UsageError(f"positions must lie in 0..{len(self) - 1}", parameter="positions")
        if np.unique(chosen).size != chosen.size:
            raise UsageError("positions must not repeat a record", parameter="positions")
        return chosen

    def source_files(self) -> list[Path]:
        """Every file the records, their labels and their signals are read from (the outputs store fingerprints
        them: a changed file is a miss). Default: the target path and the labels CSV, if any."""
        return [self.path, *self.label_files]

    @property
    def label_files(self) -> list[Path]:
        """Label files beside the target itself (a labels_csv)."""
        return [self._labels_csv] if getattr(self, "_labels_csv", None) is not None else []

    @property
    def sampling_rates(self) -> tuple[float, ...]:
        """The native rates of the records, known at open time (empty: not known before decoding)."""
        return ()

    def decode_imports(self) -> tuple[str, ...]:
        """Modules decoding these records may import. The forward stage imports them before decoding moves to a
        worker thread: an import on a worker while another thread imports too can fail (KeyError: 'scipy')."""
        return ()

    def prevalence(self) -> np.ndarray:
        """Fraction of positives of every selected label over the selected records."""
        if len(self) == 0:
            return np.zeros(len(self.label_names))
        return self.labels.mean(axis=0, dtype=np.float64)

    def describe(self) -> dict[str, Any]:
        """What is known without decoding: format, records, labels with prevalence, records left out."""
        positives = self.labels.sum(axis=0, dtype=np.int64) if len(self) else np.zeros(len(self.label_names), int)
        return {
            "path": str(self.path),
            "format": self.format,
            "records": len(self),
            "label_source": self.label_source,
            "labels": [
                {"name": name, "positives": int(count), "prevalence": float(rate)}
                for name, count, rate in zip(self.label_names, positives, self.prevalence())
            ],
            "excluded": [{"id": record_id, "reason": reason} for record_id, reason in self.excluded],
        }

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.path)!r}, records={len(self)}, labels={list(self.label_names)})"

    # -- for subclasses -----------------------------------------------------------------------------------------
    def _iter_records(self, positions: np.ndarray | None) -> Iterator[RecordRead]:
        """One RecordRead per record at `positions` (None: every record), in that order."""
        raise NotImplementedError

    def _batches(self, batch_size: int, positions: np.ndarray | None) -> Iterator[Batch]:
        """Group records from `_iter_records()`: a new batch when full or when the rate or leads change."""
        pending: list[tuple[int, np.ndarray]] = []
        key: tuple[float, tuple[str, ...]] | None = None
        for read in self._iter_records(positions):
            failure = read.failure or bad_record_reason(read.signal)
            if failure is not None:
                self._skip(self.record_ids[read.index], failure)
                continue
            assert read.signal is not None
            record_key = (read.sampling_rate, read.leads)
            if pending and (record_key != key or len(pending) >= batch_size):
                yield self._make_batch(pending, *key)  # type: ignore[misc]
                pending = []
            key = record_key
            pending.append((read.index, read.signal))
        if pending:
            yield self._make_batch(pending, *key)  # type: ignore[misc]

    def _make_batch(self, records: Sequence[tuple[int, np.ndarray]], rate: float, leads: tuple[str, ...]) -> Batch:
        indices = np.fromiter((index for index, _ in records), dtype=np.int64, count=len(records))
        return Batch(
            signals=stack_if_uniform([signal for _, signal in records]),
            sampling_rate=float(rate),
            leads=tuple(leads),
            labels=self.labels[indices],
            ids=[self.record_ids[index] for index in indices],
        )

    def _skip(self, record_id: str, reason: str) -> None:
        if self.strict:
            raise TargetError(f"{self.path}: record {record_id}: {reason} (strict mode)")
        self._decode_skips.append((record_id, reason))


def stack_if_uniform(signals: Sequence[np.ndarray]) -> np.ndarray | list[np.ndarray]:
    """One (b, T, L) array when every record has the same shape, else the list."""
    if signals and all(signal.shape == signals[0].shape for signal in signals):
        return np.stack(signals)
    return list(signals)


def bad_record_reason(signal: np.ndarray | None) -> str | None:
    """Why a decoded (T, L) record is unusable, or None."""
    if signal is None or signal.ndim != 2 or signal.shape[0] == 0 or signal.shape[1] == 0:
        return "no samples"
    if not np.isfinite(signal).all():
        return "contains NaN or infinite values"
    if _is_flat(signal):
        return "flat on every lead"
    return None


def _is_flat(signal: np.ndarray) -> bool:
    """Every lead constant, i.e. every row equal to the first (for finite values; max == min per lead).

    Row comparisons instead of per-lead max and min: axis-0 reductions of a (T, L) C array are strided
    and several times slower; and a record whose last row differs from its first is answered at once.
    """
    if (signal[-1] != signal[0]).any():
        return False
    return not (signal != signal[0]).any()


def bad_rows(block: np.ndarray) -> list[str | None]:
    """`bad_record_reason` for every record of a (b, T, L) block, vectorised."""
    if block.shape[1] == 0 or block.shape[2] == 0:
        return ["no samples"] * block.shape[0]
    nonfinite = np.zeros(block.shape[0], dtype=bool)
    if block.dtype.kind in "fc":  # integers and booleans are always finite
        # In slices of about 2^20 values: the boolean temporary stays small whatever the block's size.
        step = max(1, (1 << 20) // (block.shape[1] * block.shape[2]))
        for first in range(0, block.shape[0], step):
            nonfinite[first : first + step] = ~np.isfinite(block[first : first + step]).all(axis=(1, 2))
    # Flat: every row equal to the first (see _is_flat); only records whose last row equals the first can be.
    flat = np.zeros(block.shape[0], dtype=bool)
    candidates = np.flatnonzero(~(block[:, -1] != block[:, 0]).any(axis=1))
    if candidates.size:
        suspects = block[candidates]
        flat[candidates] = ~(suspects != suspects[:, :1]).any(axis=(1, 2))
    reasons: list[str | None] = [None] * block.shape[0]
    for row in np.flatnonzero(flat):
        reasons[row] = "flat on every lead"
    for row in np.flatnonzero(nonfinite):
        reasons[row] = "contains NaN or infinite values"
    return reasons


def describe_skips(skips: Sequence[tuple[str, str]]) -> str:
    """'3 records (A1: flat on every lead, ...)' naming the first few."""
    named = ", ".join(f"{record_id}: {reason}" for record_id, reason in skips[:NAMED_SKIPS])
    more = f", and {len(skips) - NAMED_SKIPS} more" if len(skips) > NAMED_SKIPS else ""
    return f"{count_noun(len(skips), 'record')} ({named}{more})"


def count_noun(count: int, noun: str) -> str:
    """'1 record', '3 records'."""
    return f"{count:,} {noun}" + ("" if count == 1 else "s")


def describe_ids(ids: Sequence[str]) -> str:
    """'527, 563, 633, 722, 723 and 509 more'."""
    named = ", ".join(ids[:NAMED_SKIPS])
    return f"{named} and {len(ids) - NAMED_SKIPS} more" if len(ids) > NAMED_SKIPS else named


# -- record ids ----------------------------------------------------------------------------------------------------
def normalize_id(value: Any) -> str:
    """A record id as text: bytes decoded, whitespace stripped, integral numbers without '.0'."""
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if isinstance(value, (np.integer, int)) and not isinstance(value, bool):
        return str(int(value))
    if isinstance(value, (np.floating, float)):
        return str(int(value)) if math.isfinite(value) and float(value).is_integer() else str(value)
    text = str(value).strip()
    if re.fullmatch(r"[+-]?\d+\.0*", text):  # '123.0' -> '123' textually: float() overflows on long digit runs
        return str(int(text.split(".")[0]))
    return text


def check_unique_ids(record_ids: Sequence[str], source: Path | str) -> None:
    """TargetError naming the first id that occurs twice."""
    seen: set[str] = set()
    for record_id in record_ids:
        if record_id in seen:
            raise TargetError(f"{source}: record id {record_id!r} occurs more than once")
        seen.add(record_id)


# -- labels --------------------------------------------------------------------------------------------------------
#: Set by `every_label()`: the default selection keeps every label (`melep inspect` marks those below the threshold).
_EVERY_LABEL: contextvars.ContextVar[bool] = contextvars.ContextVar("melep_every_label", default=False)


@contextlib.contextmanager
def every_label() -> Iterator[None]:
    """Targets opened inside keep every label when no labels are requested, whatever `min_positives`.

    For `melep inspect`: the label counts are what one inspects a target for, also (above all) when no label
    reaches the threshold, which would make the target fail to open. A context variable rather than an
    `open_target` parameter, so that every reader and the opener's checks stay as they are for `rank`.
    """
    token = _EVERY_LABEL.set(True)
    try:
        yield
    finally:
        _EVERY_LABEL.reset(token)


def label_shortfall(positives: int, records: int, min_positives: int) -> str | None:
    """Why the default selection leaves a label out ('fewer than 10 positives', 'no negative'), or None."""
    if positives < min_positives:
        return f"fewer than {min_positives} positive{'' if min_positives == 1 else 's'}"
    if positives >= records:
        return "no negative"
    return None


def matrix_from_sets(label_sets: Sequence[Iterable[str]], names: Sequence[str]) -> np.ndarray:
    """(n, Y) uint8 with a 1 where record i has label names[j]."""
    column = {name: j for j, name in enumerate(names)}
    matrix = np.zeros((len(label_sets), len(names)), dtype=np.uint8)
    for i, record_labels in enumerate(label_sets):
        for name in record_labels:
            if name in column:
                matrix[i, column[name]] = 1
    return matrix


def names_by_count(label_sets: Sequence[Iterable[str]]) -> list[str]:
    """Every label that occurs, most frequent first (ties by name)."""
    counts: dict[str, int] = {}
    for record_labels in label_sets:
        for name in record_labels:
            counts[name] = counts.get(name, 0) + 1
    return sorted(counts, key=lambda name: (-counts[name], name))


def select_labels(
    names: Sequence[str],
    matrix: np.ndarray,
    requested: Sequence[str] | None,
    *,
    min_positives: int,
    source: Path | str,
    aliases: Mapping[str, str] | None = None,
    elsewhere: Mapping[str, str] | None = None,
) -> tuple[tuple[str, ...], np.ndarray, list[tuple[str, str]]]:
    """The target labels, their (n, Y) columns, and the labels the default selection left out with why.

    `requested` None: every label with at least `min_positives` positives and at least one negative (every
    label at all inside `every_label()`). Otherwise the requested labels in that order, each matched by name
    or alias (SNOMED code, an equivalent abbreviation), case-insensitively; a name that matches nothing is a
    TargetError that lists what exists. `elsewhere` maps names that exist under other options to a hint
    (a MelepError hint template: {parameter} for each parameter it names).
    """
    names = list(names)
    if not names:
        raise TargetError(f"{source}: no target labels at all (every record's label list is empty)")
    matrix = np.asarray(matrix, dtype=np.uint8).reshape(-1, len(names))
    positives = matrix.sum(axis=0, dtype=np.int64)
    negatives = matrix.shape[0] - positives
    if requested is None and _EVERY_LABEL.get():
        return tuple(names), matrix, []
    if requested is None:
        keep = [j for j in range(len(names)) if positives[j] >= min_positives and negatives[j] >= 1]
        kept = set(keep)
        left_out = [
            (
                names[j],
                f"{label_shortfall(int(positives[j]), len(matrix), min_positives)} ({positives[j]} of {len(matrix)})",
            )
            for j in range(len(names))
            if j not in kept
        ]
        if not keep:
            counts = ", ".join(f"{names[j]} {positives[j]}" for j in np.argsort(-positives, kind="stable")[:10])
            raise TargetError(
                f"{source}: no label has at least {min_positives} positives and one negative among "
                f"{matrix.shape[0]} records (most frequent: {counts or 'none'})",
                hint="lower {min_positives} or pass {labels}",
            )
        return tuple(names[j] for j in keep), matrix[:, keep], left_out

    lookup: dict[str, int] = {}
    for j, name in enumerate(names):
        lookup.setdefault(name.casefold(), j)
    for alias, name in (aliases or {}).items():
        if name in names:
            lookup.setdefault(str(alias).casefold(), names.index(name))
    chosen: list[int] = []
    missing: list[str] = []
    for label in requested:
        j = lookup.get(str(label).strip().casefold())
        if j is None:
            missing.append(str(label))
        elif j not in chosen:
            chosen.append(j)
    if missing:
        hints = [
            f"{_literal(name)} {elsewhere[name.casefold()]}" for name in missing if name.casefold() in (elsewhere or {})
        ]
        listing = ", ".join(names[:60]) + (f", ... ({len(names)} in all)" if len(names) > 60 else "")
        raise TargetError(
            f"{source}: label{'s' if len(missing) > 1 else ''} {', '.join(missing)} not found"
            f"; labels here: {listing or 'none'}",
            hint="; ".join(hints) or None,
        )
    for j in chosen:
        if positives[j] == 0 or negatives[j] == 0:
            kind = "no positive" if positives[j] == 0 else "no negative"
            log.warning(f"{source}: label {names[j]} has {kind} record; its MELEP term is degenerate")
    return tuple(names[j] for j in chosen), matrix[:, chosen], []


def _literal(text: str) -> str:
    """`text` (a label name from a file) as it reads inside a MelepError hint template."""
    return text.replace("{", "{{").replace("}", "}}")


# -- folds ---------------------------------------------------------------------------------------------------------
def parse_folds(value: str | int | Iterable[int] | None) -> frozenset[int] | None:
    """'9,10' / '1-8' / '1-3,9' / [9, 10] -> the fold numbers; None stays None."""
    if value is None:
        return None
    if isinstance(value, int):
        return frozenset({value})
    if not isinstance(value, str):
        return frozenset(int(fold) for fold in value)
    folds: set[int] = set()
    for part in value.split(","):
        part = part.strip()
        if not part:
            continue
        match = re.fullmatch(r"(\d+)\s*-\s*(\d+)|(\d+)", part)
        if match is None:
            raise UsageError(f"expected numbers and ranges like '9,10' or '1-8', got {value!r}", parameter="folds")
        if match.group(3) is not None:
            folds.add(int(match.group(3)))
        else:
            first, last = int(match.group(1)), int(match.group(2))
            if first > last:
                raise UsageError(f"range {part!r} runs backwards", parameter="folds")
            folds.update(range(first, last + 1))
    if not folds:
        raise UsageError(f"no fold in {value!r}", parameter="folds")
    return frozenset(folds)
