"""Turn target ECG records into the input one checkpoint expects (leads, rate, filter, length or windows,
scale, normalisation, layout, dtype).

`prepare` is pure numpy/scipy and knows nothing about models or files: `Checkpoint.input_spec`
says what a checkpoint wants, and checkpoints with equal specs share one prepared array.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, NamedTuple

import numpy as np

from melep_cli.errors import InputError, MissingLeadsError

logger = logging.getLogger("melep")

#: The standard 12 leads in the usual order: the default of checkpoint metadata and target files.
STANDARD_LEADS: tuple[str, ...] = ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")
#: NCT (batch, leads, time), NTC (batch, time, leads), NT (batch, leads x time: lead after lead).
LAYOUTS = ("NCT", "NTC", "NT")
#: Named normalisations; a fitted per-lead scaler is a `Scaler` (metadata {"mean": [...], "std": [...]}).
NORMALIZATIONS = ("none", "zscore", "minmax", "zscore-record")
DTYPES = ("float32", "float64")
#: Which `samples` samples of a longer record the model sees (without windows).
CROPS = ("start", "center")
#: How the raw outputs of a record's windows become the record's.
AGGREGATES = ("mean", "max")
#: What a lead the model needs and the target lacks becomes: an error, or a zero lead (with one warning).
MISSING_LEADS = ("error", "zero")
#: Butterworth order of a `filter` that gives none.
DEFAULT_FILTER_ORDER = 4
#: The steps of `prepare`, in the order they run (what `melep inspect` lists).
STEPS = ("leads", "resample", "filter", "crop or windows", "pad", "scale", "normalize", "layout", "cast")


class Scaler(NamedTuple):
    """A fitted per-lead scaler (StandardScaler): (x - mean[lead]) / std[lead], in the model's lead order."""

    mean: tuple[float, ...]
    std: tuple[float, ...]


class Windows(NamedTuple):
    """Windows of `samples` samples every `stride` samples; the raw outputs aggregated per record."""

    stride: int
    aggregate: str = "mean"


class BandFilter(NamedTuple):
    """A zero-phase Butterworth filter (sosfiltfilt); None: that bound is left out."""

    highpass: float | None
    lowpass: float | None
    order: int = DEFAULT_FILTER_ORDER


#: Rates whose ratio needs more than this numerator or denominator are approximated (a resampling
#: filter with 10,000 phases is already far finer than any ECG needs, and larger ones cost memory).
_MAX_RESAMPLING_FACTOR = 10_000


