"""PTB-XL directories (`ptbxl_database.csv` + `scp_statements.csv` + `records100/`, `records500/`).

Labels come from `scp_codes` (a Python-literal dict of SCP statement -> likelihood; every listed
statement counts, as in PTB-XL's own example code) at one of several levels: the five diagnostic
superclasses (default), subclasses, diagnostic/form/rhythm statements, or all statements.
"""

from __future__ import annotations

import ast
import csv
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from melep_cli.errors import TargetError, UsageError
from melep_cli.targets.base import (
    RecordRead,
    Target,
    count_noun,
    describe_ids,
    matrix_from_sets,
    names_by_count,
    select_labels,
)
from melep_cli.targets.wfdb_dir import read_wfdb_signal
from melep_cli.targets.wfdb_header import parse_header

log = logging.getLogger("melep")

DATABASE_CSV = "ptbxl_database.csv"
STATEMENTS_CSV = "scp_statements.csv"
LABEL_LEVELS = ("superclass", "subclass", "diagnostic", "form", "rhythm", "all")
#: The diagnostic superclasses in the order PTB-XL's benchmark reports them.
SUPERCLASSES = ("NORM", "MI", "STTC", "HYP", "CD")
FILE_COLUMNS = {100: "filename_lr", 500: "filename_hr"}


def _flag(value: str | None) -> bool:
    try:
        return float(value or 0) == 1.0
    except ValueError:
        return False


def read_statements(path: Path) -> dict[str, dict[str, str]]:
    """scp_statements.csv: statement -> its row (the first, unnamed column is the statement)."""
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            reader = csv.reader(handle)
            header = next(reader)
            rows = {row[0].strip(): dict(zip(header, row)) for row in reader if row and row[0].strip()}
    except (OSError, StopIteration, csv.Error, UnicodeDecodeError) as error:
        raise TargetError(f"{path}: cannot read PTB-XL statements ({error or 'empty file'})") from None
    for column in ("diagnostic", "form", "rhythm", "diagnostic_class", "diagnostic_subclass"):
        if column not in header:
            raise TargetError(f"{path}: no {column!r} column")
    return rows


def statement_labels(statements: dict[str, dict[str, str]], codes: Sequence[str], level: str) -> set[str]:
    """The labels of one record at `level`, from its SCP statements."""
    known = [code for code in codes if code in statements]
    if level == "all":
        return set(codes)
    if level in ("superclass", "subclass"):
        column = "diagnostic_class" if level == "superclass" else "diagnostic_subclass"
        return {
            statements[code][column].strip()
            for code in known
            if _flag(statements[code]["diagnostic"]) and statements[code][column].strip()
        }
    return {code for code in known if _flag(statements[code][level])}


