"""Labels from a CSV (`labels_csv`): one row per record id, one 0/1 column per label.

The CODE-15% `exams.csv` has this shape. Rows are matched to records by id, never by position;
ids on either side without a partner are reported.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from melep_cli.errors import TargetError
from melep_cli.targets.base import count_noun, describe_ids, normalize_id

log = logging.getLogger("melep")

#: Column names taken as the record id (case-insensitive), in order of preference; else the first column.
ID_COLUMNS = ("record_id", "record", "exam_id", "ecg_id", "id", "filename")

_TRUE = {"1", "1.0", "true", "t", "yes"}
_FALSE = {"0", "0.0", "false", "f", "no"}


@dataclass(frozen=True)
class LabelTable:
    """A labels CSV: ids, the 0/1 label columns, and the columns that were not 0/1."""

    path: Path
    id_column: str
    ids: list[str]
    names: tuple[str, ...]
    matrix: np.ndarray  # (rows, Y) uint8
    other_columns: tuple[str, ...] = field(default=())

    def not_binary_hints(self) -> dict[str, str]:
        """For label-selection errors: a requested column that exists but is not 0/1."""
        return {name.casefold(): "is a column of the labels CSV but not 0/1" for name in self.other_columns}


def read_labels_csv(path: str | Path) -> LabelTable:
    """Read a labels CSV; the label columns are those whose every value is 0/1 (or true/false)."""
    path = Path(path)
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            rows = list(csv.reader(handle))
    except FileNotFoundError:
        raise TargetError(f"{path}: labels CSV not found") from None
    except UnicodeDecodeError as error:
        raise TargetError(
            f"{path}: labels CSV is not UTF-8 text (byte {error.object[error.start]:#04x} at offset {error.start}); "
            "save it as UTF-8"
        ) from None
    except (OSError, csv.Error) as error:
        raise TargetError(f"{path}: cannot read labels CSV ({error})") from None
    rows = [row for row in rows if any(cell.strip() for cell in row)]
    if len(rows) < 2:
        raise TargetError(f"{path}: labels CSV needs a header row and at least one record row")
    header = [cell.strip() for cell in rows[0]]
    body = rows[1:]
    width = len(header)
    for line, row in enumerate(body, start=2):
        if len(row) != width:
            raise TargetError(f"{path}: row {line} has {len(row)} fields, the header has {width}")
    folded = [name.casefold() for name in header]
    id_index = next((folded.index(name) for name in ID_COLUMNS if name in folded), 0)
    columns = list(zip(*body))
    names: list[str] = []
    values: list[np.ndarray] = []
    others: list[str] = []
    for j, name in enumerate(header):
        if j == id_index:
            continue
        cells = [cell.strip().casefold() for cell in columns[j]]
        truth = np.fromiter((cell in _TRUE for cell in cells), dtype=bool, count=len(cells))
        falsity = np.fromiter((cell in _FALSE for cell in cells), dtype=bool, count=len(cells))
        if (truth | falsity).all():
            names.append(name)
            values.append(truth.astype(np.uint8))
        else:
            others.append(name)
    if not names:
        raise TargetError(f"{path}: no 0/1 label column (columns: {', '.join(header)})")
    ids = [normalize_id(cell) for cell in columns[id_index]]
    seen: set[str] = set()
    for record_id in ids:
        if record_id in seen:
            raise TargetError(f"{path}: record id {record_id!r} occurs in more than one row")
        seen.add(record_id)
    return LabelTable(path, header[id_index], ids, tuple(names), np.stack(values, axis=1), tuple(others))


@dataclass(frozen=True)
class Join:
    """Records that have a labels row, their label rows, and the ids without a partner."""

    record_positions: np.ndarray  # indices into the target's record list, ascending
    matrix: np.ndarray  # (len(record_positions), Y) uint8
    missing_in_csv: list[str]  # target records with no row
    missing_in_target: list[str]  # CSV rows with no record


def join_labels(record_ids: Sequence[str], table: LabelTable, *, source: Path | str, strict: bool = False) -> Join:
    """Match labels rows to records by id and report the ids that have no partner (warnings)."""
    row_of = {record_id: row for row, record_id in enumerate(table.ids)}
    positions = [i for i, record_id in enumerate(record_ids) if record_id in row_of]
    missing_in_csv = [record_id for record_id in record_ids if record_id not in row_of]
    present = set(record_ids)
    missing_in_target = [record_id for record_id in table.ids if record_id not in present]
    if not positions:
        example_record = record_ids[0] if record_ids else "none"
        raise TargetError(
            f"{table.path}: no id in column {table.id_column!r} matches a record of {source} "
            f"(record ids look like {example_record!r}, CSV ids like {table.ids[0]!r})"
        )
    if missing_in_csv:
        message = f"{source}: left out {count_noun(len(missing_in_csv), 'record')} with no row in {table.path.name}"
        if strict:
            raise TargetError(f"{message} (strict mode; first: {missing_in_csv[0]})")
        log.warning(f"{message} ({describe_ids(missing_in_csv)})")
    if missing_in_target:
        log.warning(
            f"{table.path}: {count_noun(len(missing_in_target), 'row')} for records not in {source} "
            f"({describe_ids(missing_in_target)})"
        )
    rows = np.fromiter((row_of[record_ids[i]] for i in positions), dtype=np.int64, count=len(positions))
    return Join(np.asarray(positions, dtype=np.int64), table.matrix[rows], missing_in_csv, missing_in_target)
