"""PhysioNet/CinC Challenge 2020/2021 records: `.mat` signals, SNOMED CT `#Dx` labels, and WFDB samples in mV.

The headers are read by `melep_cli.targets.wfdb_header` (Challenge headers are WFDB headers with a few quirks);
this module decodes what they describe: `physical` turns digital values into millivolts with each signal's gain,
baseline and units, `read_mat_signal` reads a Challenge `.mat` file, `dx_codes` reads the `#Dx:` labels.

WFDB's invalid-sample value (the lowest value of each format, -32768 in format 16) marks a missing
sample; wfdb reads it as NaN. `check_invalid_samples` finds it where melep decodes the samples itself,
so that such a record is skipped with one reason (`missing_samples_error`) whichever path reads it.

The SNOMED CT -> abbreviation table `melep_cli/data/dx_mapping.csv` is the Challenge 2021 mapping
(physionetchallenges/evaluation-2021, MIT License) with the scored equivalence pairs merged.
"""

from __future__ import annotations

import csv
import functools
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources

import numpy as np

from melep_cli.errors import TargetError
from melep_cli.targets.wfdb_header import (
    INVALID_SAMPLE,
    Header,
    SignalSpec,
    _coefficients,
    _parse_header_fields,
    _parse_plain_header,
    _signal_spec,
    _split_header,
    parse_header,
)

#: This module's names, and the header parser's names that the tests import from here.
__all__ = [
    "INVALID_SAMPLE",
    "DxMapping",
    "Header",
    "SignalSpec",
    "_coefficients",
    "_parse_header_fields",
    "_parse_plain_header",
    "_signal_spec",
    "_split_header",
    "check_invalid_samples",
    "dx_codes",
    "load_dx_mapping",
    "missing_samples_error",
    "parse_header",
    "physical",
    "read_mat_signal",
]


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
