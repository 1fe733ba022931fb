"""WFDB headers (`.hea`): the record line, its signal or segment lines and `#` comments, read into a `Header`.

The parser is hand-written, not `wfdb.rdheader`, because wfdb rejects real PhysioNet/CinC Challenge headers (the
Georgia record lines start `E00271.mat 12 500 5000`, a file name where the record name belongs; dates like
`05-May-2020` are non-standard) and takes about 2.4 ms a header against 0.03 ms here (wfdb 4.3, PTB-XL and
Challenge headers). Signal files in formats melep does not decode itself go through `wfdb.rdrecord`.

The lines, fields separated by whitespace:

- record line: `name[/segments] signals [rate[/counter[(base)]] [samples [time [date]]]]`; the name may be a signal
  file name (`E00271.mat`, Challenge), read as the record name without its suffix.
- signal line: `file format[xspf][:skew][+offset] [gain[(baseline)][/units] [adcres [adczero [initval [checksum
  [blocksize [description...]]]]]]]`; melep keeps the file, format, byte offset, gain (0 or none: 200), baseline
  (none: ADC zero), units (none: mV) and the description, which names the lead (none: `lead<i>`). ADC resolution,
  initial value, checksum and block size are not read.
- segment line (multi-segment master header, `name/segments`): `segment samples`, `~` a null segment. The master
  takes its leads from its layout or first segment header (`resolve_segments`); wfdb.rdrecord joins the segments.
- `#` lines are comments (`#Dx: ...` holds the Challenge labels); blank lines are skipped.

Every header goes through the general parser's rules; `_parse_plain_header` is a shortcut for the common shape
(PTB-XL, Challenge, most WFDB sets) that reads the same fields with the same field readers and gives the same
Header, so that reading the headers of a large set stays a small part of a run. A header it cannot read is a
one-line TargetError naming the file.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from melep_cli.errors import TargetError

#: Physical units -> factor to millivolts.
UNIT_TO_MV = {"mv": 1.0, "uv": 1e-3, "μv": 1e-3, "µv": 1e-3, "nv": 1e-6, "v": 1e3}
#: WFDB's default gain (adu per physical unit) when a header gives 0 or none.
DEFAULT_GAIN = 200.0
#: WFDB's default sampling frequency (Hz) when a record line gives none.
DEFAULT_RATE = 250.0
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


# -- reading a header ----------------------------------------------------------------------------------------------
def parse_header(path: str | Path, *, segments: bool = True) -> Header:
    """Parse a WFDB `.hea` (see the module docstring); a one-line TargetError naming the file if it is unusable.

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
    """The whitespace-split fields of every non-blank, non-comment line, and the comments without their '#'."""
    lines = [line.strip() for line in text.splitlines()]
    comments = tuple(line.lstrip("#").strip() for line in lines if line.startswith("#"))
    return [line.split() for line in lines if line and not line.startswith("#")], comments


# -- the general parser: every quirk and every error message -------------------------------------------------------
def _parse_header_fields(path: Path, fields: list[list[str]], comments: tuple[str, ...]) -> Header:
    """The header of these lines (`_split_header`'s), or a TargetError naming `path` and what is wrong."""
    if not fields:
        raise TargetError(f"{path}: empty header")
    record = fields[0]
    if "/" in record[0]:
        return _parse_master_header(path, fields, comments)
    n_signals, rate = _signals_and_rate(path, record)
    n_samples = _count(record[3], "number of samples", path) if len(record) > 3 else None
    _check_rate(path, rate)
    signal_lines = _announced_lines(path, fields, n_signals, "signal")
    signals = tuple(_parse_signal_line(line, index, path) for index, line in enumerate(signal_lines))
    return Header(path, _record_name(record[0]), n_signals, rate, n_samples, signals, comments)


