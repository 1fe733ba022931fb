"""WFDB headers as PhysioNet/CinC Challenge 2020/2021 files really are, and their SNOMED CT labels.

Why a hand-written header parser: `wfdb.rdheader` rejects real Challenge headers (the Georgia
record lines start `E00271.mat 12 500 5000`, a file name where the record name belongs; dates like
`05-May-2020` are non-standard), and it does not expose the `#Dx:` comments in a form we can
validate. The parser below reads only the fields we need (rate, length, per-signal file, format,
gain, baseline, units, lead name, comments) and tolerates those quirks. Signals in `.dat` files are
still decoded with `wfdb.rdrecord` wherever wfdb can read the header. A multi-segment master header
(`name/segments ...` and one `segment samples` line each) takes its leads from its layout or first
segment header (`resolve_segments`); wfdb.rdrecord joins the segments.

WFDB's invalid-sample value (the lowest value of each format, -32768 in format 16) marks a missing
sample; wfdb reads it as NaN. `check_invalid_samples` finds it where melep decodes the samples itself,
so that such a record is skipped with one reason (`missing_samples_error`) whichever path reads it.

The SNOMED CT -> abbreviation table `melep_cli/data/dx_mapping.csv` is the Challenge 2021 mapping
(physionetchallenges/evaluation-2021, MIT License) with the scored equivalence pairs merged.
"""

from __future__ import annotations

import csv
import functools
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path

import numpy as np

from melep_cli.errors import TargetError

#: Physical units -> factor to millivolts.
UNIT_TO_MV = {"mv": 1.0, "uv": 1e-3, "μv": 1e-3, "µv": 1e-3, "nv": 1e-6, "v": 1e3}
#: WFDB's default gain (adu per physical unit) when a header gives 0 or none.
DEFAULT_GAIN = 200.0
#: WFDB's invalid-sample value of every storage format (the format's lowest value; wfdb reads it as NaN).
#: Format 8 (first differences) has none. The same table as wfdb's `_signal.INVALID_SAMPLE_VALUE`.
INVALID_SAMPLE = {
    "80": -(2**7),
    "508": -(2**7),
    "310": -(2**9),
    "311": -(2**9),
    "212": -(2**11),
    "16": -(2**15),
    "61": -(2**15),
    "160": -(2**15),
    "516": -(2**15),
    "24": -(2**23),
    "524": -(2**23),
    "32": -(2**31),
}


@dataclass(frozen=True)
class SignalSpec:
    """One signal line of a WFDB header."""

    file_name: str
    fmt: str
    byte_offset: int
    gain: float  # adu per physical unit
    baseline: float  # adu that means 0
    units: str
    name: str
    plain_format16: bool = False  # format 16, no samples-per-frame or skew: readable with np.fromfile

    @property
    def mv_per_unit(self) -> float:
        return UNIT_TO_MV.get(self.units.casefold(), 1.0)


@dataclass(frozen=True)
class Header:
    """What a WFDB header says about one record."""

    path: Path
    record_name: str
    n_signals: int
    sampling_rate: float
    n_samples: int | None
    signals: tuple[SignalSpec, ...]
    comments: tuple[str, ...]
    #: Multi-segment records: (name, samples) of every segment ('~': a null segment, no signal); () otherwise.
    segments: tuple[tuple[str, int], ...] = ()
    #: Multi-segment records: the segments' headers and signal files, relative to the master header's folder.
    segment_files: tuple[str, ...] = ()

    @property
    def leads(self) -> tuple[str, ...]:
        return tuple(signal.name for signal in self.signals)

    def comment(self, key: str) -> str | None:
        """The value of a `#Key: value` comment, or None."""
        for line in self.comments:
            name, colon, value = line.partition(":")
            if colon and name.strip().casefold() == key.casefold():
                return value.strip()
        return None

    @functools.cached_property
    def _adu_to_mv(self) -> tuple[float | np.ndarray | None, float | np.ndarray]:
        """(baseline, scale) for `physical`: one number when every signal shares it, None for a zero baseline.

        Computed once per header (not per decode), and as scalars in the common case because numpy's
        broadcasting of a 12-element row over (T, 12) runs 12-element inner loops, 4x slower than a scalar.
        """
        return _coefficients(self.signals)

    @functools.cached_property
    def _signal_files(self) -> tuple[str, ...]:
        """The distinct signal file names, sorted (of every segment, for a multi-segment record)."""
        if self.segments:
            return tuple(sorted({name for name in self.segment_files if not name.endswith(".hea")}))
        return tuple(sorted({signal.file_name for signal in self.signals}))

    @functools.cached_property
    def _invalid_values(self) -> float | np.ndarray | None:
        """Every signal's invalid-sample value: one number when the formats agree, NaN for a format without one
        (never equal to a sample), None when no signal has one."""
        values = [INVALID_SAMPLE.get(signal.fmt) for signal in self.signals]
        if all(value is None for value in values):
            return None
        if all(value == values[0] for value in values):
            return values[0]
        return np.array([np.nan if value is None else value for value in values])


