"""Turn target ECG records into the input one checkpoint expects (rate, length, leads, scale, layout, dtype).

`prepare` is pure numpy/scipy and knows nothing about models or files: `Checkpoint.input_spec`
says what a checkpoint wants, and checkpoints with equal specs share one prepared array.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from melep_cli.errors import InputError, MissingLeadsError

#: The standard 12 leads in the usual order: the default of checkpoint metadata and target files.
STANDARD_LEADS: tuple[str, ...] = ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")
LAYOUTS = ("NCT", "NTC")
NORMALIZATIONS = ("none", "zscore", "minmax")
DTYPES = ("float32", "float64")

#: Rates whose ratio needs more than this numerator or denominator are approximated (a resampling
#: filter with 10,000 phases is already far finer than any ECG needs, and larger ones cost memory).
_MAX_RESAMPLING_FACTOR = 10_000


@dataclass(frozen=True)
class InputSpec:
    """What one checkpoint wants as input; hashable, so checkpoints with equal specs share a batch."""

    sampling_rate: float | None  # None: keep the native rate
    samples: int | None  # None: the record length
    leads: tuple[str, ...]
    layout: str  # "NCT" (batch, leads, time) | "NTC" (batch, time, leads)
    normalization: str  # "none" | "zscore" | "minmax"
    dtype: str  # "float32" | "float64"

    def __post_init__(self) -> None:
        if self.layout not in LAYOUTS:
            raise InputError(f"input layout must be one of {', '.join(LAYOUTS)}, got {self.layout!r}")
        if self.normalization not in NORMALIZATIONS:
            raise InputError(f"normalization must be one of {', '.join(NORMALIZATIONS)}, got {self.normalization!r}")
        if self.dtype not in DTYPES:
            raise InputError(f"input dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        if self.sampling_rate is not None and not (math.isfinite(self.sampling_rate) and self.sampling_rate > 0):
            raise InputError(f"sampling rate must be a positive number, got {self.sampling_rate!r}")
        if self.samples is not None and self.samples < 1:
            raise InputError(f"samples must be a positive integer, got {self.samples!r}")
        if not self.leads:
            raise InputError("an input spec needs at least one lead")


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


def prepare(
    signals: np.ndarray | Sequence[np.ndarray],
    sampling_rate: float,
    leads: Sequence[str],
    spec: InputSpec,
) -> np.ndarray:
    """Records (b, T, L) or b arrays (T_i, L) at `sampling_rate` -> the C-contiguous model input of `spec`.

    Steps, in order: select and reorder leads; resample to the spec's rate; crop to the first
    `samples` (normalisation statistics come from the kept signal); normalise per record and lead;
    zero-pad at the end to `samples`; cast to the spec's dtype in the spec's layout, (b, L, T) for
    NCT or (b, T, L) for NTC. Records of equal length (the usual case) are processed as one array.
    """
    working = np.dtype(spec.dtype)
    indices = lead_indices(leads, spec.leads)
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
    processed = [_resample_and_crop(_select_leads(group, indices), sampling_rate, spec, working) for group in groups]
    length = spec.samples if spec.samples is not None else max(group.shape[1] for group in processed)
    count = sum(group.shape[0] for group in processed)
    shape = (count, len(indices), length) if spec.layout == "NCT" else (count, length, len(indices))
    output = np.zeros(shape, dtype=working)
    start = 0
    for group in processed:
        kept = group.shape[1]
        if spec.normalization != "none":
            group = _normalize(group, spec.normalization)
        stop = start + group.shape[0]
        if spec.layout == "NCT":
            output[start:stop, :, :kept] = group.transpose(0, 2, 1)
        else:
            output[start:stop, :kept, :] = group
        start = stop
    return output


def _select_leads(group: np.ndarray, indices: list[int]) -> np.ndarray:
    """The wanted lead columns; a view when they are all columns in order (no copy)."""
    if indices == list(range(group.shape[2])):
        return group
    return group[:, :, indices]


def _resample_and_crop(group: np.ndarray, sampling_rate: float, spec: InputSpec, working: np.dtype) -> np.ndarray:
    """Resample along time to the spec's rate and keep at most the first `samples`, in the working dtype."""
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
    if spec.samples is not None and group.shape[1] > spec.samples:
        group = group[:, : spec.samples]
    return group.astype(working, copy=False)


def _normalize(group: np.ndarray, normalization: str) -> np.ndarray:
    """Per record and lead over time: zscore to mean 0 and sd 1, minmax to [-1, 1]; flat leads become 0."""
    if group.shape[1] == 0:
        return group
    if normalization == "zscore":
        center = group.mean(axis=1, keepdims=True)
        scale = group.std(axis=1, keepdims=True)
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