def _parse_master_header(path: Path, fields: list[list[str]], comments: tuple[str, ...]) -> Header:
    """A multi-segment master header: `name/segments signals rate samples`, then one `segment samples` line per
    segment. Its signals are left empty: `resolve_segments` takes them from the segment headers."""
    record = fields[0]
    record_name, _, count = record[0].partition("/")
    n_segments = _count(count, "number of segments", path)
    if not record_name or n_segments == 0:
        raise TargetError(f"{path}: record line {' '.join(record)!r} names no segments")
    n_signals, rate = _signals_and_rate(path, record)
    _check_rate(path, rate)
    segments = []
    for index, line in enumerate(_announced_lines(path, fields, n_segments, "segment")):
        if len(line) != 2:
            raise TargetError(f"{path}: segment line {index + 1} {' '.join(line)!r} is not 'name samples'")
        segments.append((line[0], _count(line[1], f"length of segment {line[0]}", path)))
    n_samples = _count(record[3], "number of samples", path) if len(record) > 3 else sum(n for _, n in segments)
    return Header(path, record_name, n_signals, rate, n_samples, (), comments, segments=tuple(segments))


def _signals_and_rate(path: Path, record: list[str]) -> tuple[int, float]:
    """The record line's number of signals and sampling frequency (its leading number: `500/1000(0)` gives 500)."""
    if len(record) < 2:
        raise TargetError(f"{path}: record line {' '.join(record)!r} gives no number of signals")
    n_signals = _count(record[1], "number of signals", path)
    rate = _leading_number(record[2], "sampling frequency", path) if len(record) > 2 else DEFAULT_RATE
    return n_signals, rate


def _announced_lines(path: Path, fields: list[list[str]], count: int, kind: str) -> list[list[str]]:
    """The `count` signal or segment lines after the record line (more are ignored, fewer are an error)."""
    lines = fields[1 : 1 + count]
    if len(lines) < count:
        raise TargetError(f"{path}: header announces {count} {kind}s but has {len(lines)} {kind} lines")
    return lines


def _check_rate(path: Path, rate: float) -> None:
    if rate <= 0:
        raise TargetError(f"{path}: sampling frequency {rate:g} is not positive")


def _parse_signal_line(fields: list[str], index: int, path: Path) -> SignalSpec:
    """`file format[xspf][:skew][+offset] gain[(baseline)][/units] adcres adczero initval checksum blocksize name`."""
    if len(fields) < 2:
        raise TargetError(f"{path}: signal line {index + 1} {' '.join(fields)!r} has no format")
    try:
        fmt, byte_offset, plain_format16 = _format(fields[1])
    except _Unreadable as why:
        raise TargetError(f"{path}: signal line {index + 1}: format {fields[1]!r} {why}") from None
    gain, baseline, units = DEFAULT_GAIN, None, "mV"
    if len(fields) > 2:
        try:
            gain, baseline, units = _gain(fields[2])
        except _Unreadable as why:
            raise TargetError(f"{path}: signal line {index + 1}: gain {fields[2]!r} {why}") from None
    adc_zero = _leading_number(fields[4], "ADC zero", path) if len(fields) > 4 else 0.0
    return SignalSpec(
        file_name=fields[0],
        fmt=fmt,
        byte_offset=byte_offset,
        gain=gain,
        baseline=adc_zero if baseline is None else baseline,
        units=units,
        name=_lead_name(fields, index),
        plain_format16=plain_format16,
    )


