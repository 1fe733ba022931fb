"""Checkpoint metadata: the JSON object of FORMATS.md, where it is found, validated, with its defaults.

Sources, first found wins: ONNX `metadata_props["melep"]`, the TorchScript extra file `melep.json`,
a sidecar `<stem>.json` next to the checkpoint. Wrong types are errors naming the key; unknown keys
are warnings; keys left out take defaults and are listed in `defaulted`.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from melep_cli.errors import CheckpointError, InputError, MelepError
from melep_cli.metric import ACTIVATIONS
from melep_cli.preprocess import (
    CROPS,
    DEFAULT_FILTER_ORDER,
    DTYPES,
    LAYOUTS,
    MISSING_LEADS,
    NORMALIZATIONS,
    STANDARD_LEADS,
    BandFilter,
    Scaler,
    Windows,
    check_filter,
    check_scaler,
    check_windows,
    lead_key,
)

logger = logging.getLogger("melep")

METADATA_KEY = "melep"  # ONNX metadata_props key
EXTRA_FILE = "melep.json"  # TorchScript extra file
#: Values of the metadata key 'output': the metric's activations.
OUTPUTS = ACTIVATIONS
KNOWN_KEYS = (
    "labels",
    "sampling_rate",
    "samples",
    "leads",
    "layout",
    "output",
    "normalization",
    "dtype",
    "source_prevalence",
    "name",
    "description",
    "scores_output",
    "features_output",
    "crop",
    "windows",
    "filter",
    "scale",
    "missing_leads",
)
#: Input keys of the published conventions: absent means today's behaviour, so they are not reported as defaults.
_OPTIONAL_INPUT_KEYS = ("crop", "windows", "filter", "scale", "missing_leads")
#: Keys listed in `defaulted` when absent (source_prevalence and features_output have no default: absent means none).
DEFAULTABLE_KEYS = tuple(
    key for key in KNOWN_KEYS if key not in ("source_prevalence", "features_output", *_OPTIONAL_INPUT_KEYS)
)
#: Keys whose default changes results; the others (name, description) default harmlessly.
CONSEQUENTIAL_KEYS = ("labels", "sampling_rate", "samples", "leads", "layout", "output", "normalization", "dtype")


@dataclass(frozen=True)
class CheckpointMetadata:
    """What a checkpoint expects and produces; None where the value is derived later (model or target).

    `defaulted` lists the keys the metadata did not give; `origin` says where the JSON came from.
    """

    labels: tuple[str, ...] | None = None  # None: out0 .. out{Z-1} once Z is known
    sampling_rate: float | None = None  # None: the target's rate
    samples: int | None = None  # None: the ONNX input's static length, else the record length
    leads: tuple[str, ...] = STANDARD_LEADS
    layout: str | None = None  # None: from the ONNX input shape, else probed
    output: str = "logits"
    normalization: str | Scaler = "none"
    dtype: str | None = None  # None: the ONNX input's declared type / the TorchScript parameters' type
    source_prevalence: tuple[float, ...] | None = None
    name: str | None = None  # None: the file stem
    description: str | None = None
    scores_output: str | int | None = None  # None: the only output, or the first
    features_output: str | int | None = None  # None: no features output
    crop: str | None = None  # None: "start"
    windows: Windows | None = None  # None: one input per record
    filter: BandFilter | None = None  # None: no filter
    scale: float | None = None  # None: 1 (millivolts)
    missing_leads: str | None = None  # None: "error"
    defaulted: tuple[str, ...] = DEFAULTABLE_KEYS
    origin: str = "none"
    extra: Mapping[str, Any] = field(default_factory=dict)  # unknown keys, kept for annotate

    def to_document(self) -> dict[str, Any]:
        """The keys that were given (not the defaults), as the JSON object to store."""
        document: dict[str, Any] = dict(self.extra)
        for key in KNOWN_KEYS:
            value = getattr(self, key)
            if key in self.defaulted or value is None:
                continue
            document[key] = to_json_value(value)
        return document


def to_json_value(value: Any) -> Any:
    """A metadata value as JSON: scalers, windows and filters as objects, tuples as arrays."""
    if isinstance(value, (Scaler, Windows, BandFilter)):
        return {key: to_json_value(item) for key, item in value._asdict().items() if item is not None}
    return list(value) if isinstance(value, tuple) else value


def parse_metadata(document: Any, *, where: str, origin: str) -> CheckpointMetadata:
    """Validate a metadata JSON object; `where` (usually the checkpoint path) starts every error message."""
    values = validate_metadata(document, where=where, origin=origin)
    unknown = {key: value for key, value in values.items() if key not in KNOWN_KEYS}
    given = {key: value for key, value in values.items() if key in KNOWN_KEYS}
    for key in unknown:
        logger.warning(
            "%s: unknown metadata key %r in %s (ignored; known keys: %s)", where, key, origin, ", ".join(KNOWN_KEYS)
        )
    metadata = CheckpointMetadata(
        **given,
        defaulted=tuple(key for key in DEFAULTABLE_KEYS if key not in given),
        origin=origin,
        extra=unknown,
    )
    prevalence, labels = metadata.source_prevalence, metadata.labels
    if labels is not None and prevalence is not None and len(prevalence) != len(labels):
        raise CheckpointError(
            f"{where}: metadata key 'source_prevalence' has {len(prevalence)} values "
            f"but 'labels' has {len(labels)} ({origin})"
        )
    check_consistency(metadata, where=where, origin=origin)
    return metadata


def check_consistency(
    metadata: CheckpointMetadata, *, where: str, origin: str, error: type[MelepError] = CheckpointError
) -> None:
    """Checks across keys: a scaler per lead, a filter below the model rate's Nyquist frequency, crop vs windows."""
    try:
        if isinstance(metadata.normalization, Scaler):
            check_scaler(metadata.normalization, len(metadata.leads))
        if metadata.filter is not None:
            check_filter(metadata.filter, metadata.sampling_rate)
    except InputError as problem:
        raise error(f"{where}: {problem} ({origin})") from None
    if metadata.windows is not None and metadata.crop not in (None, "start"):
        raise error(f"{where}: metadata key 'crop' {metadata.crop} does not apply with 'windows' ({origin})")