def _coefficients(signals: Sequence[SignalSpec]) -> tuple[float | np.ndarray | None, float | np.ndarray]:
    """`Header._adu_to_mv` of these signals (all of a header's, or one standing for all that equal it)."""
    baselines = [signal.baseline for signal in signals]
    scales = [signal.mv_per_unit / signal.gain for signal in signals]
    baseline: float | np.ndarray | None
    if all(value == 0.0 and math.copysign(1.0, value) > 0 for value in baselines):
        baseline = None  # x - 0.0 == x bit for bit (x - (-0.0) is not, for x = -0.0)
    else:
        baseline = baselines[0] if _all_same(baselines) else np.array(baselines)
    return baseline, scales[0] if _all_same(scales) else np.array(scales)


def _all_same(values: list[float]) -> bool:
    """Every value equal to the first, sign of zero included (so a scalar gives the same bits as the array)."""
    first = values[0]
    return all(value == first and math.copysign(1.0, value) == math.copysign(1.0, first) for value in values)


_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


def _leading_number(text: str, what: str, path: Path) -> float:
    match = _NUMBER.match(text)
    if match is None:
        raise TargetError(f"{path}: header {what} {text!r} is not a number")
    value = float(match.group(0))
    if not math.isfinite(value):
        raise TargetError(f"{path}: header {what} {text!r} is out of range")
    return value


def _count(text: str, what: str, path: Path) -> int:
    """A non-negative whole number from the header (number of signals, of samples)."""
    value = _leading_number(text, what, path)
    if value < 0 or not value.is_integer():
        raise TargetError(f"{path}: header {what} {text!r} is not a whole number >= 0")
    return int(value)


def parse_header(path: str | Path, *, segments: bool = True) -> Header:
    """Parse a WFDB `.hea` robustly (see the module docstring); TargetError naming the file if it is unusable.

    A multi-segment master header gets its signals from its segment headers (`resolve_segments`); with
    segments=False it is returned as its own lines say, without reading them.
    """
    path = path if isinstance(path, Path) else Path(path)
    try:
        # Unbuffered bytes, then latin-1: what read_text(encoding="latin-1") gives (splitlines() treats \r, \n
        # and \r\n alike, so newline translation changes nothing), without the buffered text layers' overhead.
        with open(path, "rb", buffering=0) as handle:
            text = handle.read().decode("latin-1")
    except OSError as error:
        raise TargetError(f"{path}: cannot read header ({error})") from None
    fields, comments = _split_header(text)
    header = _parse_plain_header(path, fields, comments) or _parse_header_fields(path, fields, comments)
    return resolve_segments(header) if header.segments and segments else header