# -- the shortcut for the common shape -----------------------------------------------------------------------------
def _parse_plain_header(path: Path, fields: list[list[str]], comments: tuple[str, ...]) -> Header | None:
    """The general parser's Header for the common shape (PTB-XL, Challenge .mat, most WFDB sets), else None.

    Handles a record line `name count rate samples [...]` with plain whole numbers and signal lines whose
    format is `digits[+offset]` and whose gain and ADC zero fields `_plain_signal_fields` reads; anything else
    (and anything the general parser would reject) returns None, so the general parser gives its usual result
    or error. The tests check that both give equal Headers on every header in the shared data and on fuzzed ones.
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
        name = _lead_name(line, len(signals))
        signals.append(_signal_spec(line[0], fmt, byte_offset, gain, baseline, units, name, plain_format16))
    header = Header(path, _record_name(record[0]), n_signals, float(rate), n_samples, tuple(signals), comments)
    if shared is not None:
        # Every lead has the same gain, baseline and units: the first stands for all. Stored where
        # functools.cached_property would store it, saving a loop over the leads per record.
        header.__dict__["_adu_to_mv"] = _coefficients(signals[:1])
    return header


def _small_count(text: str) -> int | None:
    """`text` as an int when it is plain ASCII digits short enough for float() to hold exactly, else None."""
    return int(text) if len(text) <= 15 and text.isascii() and text.isdigit() else None


@functools.lru_cache(maxsize=1024)
def _plain_signal_fields(
    fmt_field: str, gain_field: str, zero_field: str
) -> tuple[str, int, float, float, str, bool] | None:
    """(format, byte offset, gain, baseline, units, plain format 16) as `_parse_signal_line` reads them, or None.

    None where `_parse_signal_line` would raise or where the format field is more than `digits[+offset]`.
    A pure function of the three fields, cached: the signal lines of a header (and of a data set) repeat them.
    """
    if _PLAIN_FORMAT.fullmatch(fmt_field) is None:
        return None
    try:
        fmt, byte_offset, plain_format16 = _format(fmt_field)
        gain, baseline, units = _gain(gain_field)
        adc_zero = _number(zero_field)
    except _Unreadable:
        return None
    return fmt, byte_offset, gain, adc_zero if baseline is None else baseline, units, plain_format16


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


# -- field readers, shared by both parsers -------------------------------------------------------------------------
class _Unreadable(Exception):
    """A header field that cannot be read; the message ends the sentence `field 'text' ...` ('is not a number')."""


_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")
_FORMAT_CODE = re.compile(r"\d+")
_BYTE_OFFSET = re.compile(r"\+(\d+)")
_PLAIN_FORMAT16 = re.compile(r"16(\+\d+)?")
_PLAIN_FORMAT = re.compile(r"\d+(\+\d+)?")
_GAIN = re.compile(r"([+-]?[\d.eE+-]+)(?:\(([+-]?\d+)\))?(?:/(\S+))?")


def _number(text: str) -> float:
    """The finite number `text` starts with: WFDB fields run on (`500/1000(0)` reads as 500, `0x10` as 0)."""
    match = _NUMBER.match(text)
    if match is None:
        raise _Unreadable("is not a number")
    value = float(match.group(0))
    if not math.isfinite(value):
        raise _Unreadable("is out of range")
    return value


def _leading_number(text: str, what: str, path: Path) -> float:
    """`_number(text)`, or a TargetError naming `path` and the field (`what`)."""
    try:
        return _number(text)
    except _Unreadable as why:
        raise TargetError(f"{path}: header {what} {text!r} {why}") from None


def _count(text: str, what: str, path: Path) -> int:
    """A non-negative whole number from the header (number of signals, of samples)."""
    value = _leading_number(text, what, path)
    if value < 0 or not value.is_integer():
        raise TargetError(f"{path}: header {what} {text!r} is not a whole number >= 0")
    return int(value)


def _format(text: str) -> tuple[str, int, bool]:
    """(storage format, byte offset, plain format 16) of `format[xspf][:skew][+offset]`."""
    code = _FORMAT_CODE.match(text)
    if code is None:
        raise _Unreadable("is not a number")
    offset = _BYTE_OFFSET.search(text)
    return code.group(0), int(offset.group(1)) if offset else 0, _PLAIN_FORMAT16.fullmatch(text) is not None


def _gain(text: str) -> tuple[float, float | None, str]:
    """(gain, baseline or None, units) of `gain[(baseline)][/units]`; a gain of 0 is the default gain."""
    match = _GAIN.fullmatch(text)
    if match is None:
        raise _Unreadable("is not understood")
    try:
        gain = float(match.group(1)) or DEFAULT_GAIN
    except ValueError:
        raise _Unreadable("is not a number") from None
    if not math.isfinite(gain):
        raise _Unreadable("is out of range")
    baseline = float(match.group(2)) if match.group(2) is not None else None
    return gain, baseline, match.group(3) or "mV"


def _record_name(field: str) -> str:
    """The record name of a record line's first field: a Challenge signal file name loses its suffix."""
    return field.rsplit(".", 1)[0] if field.endswith((".mat", ".dat")) else field


def _lead_name(fields: list[str], index: int) -> str:
    """A signal line's description (the lead name, spaces kept), or `lead<index>` without one."""
    return " ".join(fields[8:]) if len(fields) > 8 else f"lead{index}"