def validate_metadata(
    document: Any, *, where: str, origin: str, error: type[MelepError] = CheckpointError
) -> dict[str, Any]:
    """Known keys checked and normalised (tuples, upper-case layout, ...); JSON null counts as absent.

    Problems raise `error` (CheckpointError for stored metadata, UsageError for values a user typed).
    """
    if not isinstance(document, Mapping):
        raise error(f"{where}: metadata must be a JSON object, got {_type_name(document)} ({origin})")
    values: dict[str, Any] = {}
    for key, value in document.items():
        if value is None:
            continue
        checker = _CHECKERS.get(key)
        if checker is None:
            values[str(key)] = value
            continue
        try:
            values[key] = checker(value)
        except (TypeError, ValueError) as problem:
            raise error(
                f"{where}: metadata key {key!r} {problem}, got {json.dumps(value)[:80]} ({_type_name(value)}; {origin})"
            ) from None
    return values


def parse_metadata_text(text: str | bytes, *, where: str, origin: str) -> CheckpointMetadata:
    """Parse JSON text (an embedded property or file) into validated metadata."""
    try:
        document = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise CheckpointError(f"{where}: metadata in {origin} is not valid JSON ({error})") from None
    return parse_metadata(document, where=where, origin=origin)


def sidecar_path(checkpoint: str | Path) -> Path:
    """`<stem>.json` next to the checkpoint."""
    checkpoint = Path(checkpoint)
    return checkpoint.with_name(f"{checkpoint.stem}.json")


def resolve_metadata(checkpoint: Path, embedded: str | bytes | None, embedded_origin: str) -> CheckpointMetadata:
    """Embedded metadata if there is any, else the sidecar, else all defaults."""
    sidecar = sidecar_path(checkpoint)
    if embedded:
        if sidecar.is_file():
            logger.warning(
                "%s: sidecar %s ignored: the metadata in %s takes precedence", checkpoint, sidecar, embedded_origin
            )
        return parse_metadata_text(embedded, where=str(checkpoint), origin=embedded_origin)
    if sidecar.is_file():
        try:
            text = sidecar.read_bytes()
        except OSError as error:
            raise CheckpointError(f"{checkpoint}: cannot read sidecar {sidecar} ({error.strerror or error})") from None
        return parse_metadata_text(text, where=str(checkpoint), origin=f"sidecar {sidecar}")
    return CheckpointMetadata()


def _type_name(value: Any) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean", int: "integer", float: "number"}.get(
        type(value), type(value).__name__
    )


