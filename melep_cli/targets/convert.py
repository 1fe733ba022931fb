"""`melep convert`: any target -> one HDF5 file in the FORMATS.md layout, decoded once, ranked many times.

Records are read at `sampling_rate` (open_target's: PTB-XL's 100 or 500 Hz files, the rate of an HDF5
file without the attribute), optionally resampled to `resample` Hz (scipy.signal.resample_poly, by the
factors of `preprocess.resampling_factors`, as `prepare` resamples) and cropped / zero-padded to a fixed
duration. The file's `sampling_rate` is the output rate, its `source_sampling_rates` the rates read.

Without `seconds`, records of different lengths are zero-padded to the longest and their true lengths
stored in a `lengths` dataset (an extension of the layout), which the HDF5 reader uses to give every
record back at its own length: nothing is lost and nothing is invented. The file is written under a
temporary name next to the output and renamed when complete.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from melep_cli.atomic import atomic_path
from melep_cli.errors import TargetError, UsageError
from melep_cli.preprocess import resampling_factors
from melep_cli.targets.base import Target
from melep_cli.targets.opener import NotApplicableError, TargetOptions, target_of

log = logging.getLogger("melep")

#: Target size of one HDF5 chunk: big enough to compress well, small enough to stream.
CHUNK_BYTES = 2**20

ProgressCallback = Callable[[int, int], None]


@dataclass(frozen=True)
class ConvertResult:
    """What `convert` wrote."""

    output: Path
    source: Path
    records: int
    samples: int  # T of the signals dataset
    sampling_rate: float  # of the written records
    leads: tuple[str, ...]
    label_names: tuple[str, ...]
    prevalence: tuple[float, ...]
    padded: bool  # records differ in length: zero-padded to the longest, true lengths in 'lengths'
    skipped: list[tuple[str, str]] = field(default_factory=list)
    source_sampling_rates: tuple[float, ...] = ()  # the rates the records were read at, ascending

    @property
    def resampled(self) -> bool:
        """Whether any record was written at another rate than it was read at."""
        return any(abs(rate - self.sampling_rate) > 1e-9 for rate in self.source_sampling_rates)

    def rates_text(self) -> str:
        """'read at 100 Hz, resampled to 500 Hz' or 'read at 500 Hz, not resampled'."""
        read = _rates_text(self.source_sampling_rates)
        if self.resampled:
            return f"read at {read}, resampled to {self.sampling_rate:g} Hz"
        return f"read at {read}, not resampled"

    def to_dict(self) -> dict[str, object]:
        """JSON-ready, as `melep convert --format json` prints it."""
        return {
            "output": str(self.output),
            "source": str(self.source),
            "records": self.records,
            "samples": self.samples,
            "sampling_rate": self.sampling_rate,
            "source_sampling_rates": list(self.source_sampling_rates),
            "resampled": self.resampled,
            "leads": list(self.leads),
            "labels": list(self.label_names),
            "prevalence": list(self.prevalence),
            "padded_to_longest": self.padded,
            "skipped": [{"id": record_id, "reason": reason} for record_id, reason in self.skipped],
        }


def _rates_text(rates: Sequence[float]) -> str:
    """(100.0,) -> '100 Hz'; (250.0, 500.0, 1000.0) -> '250, 500 and 1000 Hz'."""
    texts = [f"{rate:g}" for rate in rates]
    return (", ".join(texts[:-1]) + " and " + texts[-1] if len(texts) > 1 else "".join(texts)) + " Hz"


def resample(signals: np.ndarray, from_rate: float, to_rate: float, axis: int = 0) -> np.ndarray:
    """Polyphase resampling along `axis` (float32 out); a no-op when the rates are equal.

    The factors are `resampling_factors`', so a converted file holds what `prepare` would feed a model.
    """
    up, down = resampling_factors(from_rate, to_rate)
    if up == down:
        return np.asarray(signals, dtype=np.float32)
    from scipy.signal import resample_poly  # imported here: 0.5 s, paid by every melep command otherwise

    return resample_poly(signals, up, down, axis=axis).astype(np.float32)


def fit_length(signal: np.ndarray, samples: int) -> np.ndarray:
    """(T, L) cropped to the first `samples`, or zero-padded at the end."""
    if signal.shape[0] >= samples:
        return signal[:samples]
    return np.concatenate([signal, np.zeros((samples - signal.shape[0], signal.shape[1]), signal.dtype)])


def _lead_order(leads: Sequence[str], reference: Sequence[str], record_id: str, source: Path) -> np.ndarray | None:
    """Column order that brings `leads` into `reference` order (None: already in order)."""
    if tuple(leads) == tuple(reference):
        return None
    folded = [lead.casefold() for lead in leads]
    wanted = [lead.casefold() for lead in reference]
    if sorted(folded) != sorted(wanted):
        raise TargetError(
            f"{source}: record {record_id} has leads {', '.join(leads)}; earlier records have {', '.join(reference)}"
        )
    return np.array([folded.index(lead) for lead in wanted])


def convert(
    source: str | Path | Target,
    output: str | Path,
    *,
    resample: float | None = None,
    seconds: float | None = None,
    batch_size: int = 64,
    progress: ProgressCallback | None = None,
    compression_level: int = 4,
    target_options: TargetOptions | None = None,
) -> ConvertResult:
    """Write the records of `source` (any target, or an opened Target) to the HDF5 file `output`.

    resample: write the records at this rate (Hz); default: the rate they are read at (they must agree).
    seconds: crop / zero-pad every record to this duration; default: keep lengths (see module docstring).
    progress: called with (records processed, records in the target) after every batch.
    `target_options` open `source` as `open_target` does (sampling_rate: the rate the records are read at,
    PTB-XL's 100 or 500 Hz files; labels, folds, lead_names, strict, ...); None with an opened Target.
    """
    output = Path(output)
    if resample is not None and not (np.isfinite(resample) and resample > 0):
        raise UsageError(f"must be a positive number of Hz, got {resample}", parameter="resample")
    if seconds is not None and not (np.isfinite(seconds) and seconds > 0):
        raise UsageError(f"must be a positive number, got {seconds}", parameter="seconds")
    try:
        target = target_of(source, target_options)
    except NotApplicableError as error:
        if error.option != "sampling_rate":
            raise
        raise NotApplicableError(
            error.path, error.option, error.target_format, hint="to resample the records use {resample} HZ"
        ) from None
    if output.exists() and output.resolve() == target.path.resolve():
        raise UsageError(f"{output}: the output would overwrite the source")
    try:
        with atomic_path(output) as temporary, h5py.File(temporary, "w") as h5:
            result = _write(h5, target, output, resample, seconds, batch_size, progress, compression_level)
    except OSError as error:  # readers turn their own OSErrors into TargetError: this one is the output's
        raise UsageError(f"{output}: cannot write ({error.strerror or error})") from None
    return result


def _write(
    h5: h5py.File,
    target: Target,
    output: Path,
    resample: float | None,
    seconds: float | None,
    batch_size: int,
    progress: ProgressCallback | None,
    compression_level: int,
) -> ConvertResult:
    """Stream the target's batches into `h5` (signals grow by batch), then the labels, ids and attributes."""
    signals: h5py.Dataset | None = None
    rate: float | None = resample
    source_rates: set[float] = set()
    leads: tuple[str, ...] = ()
    samples: int | None = None
    written = 0
    lengths: list[int] = []
    label_rows: list[np.ndarray] = []
    ids: list[str] = []
    for batch in target.batches(batch_size):
        source_rates.add(float(batch.sampling_rate))
        if rate is None:
            rate = batch.sampling_rate
        elif resample is None and abs(batch.sampling_rate - rate) > 1e-9:
            raise TargetError(
                f"{target.path}: records have different sampling rates ({rate:g} and {batch.sampling_rate:g} Hz, "
                f"e.g. record {batch.ids[0]})",
                hint="pass {resample} HZ to resample them to one",
            )
        if not leads:
            leads = batch.leads
        order = _lead_order(batch.leads, leads, batch.ids[0], target.path)
        records = _prepared(batch.signals, batch.sampling_rate, rate, order)
        if seconds is not None:
            fixed = round(seconds * rate)
            if fixed < 1:
                raise UsageError(f"{seconds:g} at {rate:g} Hz is less than one sample", parameter="seconds")
            records = [fit_length(record, fixed) for record in records]
        longest = max(record.shape[0] for record in records)
        if signals is None:
            samples = longest
            signals = _create_signals(
                h5, samples, len(leads), fixed_length=seconds is not None, level=compression_level
            )
        elif longest > samples:  # type: ignore[operator]
            samples = longest
            signals.resize(samples, axis=1)
        block = np.zeros((len(records), samples, len(leads)), dtype=np.float32)
        for i, record in enumerate(records):
            block[i, : record.shape[0]] = record
        signals.resize(written + len(records), axis=0)
        signals[written : written + len(records)] = block
        written += len(records)
        lengths.extend(record.shape[0] for record in records)
        label_rows.append(batch.labels)
        ids.extend(batch.ids)
        if progress is not None:
            progress(written + len(target.skipped) - len(target.excluded), len(target))
    if signals is None or rate is None or samples is None:
        raise TargetError(f"{target.path}: no readable record to convert ({len(target.skipped)} skipped)")
    padded = len(set(lengths)) > 1
    label_matrix = np.concatenate(label_rows) if label_rows else np.zeros((0, len(target.label_names)), np.uint8)
    read_rates = tuple(sorted(source_rates))
    _write_metadata(h5, signals, target, rate, read_rates, leads, ids, label_matrix, lengths if padded else None)
    if padded:
        log.warning(
            f"{output}: records differ in length ({min(lengths)} to {max(lengths)} samples); zero-padded to the "
            "longest, true lengths stored in 'lengths' (readers crop to them); seconds gives one fixed length"
        )
    return ConvertResult(
        output=output,
        source=target.path,
        records=written,
        samples=samples,
        sampling_rate=float(rate),
        leads=tuple(leads),
        label_names=target.label_names,
        prevalence=tuple(float(p) for p in label_matrix.mean(axis=0, dtype=np.float64)),
        padded=padded,
        skipped=target.skipped,
        source_sampling_rates=read_rates,
    )


def _prepared(
    signals: np.ndarray | list[np.ndarray], from_rate: float, to_rate: float, order: np.ndarray | None
) -> list[np.ndarray]:
    """The batch's records, leads in the output order, at the output rate."""
    if isinstance(signals, np.ndarray):
        uniform = signals if order is None else signals[:, :, order]
        return list(resample(uniform, from_rate, to_rate, axis=1))
    return [resample(record if order is None else record[:, order], from_rate, to_rate) for record in signals]


def _create_signals(h5: h5py.File, samples: int, n_leads: int, *, fixed_length: bool, level: int) -> h5py.Dataset:
    rows = int(max(1, min(1024, CHUNK_BYTES // max(1, samples * n_leads * 4))))
    return h5.create_dataset(
        "signals",
        shape=(0, samples, n_leads),
        maxshape=(None, samples if fixed_length else None, n_leads),
        dtype=np.float32,
        chunks=(rows, samples, n_leads),
        compression="gzip",
        compression_opts=level,
        shuffle=True,
        fillvalue=0.0,
    )


def _write_metadata(
    h5: h5py.File,
    signals: h5py.Dataset,
    target: Target,
    rate: float,
    source_rates: Sequence[float],
    leads: Sequence[str],
    ids: Sequence[str],
    label_matrix: np.ndarray,
    lengths: Sequence[int] | None,
) -> None:
    """The layout's attributes and datasets beside `signals`; `leads` are the written (renamed) names."""
    from melep_cli import __version__

    for obj in (h5, signals):
        obj.attrs["sampling_rate"] = float(rate)
        obj.attrs["leads"] = np.array(list(leads), dtype=h5py.string_dtype())
    signals.attrs["units"] = "mV"
    h5.attrs["source"] = str(target.path)
    h5.attrs["source_format"] = target.format
    h5.attrs["source_sampling_rates"] = np.asarray(source_rates, dtype=np.float64)  # rates read; sampling_rate: written
    h5.attrs["label_source"] = target.label_source
    h5.attrs["created_by"] = f"melep {__version__} convert"
    labels = h5.create_dataset("labels", data=label_matrix.astype(np.uint8), compression="gzip")
    labels.attrs["label_names"] = np.array(list(target.label_names), dtype=h5py.string_dtype())
    h5.create_dataset("record_ids", data=np.array(list(ids), dtype=h5py.string_dtype()), compression="gzip")
    if lengths is not None:
        h5.create_dataset("lengths", data=np.asarray(lengths, dtype=np.int64))