def resolve_segments(master: Header) -> Header:
    """A multi-segment master header with the signals of its layout segment (variable layout: the first segment,
    0 samples long) or of its first segment (fixed layout), and every segment's files.

    The signals name the leads and their order (wfdb orders a variable layout's leads the same way); decoding
    goes through wfdb.rdrecord on the master, which joins the segments. TargetError naming the master header and
    the segment when a segment header cannot be read or does not fit.
    """
    folder = master.path.parent
    files: list[str] = []
    first: Header | None = None
    for name, _ in master.segments:
        if name == "~":
            continue
        try:
            segment = parse_header(folder / f"{name}.hea", segments=False)
        except TargetError as error:
            raise TargetError(f"{master.path}: segment {name} of this multi-segment record: {error}") from None
        if segment.segments:
            raise TargetError(f"{master.path}: segment {name} is itself a multi-segment record")
        if segment.sampling_rate != master.sampling_rate:
            raise TargetError(
                f"{master.path}: segment {name} is sampled at {segment.sampling_rate:g} Hz, "
                f"the record at {master.sampling_rate:g} Hz"
            )
        if first is None:
            first = segment
        files.append(f"{name}.hea")
        files.extend(file_name for file_name in segment._signal_files if file_name != "~")
    if first is None:
        raise TargetError(f"{master.path}: multi-segment record without any segment header (only null segments)")
    if len(first.signals) != master.n_signals:
        raise TargetError(
            f"{master.path}: segment {first.record_name} has {len(first.signals)} signals, "
            f"the record header announces {master.n_signals}"
        )
    return replace(master, signals=first.signals, segment_files=tuple(dict.fromkeys(files)))


def _split_header(text: str) -> tuple[list[list[str]], tuple[str, ...]]:
    """The whitespace-split fields of every non-comment line, and the comments without their '#'."""
    lines = [line.strip() for line in text.splitlines()]
    comments = tuple(line.lstrip("#").strip() for line in lines if line.startswith("#"))
    return [line.split() for line in lines if line and not line.startswith("#")], comments


def _parse_header_fields(path: Path, fields: list[list[str]], comments: tuple[str, ...]) -> Header:
    """The general parser: every quirk and every error message."""
    if not fields:
        raise TargetError(f"{path}: empty header")
    record = fields[0]
    if "/" in record[0]:
        return _parse_master_header(path, fields, comments)
    if len(record) < 2:
        raise TargetError(f"{path}: record line {' '.join(record)!r} gives no number of signals")
    record_name = record[0].rsplit(".", 1)[0] if record[0].endswith((".mat", ".dat")) else record[0]
    n_signals = _count(record[1], "number of signals", path)
    # Sampling frequency may read '500', '500/1000(0)' (counter frequency and base counter follow).
    rate = _leading_number(record[2], "sampling frequency", path) if len(record) > 2 else 250.0
    n_samples = _count(record[3], "number of samples", path) if len(record) > 3 else None
    if rate <= 0:
        raise TargetError(f"{path}: sampling frequency {rate:g} is not positive")
    signal_lines = fields[1 : 1 + n_signals]
    if len(signal_lines) < n_signals:
        raise TargetError(f"{path}: header announces {n_signals} signals but has {len(signal_lines)} signal lines")
    signals = tuple(_parse_signal_line(line, index, path) for index, line in enumerate(signal_lines))
    return Header(path, record_name, n_signals, rate, n_samples, signals, comments)


def _parse_master_header(path: Path, fields: list[list[str]], comments: tuple[str, ...]) -> Header:
    """A multi-segment master header: `name/segments signals rate samples`, then one `segment samples` line per
    segment. Its signals are left empty: `resolve_segments` takes them from the segment headers."""
    record = fields[0]
    record_name, _, count = record[0].partition("/")
    n_segments = _count(count, "number of segments", path)
    if not record_name or n_segments == 0:
        raise TargetError(f"{path}: record line {' '.join(record)!r} names no segments")
    if len(record) < 2:
        raise TargetError(f"{path}: record line {' '.join(record)!r} gives no number of signals")
    n_signals = _count(record[1], "number of signals", path)
    rate = _leading_number(record[2], "sampling frequency", path) if len(record) > 2 else 250.0
    if rate <= 0:
        raise TargetError(f"{path}: sampling frequency {rate:g} is not positive")
    lines = fields[1 : 1 + n_segments]
    if len(lines) < n_segments:
        raise TargetError(f"{path}: header announces {n_segments} segments but has {len(lines)} segment lines")
    segments = []
    for index, line in enumerate(lines):
        if len(line) != 2:
            raise TargetError(f"{path}: segment line {index + 1} {' '.join(line)!r} is not 'name samples'")
        segments.append((line[0], _count(line[1], f"length of segment {line[0]}", path)))
    n_samples = _count(record[3], "number of samples", path) if len(record) > 3 else sum(n for _, n in segments)
    return Header(path, record_name, n_signals, rate, n_samples, (), comments, segments=tuple(segments))


