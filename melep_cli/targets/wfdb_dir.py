"""WFDB directories: every `*.hea` below the directory is a record, decoded one file at a time.

A multi-segment record is one record, under its master header's name; its segment headers are not records.

Labels come from the PhysioNet/CinC Challenge `#Dx:` SNOMED CT codes in the headers, or from a
labels CSV (`--labels-csv`) joined by record name.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from melep_cli.errors import TargetError
from melep_cli.targets.base import (
    RecordRead,
    Target,
    check_unique_ids,
    describe_skips,
    matrix_from_sets,
    names_by_count,
    select_labels,
)
from melep_cli.targets.challenge import (
    check_invalid_samples,
    dx_codes,
    load_dx_mapping,
    missing_samples_error,
    physical,
    read_mat_signal,
)
from melep_cli.targets.labels_csv import join_labels, read_labels_csv
from melep_cli.targets.wfdb_header import UNIT_TO_MV, Header, parse_header, resolve_segments

log = logging.getLogger("melep")


def read_wfdb_signal(header: Header) -> np.ndarray:
    """One record as (T, L) float32 millivolts.

    `.mat` (Challenge) files go through scipy.io.loadmat, other formats through wfdb.rdrecord in
    physical units. The one exception is plain format 16 in a single file (PTB-XL, most ECG sets): it
    is little-endian int16 interleaved by lead, read here in one read viewed by numpy: wfdb.rdrecord
    parses every header field through pandas, about 5 ms a record against 0.04 ms here on PTB-XL (half a
    minute for a few thousand records), and rejects the Challenge headers. The tests check that both give
    the same millivolts. Multi-segment records are read by wfdb.rdrecord on the master header, which joins
    the segments.

    A record with missing samples (WFDB's invalid-sample value, which wfdb reads as NaN) is a TargetError
    with the same reason on every path (`missing_samples_error`): the caller skips it.
    """
    if header.n_signals == 0:
        raise TargetError(f"{header.path}: no signals")
    if header.segments:
        _check_signal_files(header, header.segment_files, segment=True)
        return _read_with_wfdb(header)
    files = header._signal_files
    if len(files) == 1 and (files[0].endswith(".mat") or all(signal.plain_format16 for signal in header.signals)):
        # No stat before reading: a missing file is told apart from a broken one only when the read fails.
        try:
            return read_mat_signal(header) if files[0].endswith(".mat") else _read_format16(header)
        except TargetError:
            _check_signal_files(header, files)
            raise
    _check_signal_files(header, files)
    if all(name.endswith(".mat") for name in files):
        raise TargetError(f"{header.path}: signals spread over several .mat files")
    return _read_with_wfdb(header)


def _read_with_wfdb(header: Header) -> np.ndarray:
    """wfdb.rdrecord's physical signal in millivolts; NaN (missing samples) is `missing_samples_error`."""
    import wfdb  # imported here: wfdb brings pandas (0.2 s), and PTB-XL-style records never need it

    record_path = header.path.with_suffix("")
    try:
        record = wfdb.rdrecord(str(record_path), physical=True)
    except Exception as error:  # wfdb raises many types (ValueError, HeaderSyntaxError, OSError, ...)
        raise TargetError(f"{header.path}: wfdb cannot read the record ({type(error).__name__}: {error})") from None
    if record.p_signal is None:
        raise TargetError(f"{header.path}: wfdb returned no signal")
    missing = np.isnan(record.p_signal)
    if missing.any():
        leads = header.leads if len(header.leads) == missing.shape[1] else tuple(record.sig_name or ())
        raise missing_samples_error(header, missing.sum(axis=0), leads)
    scale = np.array([_mv_factor(unit) for unit in (record.units or ["mV"] * record.n_sig)])
    return (record.p_signal * scale).astype(np.float32)


def _check_signal_files(header: Header, files: Sequence[str], *, segment: bool = False) -> None:
    """TargetError naming the first signal file (in name order) that is not there."""
    for name in files:
        if not (header.path.parent / name).is_file():
            named = f"a segment of {header.path.name}" if segment else f"named in {header.path.name}"
            raise TargetError(f"{header.path.parent / name}: signal file missing ({named})") from None


def _mv_factor(unit: str | None) -> float:
    return UNIT_TO_MV.get((unit or "mV").casefold(), 1.0)


def _read_format16(header: Header) -> np.ndarray:
    signal = header.signals[0]
    data_path = header.path.parent / signal.file_name
    adu = _read_whole_int16(data_path) if signal.byte_offset == 0 else None
    if adu is None:
        try:
            adu = np.fromfile(data_path, dtype="<i2", offset=signal.byte_offset)
        except OverflowError:
            raise TargetError(f"{header.path}: byte offset {signal.byte_offset} is out of range") from None
        except (OSError, ValueError) as error:
            raise TargetError(f"{data_path}: cannot read ({error})") from None
    frames = adu.size // header.n_signals
    if header.n_samples and frames < header.n_samples:
        raise TargetError(f"{data_path}: {frames} samples per lead, the header announces {header.n_samples}")
    adu = adu[: frames * header.n_signals].reshape(frames, header.n_signals)
    if header.n_samples:
        adu = adu[: header.n_samples]
    check_invalid_samples(adu, header)
    return physical(adu, header)


def _read_whole_int16(data_path: Path) -> np.ndarray | None:
    """A whole file as little-endian int16 (a trailing odd byte ignored, as np.fromfile does), or None if unreadable.

    One read into bytes viewed by numpy: a quarter cheaper than np.fromfile on a 24 kB record. On any
    error the caller goes through np.fromfile, so the error message stays np.fromfile's.
    """
    try:
        with open(data_path, "rb", buffering=0) as handle:  # unbuffered: one read of the whole file
            data = handle.read()
    except OSError:
        return None
    return np.frombuffer(data, dtype="<i2", count=len(data) // 2)


def _with_path(header_path: Path, error: Exception) -> str:
    """The error's message, starting with the header's path."""
    return str(error) if str(error).startswith(str(header_path)) else f"{header_path}: {error}"


def find_headers(directory: Path) -> list[Path]:
    """Every `*.hea` below `directory`, in path order."""
    return sorted(path for path in directory.rglob("*.hea") if path.is_file())


class WfdbTarget(Target):
    """A directory of WFDB records: Challenge `#Dx` labels, or a labels CSV joined by record name."""

    format = "wfdb"

    def __init__(
        self,
        path: Path,
        *,
        labels: Sequence[str] | None = None,
        labels_csv: str | Path | None = None,
        min_positives: int = 10,
        strict: bool = False,
    ) -> None:
        header_paths = find_headers(path)
        if not header_paths:
            raise TargetError(f"{path}: no WFDB header (*.hea) below this directory")
        headers, excluded = self._read_headers(path, header_paths, strict)
        ids = [header.path.stem for header in headers]
        check_unique_ids(ids, path)

        aliases: dict[str, str] = {}
        elsewhere: dict[str, str] = {}
        code_of: dict[str, str] = {}
        self.challenge = False
        if labels_csv is not None:
            table = read_labels_csv(labels_csv)
            join = join_labels(ids, table, source=path, strict=strict)
            excluded += [(record_id, f"no row in {table.path.name}") for record_id in join.missing_in_csv]
            headers = [headers[i] for i in join.record_positions]
            names, matrix = list(table.names), join.matrix
            elsewhere = table.not_binary_hints()
            label_source = f"{table.path} (column {table.id_column!r} joined to record names)"
        else:
            codes = [dx_codes(header) for header in headers]
            if all(record_codes is None for record_codes in codes):
                raise TargetError(f"{path}: no '#Dx:' line in any header; pass --labels-csv with the labels")
            without = [(header.path.stem, "no #Dx line") for header, c in zip(headers, codes) if c is None]
            if without:
                if strict:
                    raise TargetError(f"{without[0][0]}: header has no '#Dx:' line (strict mode)")
                log.warning(f"{path}: left out {describe_skips(without)}")
                excluded += without
                headers = [header for header, c in zip(headers, codes) if c is not None]
                codes = [c for c in codes if c is not None]
            names, matrix, aliases, code_of = self._challenge_labels(path, codes)  # type: ignore[arg-type]
            self.challenge = True
            label_source = "#Dx SNOMED CT codes in the headers"
        label_names, label_matrix, excluded_labels = select_labels(
            names, matrix, labels, min_positives=min_positives, source=path, aliases=aliases, elsewhere=elsewhere
        )
        self.headers = headers
        self._labels_csv = Path(labels_csv) if labels_csv is not None else None
        mapping = load_dx_mapping()
        #: SNOMED CT code of every selected label (Challenge targets; the label name itself otherwise).
        self.label_codes = tuple(code_of.get(label, label) for label in label_names)
        self._dx_names = {label: mapping.name.get(code, "") for label, code in zip(label_names, self.label_codes)}
        super().__init__(
            path,
            label_names=label_names,
            labels=label_matrix,
            excluded_labels=excluded_labels,
            record_ids=[header.path.stem for header in headers],
            excluded=excluded,
            strict=strict,
            label_source=label_source,
            label_aliases={alias: name for alias, name in aliases.items() if name in label_names},
        )

    @staticmethod
    def _read_headers(
        path: Path, header_paths: Sequence[Path], strict: bool
    ) -> tuple[list[Header], list[tuple[str, str]]]:
        """The records' headers and the records left out (id, reason) because their header cannot be read.

        The segment headers of multi-segment records are parts of their master's record, never records of their
        own (whether or not they parse): they are set aside before the masters are resolved, so a master whose
        segment is missing is left out alone, under its own name.
        """
        parsed: list[Header] = []
        failed: list[tuple[Path, str]] = []
        for header_path in header_paths:
            try:
                parsed.append(parse_header(header_path, segments=False))
            except (TargetError, ValueError) as error:
                failed.append((header_path, _with_path(header_path, error)))
        segment_paths = {
            header.path.parent / f"{name}.hea" for header in parsed for name, _ in header.segments if name != "~"
        }
        headers: list[Header] = []
        for header in parsed:
            if header.path in segment_paths:
                continue
            try:
                headers.append(resolve_segments(header) if header.segments else header)
            except TargetError as error:
                failed.append((header.path, str(error)))
        failed = sorted((item for item in failed if item[0] not in segment_paths), key=lambda item: item[0])
        if failed and strict:
            raise TargetError(f"{failed[0][1]} (strict mode)")
        excluded = [(header_path.stem, message) for header_path, message in failed]
        if not headers:
            raise TargetError(f"{path}: no readable WFDB header among {len(header_paths)} (first: {excluded[0][1]})")
        if excluded:
            log.warning(f"{path}: left out {describe_skips(excluded)} whose header cannot be read")
        return headers, excluded

    @staticmethod
    def _challenge_labels(
        path: Path, codes: list[list[str]]
    ) -> tuple[list[str], np.ndarray, dict[str, str], dict[str, str]]:
        """Label names (abbreviations, equivalents merged, unknown codes as themselves), matrix, aliases, codes."""
        mapping = load_dx_mapping()
        label_sets = [{mapping.label_name(code) for code in record_codes} for record_codes in codes]
        aliases = mapping.aliases()
        unknown: dict[str, int] = {}
        for record_codes in codes:
            for code in set(record_codes):
                if code not in mapping.abbreviation:
                    unknown[code] = unknown.get(code, 0) + 1
                    aliases[code] = code
        if unknown:
            listed = ", ".join(f"{code} ({count} record{'s' if count > 1 else ''})" for code, count in unknown.items())
            log.warning(f"{path}: SNOMED CT codes in no mapping, kept as labels under their code: {listed}")
        names = names_by_count(label_sets)
        code_of = {
            mapping.label_name(code): mapping.canonical_code(code) for record_codes in codes for code in record_codes
        }
        return names, matrix_from_sets(label_sets, names), aliases, code_of

    def source_files(self) -> list[Path]:
        """Every header, the signal files it names, and the labels CSV."""
        files = [*self.label_files]
        for header in self.headers:
            files.append(header.path)
            names = header.segment_files if header.segments else header._signal_files
            files.extend(header.path.parent / name for name in names)
        return files

    @property
    def sampling_rates(self) -> tuple[float, ...]:
        return tuple(sorted({float(header.sampling_rate) for header in self.headers}))

    def decode_imports(self) -> tuple[str, ...]:
        modules: list[str] = []
        for header in self.headers:
            files = header._signal_files
            if any(name.endswith(".mat") for name in files):
                modules.append("scipy.io")
            if (
                header.segments
                or len(files) != 1
                or not (files[0].endswith(".mat") or all(s.plain_format16 for s in header.signals))
            ):
                modules.append("wfdb")  # read_wfdb_signal's general path, and multi-segment records
        return tuple(dict.fromkeys(modules))

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        if self.challenge:
            for entry, code in zip(info["labels"], self.label_codes):
                entry["snomed_code"] = code
                entry["description"] = self._dx_names.get(entry["name"], "")
        rates = sorted({header.sampling_rate for header in self.headers})
        lengths = [header.n_samples / header.sampling_rate for header in self.headers if header.n_samples]
        info.update(
            header_sampling_rates=rates,
            header_seconds=[min(lengths), max(lengths)] if lengths else None,
        )
        return info

    def _iter_records(self, positions: np.ndarray | None) -> Iterator[RecordRead]:
        for index in range(len(self)) if positions is None else positions.tolist():
            header = self.headers[index]
            leads = header.leads
            try:
                signal = read_wfdb_signal(header)
            except TargetError as error:
                yield RecordRead(index, None, header.sampling_rate, leads, str(error))
                continue
            if signal.ndim != 2 or signal.shape[1] != len(leads):
                yield RecordRead(index, None, header.sampling_rate, leads, f"signal shape {signal.shape} for {leads}")
                continue
            yield RecordRead(index, signal, header.sampling_rate, leads)