@dataclass(frozen=True)
class InputSpec:
    """What one checkpoint wants as input; hashable, so checkpoints with equal specs share a batch."""

    sampling_rate: float | None  # None: keep the native rate
    samples: int | None  # None: the record length
    leads: tuple[str, ...]
    layout: str  # "NCT" (batch, leads, time) | "NTC" (batch, time, leads) | "NT" (batch, leads x time)
    normalization: str | Scaler  # "none" | "zscore" | "minmax" | "zscore-record" | a fitted Scaler
    dtype: str  # "float32" | "float64"
    crop: str = "start"  # "start" | "center"
    windows: Windows | None = None
    filter: BandFilter | None = None
    scale: float = 1.0
    missing_leads: str = "error"  # "error" | "zero"

    def __post_init__(self) -> None:
        if self.layout not in LAYOUTS:
            raise InputError(f"input layout must be one of {', '.join(LAYOUTS)}, got {self.layout!r}")
        if isinstance(self.normalization, Scaler):
            check_scaler(self.normalization, len(self.leads))
        elif self.normalization not in NORMALIZATIONS:
            raise InputError(f"normalization must be one of {', '.join(NORMALIZATIONS)}, got {self.normalization!r}")
        if self.dtype not in DTYPES:
            raise InputError(f"input dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        if self.sampling_rate is not None and not (math.isfinite(self.sampling_rate) and self.sampling_rate > 0):
            raise InputError(f"sampling rate must be a positive number, got {self.sampling_rate!r}")
        if self.samples is not None and self.samples < 1:
            raise InputError(f"samples must be a positive integer, got {self.samples!r}")
        if not self.leads:
            raise InputError("an input spec needs at least one lead")
        if self.crop not in CROPS:
            raise InputError(f"metadata key 'crop' must be one of {', '.join(CROPS)}, got {self.crop!r}")
        if self.missing_leads not in MISSING_LEADS:
            raise InputError(f"metadata key 'missing_leads' must be one of {', '.join(MISSING_LEADS)}")
        if not (math.isfinite(self.scale) and self.scale != 0):
            raise InputError(f"metadata key 'scale' must be a finite non-zero number, got {self.scale!r}")
        if self.windows is not None:
            check_windows(self.windows)
            if self.samples is None:
                raise InputError("metadata key 'windows' needs 'samples' (the window length)")
        if self.filter is not None:
            check_filter(self.filter, self.sampling_rate)


def check_scaler(scaler: Scaler, leads: int | None = None) -> None:
    """A fitted scaler has one finite mean and one positive std per lead (`leads` of them, when given)."""
    mean, std = scaler
    if len(mean) != len(std):
        raise InputError(f"metadata key 'normalization' has {len(mean)} means but {len(std)} stds")
    if leads is not None and len(mean) != leads:
        raise InputError(f"metadata key 'normalization' has a scaler of {len(mean)} leads but the model takes {leads}")
    if not all(math.isfinite(value) for value in (*mean, *std)) or not all(value > 0 for value in std):
        raise InputError("metadata key 'normalization' needs finite means and positive stds")


def check_windows(windows: Windows) -> None:
    """Stride a positive integer, aggregate one of AGGREGATES."""
    stride, aggregate = windows
    if isinstance(stride, bool) or not isinstance(stride, int) or stride < 1:
        raise InputError(f"metadata key 'windows' needs a stride of at least 1 sample, got {stride!r}")
    if aggregate not in AGGREGATES:
        raise InputError(f"metadata key 'windows' aggregate must be one of {', '.join(AGGREGATES)}, got {aggregate!r}")


def check_filter(band: BandFilter, sampling_rate: float | None) -> None:
    """Positive bounds, at least one, highpass below lowpass, both below the Nyquist frequency of `sampling_rate`."""
    highpass, lowpass, order = band
    if highpass is None and lowpass is None:
        raise InputError("metadata key 'filter' needs a highpass or a lowpass frequency")
    for name, value in (("highpass", highpass), ("lowpass", lowpass)):
        if value is not None and not (math.isfinite(value) and value > 0):
            raise InputError(f"metadata key 'filter' {name} must be a positive number of Hz, got {value!r}")
    if isinstance(order, bool) or not isinstance(order, int) or not 1 <= order <= 16:
        raise InputError(f"metadata key 'filter' order must be an integer from 1 to 16, got {order!r}")
    if highpass is not None and lowpass is not None and highpass >= lowpass:
        raise InputError(f"metadata key 'filter' highpass {highpass:g} Hz must be below lowpass {lowpass:g} Hz")
    if sampling_rate is not None:
        nyquist = sampling_rate / 2
        for name, value in (("highpass", highpass), ("lowpass", lowpass)):
            if value is not None and value >= nyquist:
                raise InputError(
                    f"metadata key 'filter' {name} {value:g} Hz is at or above the Nyquist frequency "
                    f"{nyquist:g} Hz of the {sampling_rate:g} Hz input"
                )


def describe_steps(spec: InputSpec) -> list[tuple[str, str]]:
    """The preprocessing chain of `spec`, step by step in the order `prepare` runs it, as (step, what) pairs."""
    rate = "the target's rate" if spec.sampling_rate is None else f"{spec.sampling_rate:g} Hz"
    steps = [("leads", f"{', '.join(spec.leads)} (a missing lead: {spec.missing_leads})"), ("resample", f"to {rate}")]
    if spec.filter is not None:
        highpass, lowpass, order = spec.filter
        if highpass is not None and lowpass is not None:
            kind = f"band-pass {highpass:g}-{lowpass:g} Hz"
        elif highpass is not None:
            kind = f"high-pass {highpass:g} Hz"
        else:
            kind = f"low-pass {lowpass:g} Hz"
        steps.append(("filter", f"zero-phase Butterworth {kind}, order {order}"))
    length = "the record length" if spec.samples is None else f"{spec.samples} samples"
    if spec.windows is not None:
        stride, aggregate = spec.windows
        steps.append(("windows", f"{length} every {stride} samples; raw outputs: {aggregate} per record"))
    else:
        steps.append(("crop", f"{length} from the {spec.crop}"))
    steps.append(("pad", "zeros at the end, up to the length"))
    if spec.scale != 1:
        steps.append(("scale", f"x {spec.scale:g} (from millivolts)"))
    if isinstance(spec.normalization, Scaler):
        steps.append(("normalize", f"fitted scaler, {len(spec.normalization.mean)} leads"))
    else:
        steps.append(("normalize", spec.normalization))
    steps += [("layout", spec.layout), ("cast", spec.dtype)]
    return steps


#: Other names real files give the standard leads (after case folding and dropping a 'lead' prefix):
#: CODE-15% and Brazilian exports write DI, DII, DIII; some write D1, D2, D3; Holter records MLII (modified II).
LEAD_ALIASES = {"di": "i", "dii": "ii", "diii": "iii", "d1": "i", "d2": "ii", "d3": "iii", "mlii": "ii"}


def lead_key(name: str) -> str:
    """Lead names compare case-insensitively ('aVR' == 'AVR'), ignoring spaces, a 'lead' prefix ('Lead II',
    'lead_V1') and the aliases of LEAD_ALIASES ('DII' == 'II')."""
    key = name.strip().casefold()
    for prefix in ("lead ", "lead_", "lead-"):
        if key.startswith(prefix):
            key = key[len(prefix) :].strip()
    return LEAD_ALIASES.get(key, key)


def lead_indices(available: Sequence[str], wanted: Sequence[str]) -> list[int]:
    """Column index in `available` of every lead in `wanted`, or an InputError naming the missing ones."""
    positions: dict[str, int] = {}
    for index, name in enumerate(available):
        positions.setdefault(lead_key(name), index)
    missing = [name for name in wanted if lead_key(name) not in positions]
    if missing:
        raise MissingLeadsError(
            f"the target has no lead {', '.join(repr(name) for name in missing)} "
            f"(it has {', '.join(available) or 'none'})"
        )
    return [positions[lead_key(name)] for name in wanted]


def standard_lead(name: str) -> str | None:
    """The standard lead (STANDARD_LEADS spelling) `name` stands for ('DI' -> 'I', 'AVR' -> 'aVR'), or None."""
    key = lead_key(name)
    return next((lead for lead in STANDARD_LEADS if lead_key(lead) == key), None)


def match_leads(available: Sequence[str], wanted: Sequence[str]) -> list[tuple[str, str | None]]:
    """Each lead in `wanted` with the name in `available` that matched it (by `lead_key`), or None."""
    positions: dict[str, str] = {}
    for name in available:
        positions.setdefault(lead_key(name), name)
    return [(name, positions.get(lead_key(name))) for name in wanted]


def resampling_factors(native_rate: float, target_rate: float) -> tuple[int, int]:
    """(up, down) of the reduced rational factor target/native, for scipy.signal.resample_poly.

    Rates go through their shortest decimal text so that 0.1-style floats give small exact fractions.
    """
    if not (math.isfinite(native_rate) and native_rate > 0):
        raise InputError(f"sampling rate must be a positive number, got {native_rate!r}")
    ratio = Fraction(repr(float(target_rate))) / Fraction(repr(float(native_rate)))
    if max(ratio.numerator, ratio.denominator) > _MAX_RESAMPLING_FACTOR:
        ratio = ratio.limit_denominator(_MAX_RESAMPLING_FACTOR)
    return ratio.numerator, ratio.denominator


class WindowedInputs(np.ndarray):
    """Model inputs of windowed records: one row per window, `windows_per_record` (b,) says how many each record has.

    Rows are grouped by record, in record order; `Checkpoint.predict_outputs` aggregates the outputs back.
    """

    windows_per_record: np.ndarray

    def __array_finalize__(self, source: Any) -> None:
        self.windows_per_record = getattr(source, "windows_per_record", None)  # type: ignore[assignment]


def prepare(
    signals: np.ndarray | Sequence[np.ndarray],
    sampling_rate: float,
    leads: Sequence[str],
    spec: InputSpec,
) -> np.ndarray:
    """Records (b, T, L) or b arrays (T_i, L) at `sampling_rate` (millivolts) -> the C-contiguous model input of `spec`.

    Steps, in order (STEPS): select and reorder leads (a missing lead is an error, or zeros with
    `missing_leads` "zero"); resample to the spec's rate; filter (zero-phase Butterworth, float64); keep
    `samples` samples from the start or the centre, or cut windows of `samples` every `windows.stride`
    samples; zero-pad at the end to `samples`; multiply by `scale`; normalise each model input (the
    statistics and the scaler apply to the record's own samples: padding stays zero); lay out as (n, L, T)
    for NCT, (n, T, L) for NTC, (n, L x T) lead after lead for NT; cast to the spec's dtype. Records of equal
    length (the usual case) are processed as one array. With windows the result is a `WindowedInputs`
    holding every record's windows in record order.
    """
    working = np.dtype(spec.dtype)
    indices = _lead_columns(leads, spec)
    if isinstance(signals, np.ndarray) and signals.ndim == 3:
        groups = [signals]
    else:
        records = [np.asarray(record) for record in signals]
        if not records:
            raise InputError("no records to prepare")
        if len({record.shape for record in records}) == 1:
            groups = [np.stack(records)]
        else:
            groups = [record[np.newaxis] for record in records]
    for group in groups:
        if group.ndim != 3 or group.shape[2] != len(leads):
            raise InputError(
                f"signals must be records x samples x {len(leads)} leads, got a record of shape {group.shape[1:]}"
            )
    processed: list[np.ndarray] = []
    counts: list[np.ndarray] = []
    for group in groups:
        group = _filter(_resample(_select_leads(group, indices), sampling_rate, spec, working), spec, working)
        group, per_record = _crop_or_cut(group, spec)
        processed.append(group)
        counts.append(np.full(per_record[0], per_record[1], dtype=np.int64))
    length = spec.samples if spec.samples is not None else max(group.shape[1] for group in processed)
    count = sum(group.shape[0] for group in processed)
    lead_count = len(indices)
    shape = (count, length, lead_count) if spec.layout == "NTC" else (count, lead_count, length)
    output = np.zeros(shape, dtype=working)
    start = 0
    for group in processed:
        kept = group.shape[1]
        if spec.scale != 1:
            group = group * np.asarray(spec.scale, dtype=working)
        if spec.normalization != "none":
            group = _normalize(group, spec.normalization)
        stop = start + group.shape[0]
        if spec.layout == "NTC":
            output[start:stop, :kept, :] = group
        else:
            output[start:stop, :, :kept] = group.transpose(0, 2, 1)
        start = stop
    if spec.layout == "NT":
        output = output.reshape(count, lead_count * length)
    if spec.windows is None:
        return output
    windowed = output.view(WindowedInputs)
    windowed.windows_per_record = np.concatenate(counts)
    return windowed


def _lead_columns(available: Sequence[str], spec: InputSpec) -> list[int]:
    """Column of every lead the spec needs; -1 for a lead the target lacks when `missing_leads` is "zero"."""
    if spec.missing_leads == "error":
        return lead_indices(available, spec.leads)
    matched = match_leads(available, spec.leads)
    missing = tuple(name for name, found in matched if found is None)
    if missing:
        _warn_zero_leads(tuple(available), missing)
    if len(missing) == len(spec.leads):
        raise MissingLeadsError(
            f"the target has none of the leads {', '.join(spec.leads)} (it has {', '.join(available) or 'none'})"
        )
    positions = {lead_key(name): index for index, name in reversed(list(enumerate(available)))}
    return [positions.get(lead_key(name), -1) for name in spec.leads]


@functools.cache
def _warn_zero_leads(available: tuple[str, ...], missing: tuple[str, ...]) -> None:
    """One warning per target lead set and missing leads (not one per batch)."""
    logger.warning(
        "the target has no lead %s (it has %s): fed as zeros (metadata missing_leads=zero)",
        ", ".join(repr(name) for name in missing),
        ", ".join(available) or "none",
    )


def _select_leads(group: np.ndarray, indices: list[int]) -> np.ndarray:
    """The wanted lead columns (zeros for -1); a view when they are all columns in order (no copy)."""
    if indices == list(range(group.shape[2])):
        return group
    if -1 not in indices:
        return group[:, :, indices]
    selected = np.zeros((*group.shape[:2], len(indices)), dtype=group.dtype)
    for column, index in enumerate(indices):
        if index >= 0:
            selected[:, :, column] = group[:, :, index]
    return selected


def _resample(group: np.ndarray, sampling_rate: float, spec: InputSpec, working: np.dtype) -> np.ndarray:
    """Resample along time to the spec's rate, in the working dtype."""
    if not np.issubdtype(group.dtype, np.floating):
        group = group.astype(working)
    if not np.isfinite(group).all():
        bad = int(np.flatnonzero(~np.isfinite(group).all(axis=(1, 2)))[0])
        raise InputError(f"record {bad} of the batch contains NaN or infinite samples")
    if spec.sampling_rate is not None and float(spec.sampling_rate) != float(sampling_rate):
        up, down = resampling_factors(sampling_rate, spec.sampling_rate)
        if (up, down) != (1, 1):
            from scipy.signal import resample_poly  # imported here: scipy.signal takes a while to import

            group = resample_poly(group.astype(working, copy=False), up, down, axis=1)
    return group.astype(working, copy=False)


def _filter(group: np.ndarray, spec: InputSpec, working: np.dtype) -> np.ndarray:
    """The spec's zero-phase Butterworth filter along time, computed in float64 (at the spec's rate)."""
    if spec.filter is None or group.shape[1] < 2:
        return group
    from scipy.signal import butter, sosfiltfilt

    highpass, lowpass, order = spec.filter
    rate = spec.sampling_rate
    if rate is None:
        raise InputError("metadata key 'filter' needs the input's sampling rate")
    check_filter(spec.filter, rate)
    if highpass is not None and lowpass is not None:
        sos = butter(order, [highpass, lowpass], btype="bandpass", fs=rate, output="sos")
    elif highpass is not None:
        sos = butter(order, highpass, btype="highpass", fs=rate, output="sos")
    else:
        sos = butter(order, lowpass, btype="lowpass", fs=rate, output="sos")
    # sosfiltfilt's default edge padding; a record shorter than it is padded by what it has.
    padlen = min(3 * (2 * len(sos) + 1 - min((sos[:, 2] == 0).sum(), (sos[:, 5] == 0).sum())), group.shape[1] - 1)
    filtered = sosfiltfilt(sos, group.astype(np.float64, copy=False), axis=1, padlen=padlen)
    return filtered.astype(working, copy=False)


def _crop_or_cut(group: np.ndarray, spec: InputSpec) -> tuple[np.ndarray, tuple[int, int]]:
    """Keep `samples` samples (from the start or the centre), or cut the windows; and (records, windows each)."""
    records, length = group.shape[0], group.shape[1]
    samples = spec.samples
    if samples is None or length <= samples:
        return group, (records, 1)
    if spec.windows is None:
        start = 0 if spec.crop == "start" else (length - samples) // 2
        return group[:, start : start + samples], (records, 1)
    starts = range(0, length - samples + 1, spec.windows.stride)
    windows = np.stack([group[:, start : start + samples] for start in starts], axis=1)
    return windows.reshape(records * len(starts), samples, group.shape[2]), (records, len(starts))


def _normalize(group: np.ndarray, normalization: str | Scaler) -> np.ndarray:
    """Per model input over time: zscore per lead (mean 0, sd 1), zscore-record over every lead at once, minmax
    per lead to [-1, 1], a Scaler's fitted (x - mean) / std per lead; flat leads (records) become 0."""
    if group.shape[1] == 0:
        return group
    if isinstance(normalization, Scaler):
        mean = np.asarray(normalization.mean, dtype=np.float64)
        std = np.asarray(normalization.std, dtype=np.float64)
        return ((group - mean) / std).astype(group.dtype, copy=False)
    if normalization in ("zscore", "zscore-record"):
        axes = 1 if normalization == "zscore" else (1, 2)
        center = group.mean(axis=axes, keepdims=True)
        scale = group.std(axis=axes, keepdims=True)
        # A flat lead has scale 0 and equals its center everywhere: dividing by 1 instead maps it to 0.
        scale[scale == 0] = 1
        return (group - center) / scale
    # minmax as 2 (x - low) / (high - low) - 1: x - low <= high - low holds after rounding too, so the
    # result stays inside [-1, 1] even for nearly flat float32 leads ((x - center) / scale does not).
    low = group.min(axis=1, keepdims=True)
    span = group.max(axis=1, keepdims=True) - low
    flat = span == 0
    span[flat] = 1
    scaled = (group - low) / span
    scaled *= 2
    scaled -= 1
    return np.where(flat, 0, scaled).astype(group.dtype, copy=False)