def check_invalid_samples(adu: np.ndarray, header: Header) -> None:
    """TargetError when a (T, L) digital sample is its format's invalid-sample value (WFDB's missing sample).

    wfdb reads these samples as NaN, and a record with NaN is skipped: melep's own decoders (format 16, .mat)
    skip it too, with the reason `missing_samples_error` gives on every path. The invalid value is the format's
    lowest, so one minimum answers the common case (no such sample) without a boolean temporary.
    """
    invalid = header._invalid_values
    if invalid is None or adu.size == 0:
        return
    if isinstance(invalid, np.ndarray):
        missing = adu == invalid
    elif adu.min() > invalid:
        return
    else:
        missing = adu == invalid
    if missing.any():
        raise missing_samples_error(header, missing.sum(axis=0), header.leads)


def missing_samples_error(header: Header, per_lead: np.ndarray, leads: Sequence[str]) -> TargetError:
    """'HEADER: 2 missing samples (WFDB's invalid-sample value) on leads II, V1': the one reason for a record with
    missing samples, whichever decoder found them (invalid values in the file, NaN in wfdb's reading)."""
    total = int(per_lead.sum())
    names = [str(leads[j]) if j < len(leads) else f"lead{j}" for j in np.flatnonzero(per_lead)]
    return TargetError(
        f"{header.path}: {total:,} missing sample{'' if total == 1 else 's'} (WFDB's invalid-sample value) "
        f"on lead{'' if len(names) == 1 else 's'} {', '.join(names)}"
    )


def _small_count(text: str) -> int | None:
    """`text` as an int when it is plain ASCII digits short enough for float() to hold exactly, else None."""
    return int(text) if len(text) <= 15 and text.isascii() and text.isdigit() else None


def _parse_plain_header(path: Path, fields: list[list[str]], comments: tuple[str, ...]) -> Header | None:
    """The fast path for the common shape (PTB-XL, Challenge .mat, most WFDB sets), or None to use the general parser.

    Handles a record line `name count rate samples [...]` with plain whole numbers and signal lines whose
    format, gain and ADC zero fields `_plain_signal_fields` understands; anything else (and anything the
    general parser would reject) returns None, so the general parser gives its usual result or error.
    The tests check that both parsers give equal Headers on every header in the shared data and on fuzzed ones.
    """
    if not fields:
        return None
    record = fields[0]
    if len(record) < 4 or "/" in record[0]:
        return None
    n_signals, rate, n_samples = _small_count(record[1]), _small_count(record[2]), _small_count(record[3])
    if n_signals is None or rate is None or n_samples is None or rate == 0 or len(fields) <= n_signals:
        return None
    signals = []
    shared: tuple | None = None  # the parsed fields of the first line, while every line has the same
    for line in fields[1 : 1 + n_signals]:
        if len(line) < 5:
            return None
        parsed = _plain_signal_fields(line[1], line[2], line[4])
        if parsed is None:
            return None
        if not signals:
            shared = parsed
        elif parsed is not shared:  # `is`: the cache hands out one tuple per distinct fields
            shared = None
        fmt, byte_offset, gain, baseline, units, plain_format16 = parsed
        name = " ".join(line[8:]) if len(line) > 8 else f"lead{len(signals)}"
        signals.append(_signal_spec(line[0], fmt, byte_offset, gain, baseline, units, name, plain_format16))
    record_name = record[0].rsplit(".", 1)[0] if record[0].endswith((".mat", ".dat")) else record[0]
    header = Header(path, record_name, n_signals, float(rate), n_samples, tuple(signals), comments)
    if shared is not None:
        # Every lead has the same gain, baseline and units: the first stands for all. Stored where
        # functools.cached_property would store it, saving a loop over the leads per record.
        header.__dict__["_adu_to_mv"] = _coefficients(signals[:1])
    return header