def _names(value: Any, what: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not value or not all(isinstance(item, str) and item.strip() for item in value):
        raise TypeError(f"must be a non-empty array of {what}")
    keys = [lead_key(item) if what == "lead names" else item for item in value]
    duplicates = sorted({item for item in keys if keys.count(item) > 1})
    if duplicates:
        raise ValueError(f"has duplicate {what} {', '.join(duplicates)}")
    return tuple(value)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _sampling_rate(value: Any) -> float:
    if not _number(value) or not math.isfinite(value) or value <= 0:
        raise TypeError("must be a positive number of Hz")
    return float(value)


def _samples(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise TypeError("must be a positive integer")
    return value


def _choice(choices: tuple[str, ...], *, upper: bool = False):
    def check(value: Any) -> str:
        if not isinstance(value, str):
            raise TypeError(f"must be one of {', '.join(choices)}")
        normalised = value.strip().upper() if upper else value.strip().lower()
        if normalised not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}")
        return normalised

    return check


def _prevalence(value: Any) -> tuple[float, ...]:
    if not isinstance(value, list) or not value or not all(_number(item) for item in value):
        raise TypeError("must be a non-empty array of numbers")
    if not all(0 <= item <= 1 for item in value):
        raise ValueError("must hold fractions between 0 and 1")
    return tuple(float(item) for item in value)


def _output_selector(value: Any) -> str | int:
    """An output name (non-empty string) or a non-negative index; which output is checked against the model."""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise TypeError("must be an output name (a non-empty string) or a non-negative integer index")
    if isinstance(value, str) and not value.strip():
        raise ValueError("must be a non-empty output name")
    if isinstance(value, int) and value < 0:
        raise ValueError("must be a non-negative output index")
    return value


def _object(value: Any, allowed: tuple[str, ...]) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise TypeError(f"must be an object with {', '.join(allowed)}")
    unknown = [key for key in value if key not in allowed]
    if unknown:
        raise ValueError(f"has unknown field {unknown[0]!r} (known: {', '.join(allowed)})")
    return value


def _windows(value: Any) -> Windows:
    fields = _object(value, ("stride", "aggregate"))
    if "stride" not in fields:
        raise ValueError("needs a stride (samples between window starts)")
    stride, aggregate = fields["stride"], fields.get("aggregate", "mean")
    if isinstance(aggregate, str):
        aggregate = aggregate.strip().lower()
    if isinstance(stride, float) and stride.is_integer():
        stride = int(stride)
    windows = Windows(stride, aggregate)
    try:
        check_windows(windows)
    except InputError as problem:
        raise ValueError(str(problem).removeprefix("metadata key 'windows' ")) from None
    return windows


def _filter(value: Any) -> BandFilter:
    fields = _object(value, ("highpass", "lowpass", "order"))
    bounds = []
    for name in ("highpass", "lowpass"):
        bound = fields.get(name)
        if bound is not None and not _number(bound):
            raise TypeError(f"{name} must be a number of Hz")
        bounds.append(None if bound is None else float(bound))
    order = fields.get("order", DEFAULT_FILTER_ORDER)
    if isinstance(order, float) and order.is_integer():
        order = int(order)
    band = BandFilter(bounds[0], bounds[1], order)
    try:
        check_filter(band, None)
    except InputError as problem:
        raise ValueError(str(problem).removeprefix("metadata key 'filter' ")) from None
    return band


def _scale(value: Any) -> float:
    if not _number(value) or not math.isfinite(value) or value == 0:
        raise TypeError("must be a finite non-zero number (the factor millivolts are multiplied by)")
    return float(value)


def _normalization(value: Any) -> str | Scaler:
    if isinstance(value, Mapping):
        fields = _object(value, ("mean", "std"))
        arrays = []
        for name in ("mean", "std"):
            numbers = fields.get(name)
            if not isinstance(numbers, list) or not numbers or not all(_number(item) for item in numbers):
                raise TypeError(f"{name} must be a non-empty array of numbers (one per lead)")
            arrays.append(tuple(float(item) for item in numbers))
        scaler = Scaler(*arrays)
        try:
            check_scaler(scaler)
        except InputError as problem:
            raise ValueError(str(problem).removeprefix("metadata key 'normalization' ")) from None
        return scaler
    try:
        return _choice(NORMALIZATIONS)(value)
    except TypeError:
        raise TypeError(
            f'must be one of {", ".join(NORMALIZATIONS)} or a scaler {{"mean": [...], "std": [...]}}'
        ) from None


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError("must be a string")
    return value


_CHECKERS = {
    "labels": lambda value: _names(value, "label names"),
    "sampling_rate": _sampling_rate,
    "samples": _samples,
    "leads": lambda value: _names(value, "lead names"),
    "layout": _choice(LAYOUTS, upper=True),
    "output": _choice(OUTPUTS),
    "normalization": _normalization,
    "dtype": _choice(DTYPES),
    "source_prevalence": _prevalence,
    "name": _text,
    "description": _text,
    "scores_output": _output_selector,
    "features_output": _output_selector,
    "crop": _choice(CROPS),
    "windows": _windows,
    "filter": _filter,
    "scale": _scale,
    "missing_leads": _choice(MISSING_LEADS),
}
