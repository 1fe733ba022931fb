"""The published input conventions, key by key: melep's `prepare` against numpy/scipy written here.

Real records: sample_data/ptbxl_target.h5 (PTB-XL, 100 Hz, 10 s) and ../shared/data/cinc2021 (500 Hz,
10-20 s). Each test computes what the key means itself (slicing, scipy.signal.butter + sosfiltfilt,
resample_poly) and compares to 1e-5.
"""

from __future__ import annotations

import json
import logging
from fractions import Fraction
from pathlib import Path

import h5py
import numpy as np
import pytest
from scipy.signal import butter, resample_poly, sosfiltfilt

from melep_cli.errors import InputError, MissingLeadsError
from melep_cli.preprocess import STANDARD_LEADS, BandFilter, InputSpec, Scaler, Windows, prepare

SAMPLE_TARGET = Path(__file__).resolve().parents[1] / "sample_data" / "ptbxl_target.h5"
CINC = Path(__file__).resolve().parents[2] / "shared" / "data" / "cinc2021"


def ptbxl_records(count: int = 20) -> np.ndarray:
    """The first `count` records of the sample target: (count, 1000, 12) float64 millivolts at 100 Hz."""
    with h5py.File(SAMPLE_TARGET) as handle:
        return handle["signals"][:count].astype(np.float64)


def cinc_records() -> list[tuple[np.ndarray, list[str]]]:
    """The CinC 2021 records longer than 10 s (12, 17 and 20 s at 500 Hz) and one of 10 s, in mV, (T, 12)."""
    from scipy.io import loadmat

    if not CINC.is_dir():
        pytest.skip(f"CinC 2021 records not found at {CINC}")
    records = []
    for header in sorted(CINC.glob("*.hea")):
        lines = header.read_text().splitlines()
        samples = int(lines[0].split()[3])
        if samples > 5000 or not records:
            signal = loadmat(str(header.with_suffix(".mat")))["val"].T.astype(np.float64) / 1000
            names = [line.split()[-1] for line in lines[1:13]]
            records.append((signal, names))
    if len(records) < 3:
        pytest.skip("fewer CinC records longer than 10 s than expected")
    return records


def spec(**changes) -> InputSpec:
    values = dict(
        sampling_rate=100.0, samples=None, leads=STANDARD_LEADS, layout="NTC", normalization="none", dtype="float64"
    )
    values.update(changes)
    return InputSpec(**values)


def zscore(x: np.ndarray, axis) -> np.ndarray:
    std = x.std(axis=axis, keepdims=True)
    return (x - x.mean(axis=axis, keepdims=True)) / np.where(std == 0, 1, std)


@pytest.mark.parametrize(
    ("highpass", "lowpass", "order"), [(0.67, 40.0, 4), (0.5, None, 2), (None, 25.0, 4), (1.0, 45.0, 3)]
)
def test_filter_is_sosfiltfilt_of_a_butterworth_filter(highpass, lowpass, order):
    records = ptbxl_records()
    band = BandFilter(highpass, lowpass, order)
    got = prepare(records, 100, STANDARD_LEADS, spec(filter=band))
    btype, edges = {
        (True, True): ("bandpass", [highpass, lowpass]),
        (True, False): ("highpass", highpass),
        (False, True): ("lowpass", lowpass),
    }[(highpass is not None, lowpass is not None)]
    sos = butter(order, edges, btype=btype, fs=100, output="sos")
    expected = sosfiltfilt(sos, records, axis=1)
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)
    assert np.abs(got - records).max() > 0.01  # the filter changed the records


def test_filter_runs_after_resampling_at_the_model_rate():
    records = ptbxl_records(8)
    got = prepare(records, 100, STANDARD_LEADS, spec(sampling_rate=250.0, filter=BandFilter(0.67, 40.0)))
    upsampled = resample_poly(records, 5, 2, axis=1)
    expected = sosfiltfilt(butter(4, [0.67, 40], btype="bandpass", fs=250, output="sos"), upsampled, axis=1)
    assert got.shape == (8, 2500, 12)
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)


def test_crop_center_keeps_the_middle_samples_and_start_the_first():
    records = ptbxl_records()
    center = prepare(records, 100, STANDARD_LEADS, spec(samples=250, crop="center"))
    start = prepare(records, 100, STANDARD_LEADS, spec(samples=250))
    np.testing.assert_array_equal(center, records[:, 375:625])
    np.testing.assert_array_equal(start, records[:, :250])


def test_crop_center_of_odd_lengths_on_real_cinc_records():
    for signal, _ in cinc_records():
        got = prepare(signal[np.newaxis], 500, STANDARD_LEADS, spec(sampling_rate=500.0, samples=4096, crop="center"))
        first = (len(signal) - 4096) // 2
        np.testing.assert_array_equal(got[0], signal[first : first + 4096])


