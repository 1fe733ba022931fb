"""Preprocessing: resampling, cropping/padding, lead selection, normalisation, layout and dtype."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from melep_cli.errors import InputError
from melep_cli.preprocess import STANDARD_LEADS, InputSpec, prepare, resampling_factors

LEADS = STANDARD_LEADS


def spec(**changes) -> InputSpec:
    values = dict(sampling_rate=None, samples=None, leads=LEADS, layout="NTC", normalization="none", dtype="float32")
    values.update(changes)
    return InputSpec(**values)


def test_resampling_factors_are_reduced_rationals():
    assert resampling_factors(100, 500) == (5, 1)
    assert resampling_factors(500, 100) == (1, 5)
    assert resampling_factors(360, 500) == (25, 18)
    assert resampling_factors(500.0, 257.0) == (257, 500)
    assert resampling_factors(0.1, 0.3) == (3, 1)  # through decimal text, not binary floats


def test_upsampling_100_to_500_hz_matches_the_real_500_hz_recording(read_ptbxl):
    low, leads = read_ptbxl(1, 100)
    high, _ = read_ptbxl(1, 500)
    upsampled = prepare(low[np.newaxis], 100, leads, spec(sampling_rate=500, leads=leads, dtype="float64"))[0]
    assert upsampled.shape == high.shape == (5000, 12)
    for lead in range(12):
        assert np.corrcoef(upsampled[:, lead], high[:, lead])[0, 1] > 0.9, leads[lead]


def test_100_to_500_hz_and_back_recovers_the_record_away_from_the_edges(read_ptbxl):
    low, leads = read_ptbxl(2, 100)
    upsampled = prepare(low[np.newaxis], 100, leads, spec(sampling_rate=500, leads=leads))
    back = prepare(upsampled, 500, leads, spec(sampling_rate=100, leads=leads))[0]
    assert back.shape == low.shape
    np.testing.assert_allclose(back[50:-50], low[50:-50], atol=0.01)  # millivolts


def test_downsampling_500_to_100_hz_matches_ptbxl_own_100_hz_file(read_ptbxl):
    high, leads = read_ptbxl(3, 500)
    low, _ = read_ptbxl(3, 100)
    downsampled = prepare(high[np.newaxis], 500, leads, spec(sampling_rate=100, leads=leads))[0]
    assert downsampled.shape == low.shape == (1000, 12)
    assert np.median(np.abs(downsampled - low)) < 0.01
    assert min(np.corrcoef(downsampled[:, k], low[:, k])[0, 1] for k in range(12)) > 0.95


def test_leads_are_selected_and_reordered_by_name_case_insensitively(read_ptbxl):
    record, leads = read_ptbxl(4, 100)
    assert "AVR" in leads  # PTB-XL spells it in capitals; metadata usually says aVR
    wanted = ("V6", "aVR", "I")
    prepared = prepare(record[np.newaxis], 100, leads, spec(leads=wanted, layout="NCT"))
    assert prepared.shape == (1, 3, 1000)
    np.testing.assert_array_equal(prepared[0, 0], record[:, leads.index("V6")])
    np.testing.assert_array_equal(prepared[0, 1], record[:, leads.index("AVR")])
    np.testing.assert_array_equal(prepared[0, 2], record[:, leads.index("I")])


def test_a_missing_lead_is_an_error_naming_it():
    signals = np.zeros((1, 100, 2), dtype=np.float32)
    with pytest.raises(InputError, match="'V7'"):
        prepare(signals, 100, ("I", "II"), spec(leads=("I", "V7")))


def test_minmax_matches_a_hand_computation_on_real_records(read_ptbxl):
    records = np.stack([read_ptbxl(ecg_id, 100)[0] for ecg_id in (5, 6, 7)])
    leads = read_ptbxl(5, 100)[1]
    prepared = prepare(records, 100, leads, spec(leads=leads, normalization="minmax", dtype="float64"))
    low = records.min(axis=1, keepdims=True).astype(np.float64)
    high = records.max(axis=1, keepdims=True).astype(np.float64)
    expected = 2 * (records - low) / (high - low) - 1
    np.testing.assert_allclose(prepared, expected, atol=1e-6)
    assert prepared.min() == pytest.approx(-1) and prepared.max() == pytest.approx(1)


def test_zscore_gives_each_record_and_lead_mean_0_and_sd_1(read_ptbxl):
    record, leads = read_ptbxl(8, 100)
    prepared = prepare(record[np.newaxis], 100, leads, spec(leads=leads, normalization="zscore", dtype="float64"))
    np.testing.assert_allclose(prepared.mean(axis=1), 0, atol=1e-9)
    np.testing.assert_allclose(prepared.std(axis=1), 1, atol=1e-6)


@pytest.mark.parametrize("normalization", ["zscore", "minmax"])
def test_flat_leads_become_zero_without_dividing_by_zero(normalization):
    signals = np.ones((2, 50, 12), dtype=np.float32)
    signals[1, :, 3] = np.linspace(-1, 1, 50)
    with np.errstate(all="raise"):
        prepared = prepare(signals, 100, LEADS, spec(normalization=normalization))
    assert np.isfinite(prepared).all()
    assert not prepared[0].any()
    assert prepared[1, :, 3].any()


def test_longer_records_are_cropped_to_the_first_samples():
    signals = np.arange(2 * 10 * 12, dtype=np.float32).reshape(2, 10, 12)
    prepared = prepare(signals, 100, LEADS, spec(samples=4))
    np.testing.assert_array_equal(prepared, signals[:, :4])


def test_shorter_records_are_zero_padded_at_the_end_after_normalisation():
    rng = np.random.default_rng(0)
    signals = rng.normal(3, 2, size=(2, 6, 12)).astype(np.float32)
    prepared = prepare(signals, 100, LEADS, spec(samples=10, normalization="zscore", layout="NCT"))
    assert prepared.shape == (2, 12, 10)
    assert not prepared[:, :, 6:].any()
    # statistics come from the real samples, not the padding
    np.testing.assert_allclose(prepared[:, :, :6].mean(axis=2), 0, atol=1e-5)


def test_layouts_are_transposes_and_c_contiguous_in_the_requested_dtype():
    rng = np.random.default_rng(1)
    signals = rng.normal(size=(3, 20, 12)).astype(np.float32)
    nct = prepare(signals, 100, LEADS, spec(layout="NCT", dtype="float64"))
    ntc = prepare(signals, 100, LEADS, spec(layout="NTC", dtype="float64"))
    assert nct.shape == (3, 12, 20) and ntc.shape == (3, 20, 12)
    assert nct.flags.c_contiguous and ntc.flags.c_contiguous
    assert nct.dtype == ntc.dtype == np.float64
    np.testing.assert_array_equal(nct, ntc.transpose(0, 2, 1))


def test_records_of_different_lengths_are_each_prepared_like_alone():
    rng = np.random.default_rng(2)
    records = [rng.normal(size=(length, 12)).astype(np.float32) for length in (300, 500, 300)]
    target = spec(sampling_rate=50, samples=200, normalization="minmax", layout="NCT")
    together = prepare(records, 100, LEADS, target)
    alone = np.concatenate([prepare(record[np.newaxis], 100, LEADS, target) for record in records])
    assert together.shape == (3, 12, 200)
    np.testing.assert_allclose(together, alone, atol=1e-6)


def test_nan_samples_are_an_input_error_naming_the_record():
    signals = np.zeros((3, 10, 12), dtype=np.float32)
    signals[2, 4, 0] = np.nan
    with pytest.raises(InputError, match="record 2"):
        prepare(signals, 100, LEADS, spec())


def test_input_spec_rejects_unknown_values():
    with pytest.raises(InputError, match="layout"):
        spec(layout="TNC")
    with pytest.raises(InputError, match="normalization"):
        spec(normalization="robust")


def test_equal_specs_are_equal_and_hashable():
    assert spec(samples=10) == spec(samples=10)
    assert len({spec(samples=10), spec(samples=10), spec(samples=11)}) == 2


@settings(max_examples=40, deadline=None)
@given(
    arrays(
        np.float32, st.tuples(st.integers(1, 3), st.integers(1, 30), st.just(12)), elements=st.floats(-5, 5, width=32)
    )
)
def test_minmax_output_stays_within_minus_one_and_one(signals):
    prepared = prepare(signals, 100, LEADS, spec(normalization="minmax"))
    assert prepared.shape == signals.shape
    assert np.isfinite(prepared).all()
    assert prepared.min() >= -1 - 1e-6 and prepared.max() <= 1 + 1e-6