def _signal_spec(
    file_name: str, fmt: str, byte_offset: int, gain: float, baseline: float, units: str, name: str, plain: bool
) -> SignalSpec:
    """`SignalSpec(...)` filled through its `__dict__` instead of the frozen dataclass `__init__`.

    Why: a frozen dataclass sets each field with object.__setattr__, about 1 µs a signal line, more than
    a third of a 12-lead header's fast parse. SignalSpec has no __post_init__ and no slots, so this is the
    same object (equal, hashable, frozen); a test checks it field by field against the constructor.
    """
    spec = object.__new__(SignalSpec)
    spec.__dict__.update(
        file_name=file_name,
        fmt=fmt,
        byte_offset=byte_offset,
        gain=gain,
        baseline=baseline,
        units=units,
        name=name,
        plain_format16=plain,
    )
    return spec


_PLAIN_FORMAT = re.compile(r"(\d+)(?:\+(\d+))?")
_GAIN = re.compile(r"([+-]?[\d.eE+-]+)(?:\(([+-]?\d+)\))?(?:/(\S+))?")


@functools.lru_cache(maxsize=1024)
def _plain_signal_fields(
    fmt_field: str, gain_field: str, zero_field: str
) -> tuple[str, int, float, float, str, bool] | None:
    """(format, byte offset, gain, baseline, units, plain format 16) as `_parse_signal_line` reads them, or None.

    None where `_parse_signal_line` would raise or where the format field is more than `digits[+offset]`.
    A pure function of the three fields, cached: the signal lines of a header (and of a data set) repeat them.
    """
    fmt = _PLAIN_FORMAT.fullmatch(fmt_field)
    gain_match = _GAIN.fullmatch(gain_field)
    zero_match = _NUMBER.match(zero_field)
    if fmt is None or gain_match is None or zero_match is None:
        return None
    try:
        gain = float(gain_match.group(1)) or DEFAULT_GAIN
    except ValueError:
        return None
    adc_zero = float(zero_match.group(0))
    if not (math.isfinite(gain) and math.isfinite(adc_zero)):
        return None
    baseline = float(gain_match.group(2)) if gain_match.group(2) is not None else adc_zero
    byte_offset = int(fmt.group(2)) if fmt.group(2) is not None else 0
    return fmt.group(1), byte_offset, gain, baseline, gain_match.group(3) or "mV", fmt.group(1) == "16"


def _parse_signal_line(fields: list[str], index: int, path: Path) -> SignalSpec:
    """`file format[xspf][:skew][+offset] gain[(baseline)][/units] adcres adczero initval checksum blocksize name`."""
    if len(fields) < 2:
        raise TargetError(f"{path}: signal line {index + 1} {' '.join(fields)!r} has no format")
    fmt_field = fields[1]
    fmt = re.match(r"\d+", fmt_field)
    if fmt is None:
        raise TargetError(f"{path}: signal line {index + 1}: format {fmt_field!r} is not a number")
    offset = re.search(r"\+(\d+)", fmt_field)
    gain, baseline, units = DEFAULT_GAIN, None, "mV"
    if len(fields) > 2:
        match = re.fullmatch(r"([+-]?[\d.eE+-]+)(?:\(([+-]?\d+)\))?(?:/(\S+))?", fields[2])
        if match is None:
            raise TargetError(f"{path}: signal line {index + 1}: gain {fields[2]!r} is not understood")
        try:
            gain = float(match.group(1)) or DEFAULT_GAIN
        except ValueError:
            raise TargetError(f"{path}: signal line {index + 1}: gain {fields[2]!r} is not a number") from None
        if not math.isfinite(gain):
            raise TargetError(f"{path}: signal line {index + 1}: gain {fields[2]!r} is out of range")
        baseline = float(match.group(2)) if match.group(2) is not None else None
        units = match.group(3) or "mV"
    adc_zero = float(_leading_number(fields[4], "ADC zero", path)) if len(fields) > 4 else 0.0
    name = " ".join(fields[8:]) if len(fields) > 8 else f"lead{index}"
    return SignalSpec(
        file_name=fields[0],
        fmt=fmt.group(0),
        byte_offset=int(offset.group(1)) if offset else 0,
        gain=gain,
        baseline=adc_zero if baseline is None else baseline,
        units=units,
        name=name,
        plain_format16=re.fullmatch(r"16(\+\d+)?", fmt_field) is not None,
    )