def test_scale_multiplies_the_millivolt_signal_before_a_fitted_scaler():
    records = ptbxl_records()
    mean = records[:10].mean(axis=(0, 1)) * 1000
    std = records[:10].std(axis=(0, 1)) * 1000
    scaler = Scaler(tuple(mean), tuple(std))
    got = prepare(records, 100, STANDARD_LEADS, spec(scale=1000.0, normalization=scaler))
    np.testing.assert_allclose(got, (records * 1000 - mean) / std, atol=1e-5)
    scaled = prepare(records, 100, STANDARD_LEADS, spec(scale=0.001))
    np.testing.assert_allclose(scaled, records / 1000, atol=1e-9)


def test_a_fitted_scaler_is_in_the_models_lead_order():
    records = ptbxl_records()
    leads = ("V6", "I", "aVR")
    scaler = Scaler((0.1, -0.2, 0.3), (2.0, 0.5, 1.5))
    got = prepare(records, 100, STANDARD_LEADS, spec(leads=leads, normalization=scaler))
    columns = [STANDARD_LEADS.index(lead) for lead in leads]
    expected = (records[:, :, columns] - np.array([0.1, -0.2, 0.3])) / np.array([2.0, 0.5, 1.5])
    np.testing.assert_allclose(got, expected, atol=1e-9)


def test_zscore_record_uses_one_mean_and_std_over_every_lead():
    records = ptbxl_records()
    got = prepare(records, 100, STANDARD_LEADS, spec(normalization="zscore-record"))
    np.testing.assert_allclose(got, zscore(records, (1, 2)), atol=1e-5)
    per_lead = prepare(records, 100, STANDARD_LEADS, spec(normalization="zscore"))
    assert np.abs(got - per_lead).max() > 0.1  # not the per-lead z-score


def test_layout_nt_concatenates_the_leads_lead_after_lead():
    records = ptbxl_records()
    got = prepare(records, 100, STANDARD_LEADS, spec(layout="NT", samples=500))
    expected = np.concatenate([records[:, :500, lead] for lead in range(12)], axis=1)
    assert got.shape == (20, 6000)
    np.testing.assert_array_equal(got, expected)


def test_windows_every_stride_samples_that_fit_in_the_record():
    records = ptbxl_records(6)
    got = prepare(records, 100, STANDARD_LEADS, spec(samples=250, windows=Windows(125, "max"), layout="NCT"))
    starts = [0, 125, 250, 375, 500, 625, 750]  # 750 + 250 = 1000 fits; 875 does not
    expected = np.stack([records[:, start : start + 250].transpose(0, 2, 1) for start in starts], axis=1)
    assert got.shape == (6 * 7, 12, 250)
    np.testing.assert_array_equal(got.windows_per_record, [7] * 6)
    np.testing.assert_array_equal(np.asarray(got), expected.reshape(42, 12, 250))


def test_windows_of_records_of_different_lengths_and_a_short_one():
    records = [signal for signal, _ in cinc_records()]
    short = records[0][:1500]  # 3 s: one zero-padded window
    batch = [*records, short]
    window = 2500
    got = prepare(batch, 500, STANDARD_LEADS, spec(sampling_rate=500.0, samples=window, windows=Windows(1000)))
    expected, counts = [], []
    for signal in batch:
        starts = range(0, len(signal) - window + 1, 1000) if len(signal) >= window else [0]
        counts.append(len(starts))
        for start in starts:
            piece = np.zeros((window, 12))
            chunk = signal[start : start + window]
            piece[: len(chunk)] = chunk
            expected.append(piece)
    np.testing.assert_array_equal(got.windows_per_record, counts)
    assert counts[-1] == 1 and max(counts) == 8  # 20 s at 500 Hz: (10000 - 2500) / 1000 + 1 windows
    np.testing.assert_array_equal(np.asarray(got), np.stack(expected))


def test_each_window_is_normalised_on_its_own():
    records = ptbxl_records(4)
    got = prepare(records, 100, STANDARD_LEADS, spec(samples=500, windows=Windows(500), normalization="zscore"))
    expected = np.concatenate([zscore(records[:, :500], 1)[:, None], zscore(records[:, 500:], 1)[:, None]], axis=1)
    np.testing.assert_allclose(np.asarray(got), expected.reshape(8, 500, 12), atol=1e-5)