class PtbxlTarget(Target):
    """A PTB-XL tree: records chosen by fold and sampling rate, labels at the chosen level."""

    format = "ptbxl"

    def __init__(
        self,
        path: Path,
        *,
        labels: Sequence[str] | None = None,
        ptbxl_labels: str = "superclass",
        min_positives: int = 10,
        folds: frozenset[int] | None = None,
        sampling_rate: float | None = None,
        strict: bool = False,
    ) -> None:
        if ptbxl_labels not in LABEL_LEVELS:
            raise UsageError(f"{ptbxl_labels!r} is not one of {', '.join(LABEL_LEVELS)}", parameter="ptbxl_labels")
        rate = 100 if sampling_rate is None else round(float(sampling_rate))
        if rate not in FILE_COLUMNS or abs(float(sampling_rate or rate) - rate) > 1e-9:
            raise UsageError(f"{path}: PTB-XL records exist at 100 and 500 Hz, not {sampling_rate:g}")
        self.level = ptbxl_labels
        self.folds = folds
        self.native_rate = float(rate)
        statements = read_statements(path / STATEMENTS_CSV)
        database = path / DATABASE_CSV
        ids: list[str] = []
        files: list[Path] = []
        code_lists: list[list[str]] = []
        excluded: list[tuple[str, str]] = []
        try:
            with database.open(newline="", encoding="utf-8") as handle:
                reader = csv.DictReader(handle)
                needed = {"ecg_id", "scp_codes", "strat_fold", FILE_COLUMNS[rate]}
                missing = needed - set(reader.fieldnames or ())
                if missing:
                    raise TargetError(f"{database}: no column {', '.join(sorted(missing))}")
                for line, row in enumerate(reader, start=2):
                    try:
                        ecg_id = str(int(float(row["ecg_id"])))
                        fold = int(float(row["strat_fold"]))
                        scp = ast.literal_eval(row["scp_codes"])
                    except (ValueError, SyntaxError) as error:
                        raise TargetError(
                            f"{database}: line {line}: cannot read ecg_id/strat_fold/scp_codes ({error})"
                        ) from None
                    if not isinstance(scp, dict):
                        raise TargetError(f"{database}: line {line}: scp_codes is not a dict")
                    if folds is not None and fold not in folds:
                        continue
                    record = path / row[FILE_COLUMNS[rate]].strip()
                    if not record.with_name(record.name + ".hea").is_file():
                        excluded.append((ecg_id, f"no {rate} Hz record {record.relative_to(path)}.hea"))
                        continue
                    ids.append(ecg_id)
                    files.append(record)
                    code_lists.append([str(code) for code in scp])
        except OSError as error:
            raise TargetError(f"{database}: cannot read ({error})") from None
        if excluded:
            message = f"{path}: left out {count_noun(len(excluded), 'record')} with no {rate} Hz file"
            if strict:
                raise TargetError(f"{message} (strict mode; first: ecg_id {excluded[0][0]})")
            log.warning(f"{message} (ecg_id {describe_ids([i for i, _ in excluded])})")
        if not ids:
            chosen = f" in folds {sorted(folds)}" if folds is not None else ""
            raise TargetError(f"{path}: no record{chosen} with a {rate} Hz file")
        label_sets = [statement_labels(statements, codes, ptbxl_labels) for codes in code_lists]
        names = names_by_count(label_sets)
        if ptbxl_labels == "superclass":
            names = [name for name in SUPERCLASSES if name in names] + [n for n in names if n not in SUPERCLASSES]
        matrix = matrix_from_sets(label_sets, names)
        elsewhere = self._elsewhere(statements, ptbxl_labels)
        label_names, label_matrix, excluded_labels = select_labels(
            names, matrix, labels, min_positives=min_positives, source=path, elsewhere=elsewhere
        )
        self.files = files
        self._header_paths = [record.with_name(record.name + ".hea") for record in files]
        self.statement_descriptions = {code: row.get("description", "") for code, row in statements.items()}
        super().__init__(
            path,
            label_names=label_names,
            labels=label_matrix,
            excluded_labels=excluded_labels,
            record_ids=ids,
            excluded=excluded,
            strict=strict,
            label_source=f"{DATABASE_CSV} scp_codes ({ptbxl_labels})",
        )

    @staticmethod
    def _elsewhere(statements: dict[str, dict[str, str]], level: str) -> dict[str, str]:
        """For a label not found at this level: which ptbxl_labels level has it (hint templates)."""
        hints: dict[str, str] = {}
        for other in LABEL_LEVELS:
            if other == level:
                continue
            names = {label for code in statements for label in statement_labels(statements, [code], other)}
            for name in names:
                hints.setdefault(name.casefold(), f"is a PTB-XL {other} label: pass {{ptbxl_labels}} {other}")
        return hints

    def source_files(self) -> list[Path]:
        """The two CSVs and the selected records' header and signal files (not the whole tree: both rates)."""
        signals = [record.with_name(record.name + ".dat") for record in self.files]
        return [self.path / DATABASE_CSV, self.path / STATEMENTS_CSV, *self._header_paths, *signals]

    @property
    def sampling_rates(self) -> tuple[float, ...]:
        return (self.native_rate,)

    def decode_imports(self) -> tuple[str, ...]:
        # PTB-XL's records are format 16 and read without wfdb, but a header that is not is read by wfdb.
        return ("wfdb",)

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        info.update(
            label_level=self.level,
            folds=sorted(self.folds) if self.folds is not None else None,
            sampling_rate=self.native_rate,
        )
        if self.level in ("diagnostic", "form", "rhythm", "all"):
            for entry in info["labels"]:
                entry["description"] = self.statement_descriptions.get(entry["name"], "")
        return info

    def _iter_records(self, positions: np.ndarray | None) -> Iterator[RecordRead]:
        for index in range(len(self)) if positions is None else positions.tolist():
            header_path = self._header_paths[index]
            try:
                header = parse_header(header_path)
                signal = read_wfdb_signal(header)
            except TargetError as error:
                yield RecordRead(index, None, self.native_rate, (), str(error))
                continue
            if signal.ndim != 2 or signal.shape[1] != header.n_signals:
                yield RecordRead(index, None, header.sampling_rate, header.leads, f"signal shape {signal.shape}")
                continue
            yield RecordRead(index, signal, header.sampling_rate, header.leads)