def physical(adu: np.ndarray, header: Header) -> np.ndarray:
    """(T, L) digital values -> float32 millivolts using every signal's gain, baseline and units.

    float64 arithmetic, `(adu - baseline) * scale`, then rounded to float32; done in place on one float64
    copy with the per-header coefficients (scalars when every lead shares them), which gives the same bits
    as the plain expression in a quarter of the time.
    """
    adu = np.asarray(adu)
    if adu.dtype.kind not in "biuf" or adu.ndim != 2 or adu.shape[1] != len(header.signals):
        baseline = np.array([signal.baseline for signal in header.signals])
        scale = np.array([signal.mv_per_unit / signal.gain for signal in header.signals])
        return ((adu - baseline) * scale).astype(np.float32)
    baseline, scale = header._adu_to_mv
    values = adu.astype(np.float64)
    if baseline is not None:
        values -= baseline
    values *= scale
    return values.astype(np.float32)


def read_mat_signal(header: Header) -> np.ndarray:
    """A Challenge `.mat` record (key `val`, leads x samples) as (T, L) float32 mV."""
    import scipy.io  # imported here: scipy.io takes 0.4 s to import, and most targets have no .mat file

    mat_path = header.path.parent / header.signals[0].file_name
    try:
        values = scipy.io.loadmat(mat_path)["val"]
    except KeyError:
        raise TargetError(f"{mat_path}: no 'val' array") from None
    except Exception as error:  # scipy raises MatReadError, ValueError, OSError, ... for broken files
        raise TargetError(f"{mat_path}: cannot read MATLAB file ({type(error).__name__}: {error})") from None
    values = np.asarray(values)
    if values.ndim != 2 or values.shape[0] != header.n_signals:
        raise TargetError(f"{mat_path}: 'val' has shape {values.shape}; expected ({header.n_signals}, samples)")
    if not np.issubdtype(values.dtype, np.number):
        raise TargetError(f"{mat_path}: 'val' holds {values.dtype}, not numbers")
    if header.n_samples and values.shape[1] < header.n_samples:
        raise TargetError(f"{mat_path}: {values.shape[1]} samples per lead, the header announces {header.n_samples}")
    if header.n_samples:
        values = values[:, : header.n_samples]  # like format 16 files: the header's length wins
    check_invalid_samples(values.T, header)
    return physical(values.T, header)


# -- SNOMED CT codes -----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DxMapping:
    """SNOMED CT code -> abbreviation, and code -> the code it is merged into (scored equivalents)."""

    abbreviation: dict[str, str]
    name: dict[str, str]
    canonical: dict[str, str]

    def canonical_code(self, code: str) -> str:
        return self.canonical.get(code, code)

    def label_name(self, code: str) -> str:
        """The label a code counts towards: the abbreviation of its canonical code, else the code itself."""
        canonical = self.canonical_code(code)
        return self.abbreviation.get(canonical, canonical)

    def aliases(self) -> dict[str, str]:
        """Every code and abbreviation -> the label name it selects (for --labels)."""
        aliases: dict[str, str] = {}
        for code, abbreviation in self.abbreviation.items():
            label = self.label_name(code)
            aliases[code] = label
            aliases.setdefault(abbreviation, label)
        return aliases


@functools.cache
def load_dx_mapping() -> DxMapping:
    """The mapping table shipped with the package (`melep_cli/data/dx_mapping.csv`)."""
    text = resources.files("melep_cli").joinpath("data/dx_mapping.csv").read_text(encoding="utf-8")
    rows = csv.DictReader(line for line in text.splitlines() if not line.startswith("#"))
    abbreviation: dict[str, str] = {}
    name: dict[str, str] = {}
    canonical: dict[str, str] = {}
    for row in rows:
        code = row["snomed_code"].strip()
        abbreviation[code] = row["abbreviation"].strip()
        name[code] = row["dx_name"].strip()
        if row.get("equivalent_to", "").strip():
            canonical[code] = row["equivalent_to"].strip()
    return DxMapping(abbreviation, name, canonical)


def dx_codes(header: Header) -> list[str] | None:
    """The SNOMED CT codes of the `#Dx:` line (empty codes such as `,,` dropped), None without a Dx line."""
    value = header.comment("Dx")
    if value is None:
        return None
    return [code.strip() for code in value.split(",") if code.strip()]