def test_code_convention_on_cinc_records_named_di_dii_diii():
    """Ribeiro's CODE model: 400 Hz, 4,096 samples zero-padded, leads DI, DII, DIII, AVR, AVL, AVF, V1-V6."""
    code_leads = ("DI", "DII", "DIII", "AVR", "AVL", "AVF", "V1", "V2", "V3", "V4", "V5", "V6")
    signal, names = cinc_records()[0]
    assert names == list(STANDARD_LEADS)
    wanted = spec(sampling_rate=400.0, samples=4096, leads=code_leads, scale=10.0)
    got = prepare(signal[np.newaxis], 500, names, wanted)[0]
    ratio = Fraction(400, 500)
    resampled = resample_poly(signal, ratio.numerator, ratio.denominator, axis=0)[:4096] * 10
    expected = np.zeros((4096, 12))
    expected[: len(resampled)] = resampled
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_a_missing_lead_is_an_error_or_zeros_with_one_warning(melep_log):
    records = ptbxl_records()
    limb = records[:, :, :6]  # a target with only the limb leads, named as no other test names them
    names = ("Lead I", "Lead II", "Lead III", "Lead aVR", "Lead aVL", "Lead aVF")
    with pytest.raises(MissingLeadsError, match="V1"):
        prepare(limb, 100, names, spec())
    zeroed = spec(missing_leads="zero")
    with melep_log.at_level(logging.WARNING, logger="melep"):
        for _ in range(3):  # batch after batch: one warning
            got = prepare(limb, 100, names, zeroed)
    np.testing.assert_array_equal(got[:, :, :6], limb)
    np.testing.assert_array_equal(got[:, :, 6:], 0)
    warnings = {id(record): record.getMessage() for record in melep_log.records if "zeros" in record.getMessage()}
    assert len(warnings) == 1 and "'V1'" in next(iter(warnings.values())), warnings


@pytest.mark.parametrize(
    ("changes", "key"),
    [
        (dict(windows=Windows(0), samples=250), "'windows'"),
        (dict(windows=Windows(100)), "'windows' needs 'samples'"),
        (dict(windows=Windows(100, "median"), samples=250), "'windows'"),
        (dict(normalization=Scaler((0.0,) * 11, (1.0,) * 11)), "'normalization'"),
        (dict(normalization=Scaler((0.0,) * 12, (1.0,) * 11 + (0.0,))), "'normalization'"),
        (dict(filter=BandFilter(0.5, 50.0)), "'filter' lowpass 50 Hz is at or above the Nyquist"),
        (dict(filter=BandFilter(40.0, 0.5)), "'filter'"),
        (dict(filter=BandFilter(None, None)), "'filter'"),
        (dict(crop="middle"), "'crop'"),
        (dict(scale=0.0), "'scale'"),
        (dict(missing_leads="ignore"), "'missing_leads'"),
    ],
)
def test_inconsistent_specs_are_errors_naming_the_key(changes, key):
    with pytest.raises(InputError, match=key):
        spec(**changes)


def test_stored_specs_record_every_new_key_as_json():
    """forward() stores each spec as JSON in the outputs store: the new values must serialise."""
    from melep_cli.forward_pass import _spec_dict

    full = spec(samples=250, windows=Windows(125, "max"), filter=BandFilter(0.5, 40.0), scale=10.0, crop="start")
    text = json.dumps(_spec_dict(full))
    assert '"windows": [125, "max"]' in text and '"filter": [0.5, 40.0, 4]' in text


@pytest.mark.parametrize(
    ("name", "standard"),
    [
        ("DI", "I"),
        ("D1", "I"),
        ("LEAD I", "I"),
        ("lead_ii", "II"),
        ("DII", "II"),
        ("MLII", "II"),
        ("DIII", "III"),
        ("AVR", "aVR"),
        ("avl", "aVL"),
        ("AVF", "aVF"),
        ("v6", "V6"),
        ("V7", None),
        ("Pleth", None),
    ],
)
def test_lead_aliases_name_the_standard_lead(name, standard):
    from melep_cli.preprocess import standard_lead

    assert standard_lead(name) == standard


def test_inspect_target_shows_how_lead_names_given_with_lead_names_matched(capsys):
    from melep_cli.cli import run

    names = "DI,DII,DIII,AVR,AVL,AVF,V1,V2,V3,V4,V5,Pleth"
    assert run(["inspect", str(SAMPLE_TARGET), "--lead-names", names, "--format", "json"]) == 0
    matching = json.loads(capsys.readouterr().out)["lead_matching"]
    assert [(entry["lead"], entry["standard"]) for entry in matching][:4] == [
        ("DI", "I"),
        ("DII", "II"),
        ("DIII", "III"),
        ("AVR", "aVR"),
    ]
    assert matching[-1] == {"lead": "Pleth", "standard": None}
    assert run(["inspect", str(SAMPLE_TARGET), "--lead-names", names]) == 0
    assert "not a standard lead" in capsys.readouterr().out
