"""The fast paths of decoding against the general code they shortcut, which must give the very same results.

Header parsing (a fast path for the common header shape, the general parser for the rest), physical
units (per-header coefficients, scalars when the leads share them), the flat-record check (rows
compared with the first instead of per-lead max and min), HDF5 reads (slices instead of copies, int16
converted per batch) and the accumulator's in-place activation.
"""

from __future__ import annotations

import csv
import dataclasses
from pathlib import Path

import h5py
import numpy as np
import pytest

from melep_cli import MelepAccumulator, melep
from melep_cli.errors import TargetError
from melep_cli.targets import open_target
from melep_cli.targets.base import bad_record_reason, bad_rows
from melep_cli.targets.challenge import (
    Header,
    SignalSpec,
    _coefficients,
    _parse_header_fields,
    _parse_plain_header,
    _signal_spec,
    _split_header,
    parse_header,
    physical,
)
from melep_cli.targets.wfdb_dir import read_wfdb_signal

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
SAMPLE_WFDB = ROOT / "sample_data" / "cinc_wfdb"


def both_parsers(path: Path, text: str | None = None) -> tuple[Header | None, Header | str]:
    """(fast path's Header or None, general parser's Header or its error message) for one header."""
    fields, comments = _split_header(path.read_bytes().decode("latin-1") if text is None else text)
    fast = _parse_plain_header(path, fields, comments)
    try:
        general: Header | str = _parse_header_fields(path, fields, comments)
    except TargetError as error:
        general = str(error)
    return fast, general


def assert_same_header(fast: Header, general: Header | str) -> None:
    assert isinstance(general, Header), f"the fast path accepted a header the general parser rejects: {general}"
    assert fast == general
    assert type(fast.sampling_rate) is type(general.sampling_rate) is float
    assert type(fast.n_samples) is type(general.n_samples)
    for ours, theirs in zip(fast.signals, general.signals):
        assert [type(value) for value in vars(ours).values()] == [type(value) for value in vars(theirs).values()]


# ----- headers ----------------------------------------------------------------------------------------------------
def real_headers() -> list[Path]:
    headers = sorted(SAMPLE_WFDB.glob("*.hea"))
    if DATA.is_dir():
        headers += sorted(DATA.rglob("*.hea"))
    return headers


def test_fast_header_parse_equals_the_general_parser_on_every_real_header():
    headers = real_headers()
    assert headers, f"no headers in {SAMPLE_WFDB}"
    for path in headers:
        fast, general = both_parsers(path)
        assert fast is not None, f"{path}: the common header shape missed the fast path"
        assert_same_header(fast, general)
        parsed = parse_header(path)
        assert parsed == general
        # physical()'s coefficients, filled in by the fast path when every lead shares them
        for ours, theirs in zip(parsed._adu_to_mv, _coefficients(general.signals)):
            assert type(ours) is type(theirs) and np.array_equal(ours, theirs) if ours is not None else theirs is None


def test_every_shared_data_header_is_compared():
    if not DATA.is_dir():
        pytest.skip(f"{DATA} is absent")
    assert len(real_headers()) > 3000  # PTB-XL 100 + 500 Hz and the Challenge records


def test_signal_specs_of_the_fast_path_are_what_the_constructor_makes():
    values = ("rec.dat", "16", 24, 1000.0, -5.0, "uV", "aVR", True)
    fast, built = _signal_spec(*values), SignalSpec(*values)
    assert fast == built and hash(fast) == hash(built) and repr(fast) == repr(built)
    assert vars(fast) == vars(built) and list(vars(fast)) == [field.name for field in dataclasses.fields(SignalSpec)]
    with pytest.raises(dataclasses.FrozenInstanceError):
        fast.gain = 1.0  # type: ignore[misc]


SIGNAL_LINES = [
    # common shapes: the fast path takes them
    ("16 1000.0(0)/mV 16 0 -119 1508 0 I", True),
    ("16+24 1000/mV 16 0 -47 409 0 aVR", True),
    ("212 200 12 0 0 0 0 V1", True),
    ("16 200(-5)/uV 16 3 0 0 0 lead with spaces", True),
    ("16 0 16 0", True),  # gain 0 means the default gain; no name: lead<i>
    ("16 0 16", False),  # no ADC zero field
    ("80 -1/mV 8 128 0 0 0 II", True),
    ("16 2.5e2(7)/nV 16 0 0 0 0", True),
    ("16+99999999999999999999 1000/mV 16 0 0 0 0 I", True),
    ("16 1000/mV 16 0x10 0 0 0 I", True),  # ADC zero reads as its leading number, like the general parser
    # quirks: the general parser decides (a result or its error message)
    ("16x2 1000/mV 16 0 0 0 0 I", False),
    ("16:3+24 1000/mV 16 0 0 0 0 I", False),
    ("16 1000(x)/mV 16 0 0 0 0 I", False),
    ("16 1e999/mV 16 0 0 0 0 I", False),
    ("16 . 16 0 0 0 0 I", False),
    ("16 e 16 0 0 0 0 I", False),
    ("16 1000/mV 16 nan 0 0 0 I", False),
    ("16 1000/mV 16 1e999 0 0 0 I", False),
    ("16 1000/mV", False),
    ("16", False),
    ("x 1000/mV 16 0 0 0 0 I", False),
]


@pytest.mark.parametrize(("line", "fast_path"), SIGNAL_LINES)
def test_fast_header_parse_on_signal_line_quirks(tmp_path, line, fast_path):
    path = tmp_path / "rec.hea"
    text = f"rec 2 500 5000\nrec.dat {line}\nrec.dat {line}\n#Dx: 426783006\n"
    path.write_text(text)
    fast, general = both_parsers(path)
    if fast_path:
        assert fast is not None
        assert_same_header(fast, general)
    else:
        assert fast is None
    # parse_header gives the general parser's result or error either way
    if isinstance(general, Header):
        assert parse_header(path) == general
    else:
        with pytest.raises(TargetError) as error:
            parse_header(path)
        assert str(error.value) == general


@pytest.mark.parametrize(
    "record_line",
    [
        "rec 2 500/1000(0) 5000",  # counter frequency: general parser
        "rec 2 500",  # no number of samples
        "rec 2 0 5000",  # zero rate: the general parser's error
        "rec 2 500 99999999999999999",  # too long for float(): the general parser's rounding
        "rec 2 500.5 5000",
        "rec 2 500 5000 05-May-2020 14:50:55",  # date and time: fast path
        "E00271.mat 2 500 5000",
        "rec/2 2 500 5000",
        "rec 3 500 5000",  # more signals announced than lines
        "rec 1 500 5000",  # fewer: the extra line is ignored
    ],
)
def test_fast_header_parse_on_record_line_quirks(tmp_path, record_line):
    path = tmp_path / "rec.hea"
    path.write_text(f"{record_line}\nrec.dat 16 1000/mV 16 0 0 0 0 I\nrec.dat 16 1000/mV 16 0 0 0 0 II\n")
    fast, general = both_parsers(path)
    if fast is not None:
        assert_same_header(fast, general)
    result = parse_header(path) if isinstance(general, Header) else None
    assert result == general if result is not None else general.startswith(str(path))


def test_header_text_with_carriage_returns_parses_like_read_text(tmp_path):
    path = tmp_path / "rec.hea"
    path.write_bytes(b"rec 1 500 10\r\nrec.dat 16 1000/mV 16 0 0 0 0 I\r#Age: 5\r\n#Dx: 1\xb5\n")
    fields, comments = _split_header(path.read_text(encoding="latin-1"))
    assert parse_header(path) == _parse_header_fields(path, fields, comments)
    assert parse_header(path).comments == ("Age: 5", "Dx: 1\u00b5")


# ----- physical units ---------------------------------------------------------------------------------------------
def plain_physical(adu: np.ndarray, header: Header) -> np.ndarray:
    """The definition: float64 (adu - baseline) * mV-per-adu per lead, rounded to float32."""
    baseline = np.array([signal.baseline for signal in header.signals])
    scale = np.array([signal.mv_per_unit / signal.gain for signal in header.signals])
    return ((adu - baseline) * scale).astype(np.float32)


def assert_same_bits(ours: np.ndarray, reference: np.ndarray) -> None:
    assert ours.dtype == reference.dtype == np.float32 and ours.shape == reference.shape
    np.testing.assert_array_equal(ours.view(np.uint32), reference.view(np.uint32))


def make_header(gains, baselines, units) -> Header:
    signals = tuple(
        SignalSpec("rec.dat", "16", 0, float(gain), float(baseline), unit, f"L{i}", True)
        for i, (gain, baseline, unit) in enumerate(zip(gains, baselines, units))
    )
    return Header(Path("rec.hea"), "rec", len(signals), 500.0, None, signals, ())


@pytest.mark.parametrize(
    ("gains", "baselines", "units"),
    [
        ([1000.0] * 12, [0.0] * 12, ["mV"] * 12),  # PTB-XL, Challenge: scalars, no baseline
        ([200.0] * 12, [-5.0] * 12, ["uV"] * 12),  # one baseline for all leads
        ([1000.0 + i for i in range(12)], [i - 6.0 for i in range(12)], ["mV", "uV", "V"] * 4),  # per lead
        ([1000.0] * 12, [0.0] * 11 + [-0.0], ["mV"] * 12),  # -0.0 is not skipped: x - (-0.0) flips -0.0
        ([3.0, 7.0, 11.0], [0.0, 0.0, 0.0], ["mV", "mV", "mV"]),
        ([-1000.0, 1000.0], [0.0, 0.0], ["mV", "mV"]),
    ],
)
@pytest.mark.parametrize("dtype", [np.int16, np.int32, np.uint16, np.float32, np.float64])
def test_physical_gives_the_bits_of_the_plain_formula(gains, baselines, units, dtype):
    header = make_header(gains, baselines, units)
    rng = np.random.default_rng(len(gains))
    adu = rng.integers(-30000 if dtype != np.uint16 else 0, 30000, size=(501, len(gains))).astype(dtype)
    if adu.dtype.kind == "f":
        adu[::7] /= 3.0
        adu[3] = -0.0
    assert_same_bits(physical(adu, header), plain_physical(adu, header))
    assert_same_bits(physical(adu.T.copy().T, header), plain_physical(adu, header))  # Fortran order (.mat)


def test_physical_with_a_mismatched_shape_still_fails_like_the_formula():
    header = make_header([1000.0] * 12, [0.0] * 12, ["mV"] * 12)
    with pytest.raises(ValueError):
        physical(np.zeros((10, 11), dtype=np.int16), header)


def test_decoded_records_are_the_plain_formula_bit_for_bit():
    headers = sorted(SAMPLE_WFDB.glob("*.hea"))
    if (DATA / "ptbxl").is_dir():
        headers += sorted((DATA / "ptbxl" / "records100").glob("*/*.hea"))[::25]
        headers += sorted((DATA / "ptbxl" / "records500").glob("*/*.hea"))[::50]
    for path in headers:
        header = parse_header(path)
        signal = read_wfdb_signal(header)
        data = header.path.parent / header.signals[0].file_name
        if data.suffix == ".mat":
            import scipy.io

            adu = scipy.io.loadmat(data)["val"][:, : header.n_samples].T
        else:
            adu = np.fromfile(data, dtype="<i2").reshape(-1, header.n_signals)[: header.n_samples]
        assert_same_bits(signal, plain_physical(adu, header))


def test_missing_and_broken_signal_files_keep_their_messages(tmp_path):
    header_path = tmp_path / "rec.hea"
    header_path.write_text("rec 2 500 10\nrec.dat 16 1000/mV 16 0 0 0 0 I\nrec.dat 16 1000/mV 16 0 0 0 0 II\n")
    with pytest.raises(TargetError) as error:
        read_wfdb_signal(parse_header(header_path))
    assert str(error.value) == f"{tmp_path / 'rec.dat'}: signal file missing (named in rec.hea)"
    (tmp_path / "rec.dat").mkdir()  # a directory is not a signal file either
    with pytest.raises(TargetError, match="signal file missing"):
        read_wfdb_signal(parse_header(header_path))
    (tmp_path / "rec.dat").rmdir()
    (tmp_path / "rec.dat").write_bytes(np.arange(2 * 9, dtype="<i2").tobytes() + b"\x01")  # 9 frames, odd byte
    with pytest.raises(TargetError) as error:
        read_wfdb_signal(parse_header(header_path))
    assert str(error.value) == f"{tmp_path / 'rec.dat'}: 9 samples per lead, the header announces 10"
    (tmp_path / "rec.dat").write_bytes(np.arange(2 * 10, dtype="<i2").tobytes() + b"\x01")
    signal = read_wfdb_signal(parse_header(header_path))
    np.testing.assert_array_equal(signal, (np.arange(20).reshape(10, 2) / 1000).astype(np.float32))


# ----- flat records -----------------------------------------------------------------------------------------------
def reference_reason(signal: np.ndarray) -> str | None:
    """The definition: 'flat on every lead' is max == min on every lead."""
    if signal.ndim != 2 or signal.shape[0] == 0 or signal.shape[1] == 0:
        return "no samples"
    if not np.isfinite(signal).all():
        return "contains NaN or infinite values"
    if (signal.max(axis=0) == signal.min(axis=0)).all():
        return "flat on every lead"
    return None


def flat_check_cases() -> list[np.ndarray]:
    rng = np.random.default_rng(3)
    constant = np.tile(np.arange(12, dtype=np.float32), (500, 1))  # each lead constant, leads differ
    spike = constant.copy()
    spike[250, 4] += 1  # first and last rows equal, one sample off in the middle
    last_only = constant.copy()
    last_only[-1, 0] = -1
    zeros_signed = np.zeros((500, 12), dtype=np.float32)
    zeros_signed[::2] = -0.0  # -0.0 == 0.0: still flat
    nan = rng.standard_normal((500, 12)).astype(np.float32)
    nan[10, 3] = np.nan
    flat_nan = constant.copy()
    flat_nan[7, 7] = np.inf
    return [
        constant,
        spike,
        last_only,
        zeros_signed,
        nan,
        flat_nan,
        rng.standard_normal((500, 12)).astype(np.float32),
        constant[:1],
        constant[:2],
        np.zeros((500, 1), dtype=np.float32),
        np.ones((500, 12), dtype=np.int16),
    ]


def test_flat_check_agrees_with_max_equals_min():
    reasons = []
    for signal in flat_check_cases():
        assert bad_record_reason(signal) == reference_reason(signal)
        reasons.append(reference_reason(signal))
    assert reasons[:6] == [
        "flat on every lead",
        None,
        None,
        "flat on every lead",
        "contains NaN or infinite values",
        "contains NaN or infinite values",
    ]


def test_bad_rows_agrees_with_the_per_record_check():
    cases = [case for case in flat_check_cases() if case.shape == (500, 12) and case.dtype == np.float32]
    block = np.stack(cases * 3)
    assert bad_rows(block) == [reference_reason(record) for record in block]
    integers = np.round(np.nan_to_num(block, posinf=0.0) * 10).astype(np.int16)
    integers[0, 100, 0] = 99  # no longer flat
    assert bad_rows(integers) == [reference_reason(record) for record in integers]
    assert bad_rows(block[:, :0]) == ["no samples"] * len(block)


# ----- HDF5 row selection and conversion --------------------------------------------------------------------------
def write_target(path: Path, values: np.ndarray, chunk_rows: int) -> Path:
    with h5py.File(path, "w") as handle:
        dataset = handle.create_dataset("signals", data=values, chunks=(chunk_rows, *values.shape[1:]))
        dataset.attrs["sampling_rate"] = 100.0
        dataset.attrs["leads"] = [f"L{i}" for i in range(values.shape[2])]
        handle.create_dataset("record_ids", data=np.arange(len(values)))
    return path


def write_labels(path: Path, rows: list[int]) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["record_id", "A"])
        writer.writerows([row, (row // 3) % 2] for row in rows)
    return path


@pytest.mark.parametrize("dtype", [np.float32, np.int16, np.float64, np.int32])
@pytest.mark.parametrize(
    "selection",
    [range(40), range(5, 31), [*range(0, 40, 2)], [0, 1, 2, 9, 10, 11, 12, 25, 39]],
    ids=["all", "contiguous", "every-other", "runs"],
)
def test_hdf5_batches_are_the_selected_rows_as_float32(tmp_path, dtype, selection):
    rng = np.random.default_rng(1)
    values = rng.integers(-3000, 3000, size=(40, 50, 3)).astype(dtype)
    values[6] = 17  # flat
    values[12, :, 1] = values[12, 0, 1]  # flat on one lead only: kept
    if values.dtype.kind == "f":
        values[9, 3, 2] = np.nan
    rows = list(selection)
    path = write_target(tmp_path / "t.h5", values, chunk_rows=8)
    target = open_target(path, labels_csv=write_labels(tmp_path / "labels.csv", rows), min_positives=1)
    expected = values[rows].astype(np.float32)
    reasons = [reference_reason(record) for record in expected]
    for batch_size in (3, 8, 64):
        ids, decoded, previous = [], [], []
        for batch in target.batches(batch_size):
            assert isinstance(batch.signals, np.ndarray) and batch.signals.dtype == np.float32
            assert not any(np.shares_memory(batch.signals, other) for other in previous)
            previous.append(batch.signals)
            ids += batch.ids
            decoded += list(batch.signals)
        kept = [i for i, reason in enumerate(reasons) if reason is None]
        assert ids == [str(rows[i]) for i in kept]
        np.testing.assert_array_equal(np.stack(decoded), expected[kept])
        skipped = dict(target.skipped[len(target.excluded) :])  # left out while decoding
        assert skipped == {str(rows[i]): reasons[i] for i in range(len(rows)) if reasons[i] is not None}


def test_hdf5_int16_flat_records_are_found_before_conversion(tmp_path):
    values = np.zeros((10, 20, 2), dtype=np.int16)
    values[:, :, 0] = np.arange(20)
    values[4] = -7  # flat
    values[5, :, :] = 3
    values[5, 10, 1] = 4  # one sample differs: not flat
    target = open_target(
        write_target(tmp_path / "t.h5", values, 4),
        labels_csv=write_labels(tmp_path / "l.csv", [*range(10)]),
        min_positives=1,
    )
    ids = [record_id for batch in target.batches(4) for record_id in batch.ids]
    assert ids == [str(i) for i in range(10) if i != 4]
    assert target.skipped == [("4", "flat on every lead")]


# ----- accumulator --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("activation", ["logits", "probabilities", "softmax"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_accumulator_equals_one_shot_melep_bit_for_bit(activation, dtype):
    rng = np.random.default_rng(5)
    outputs = rng.standard_normal((300, 7)).astype(dtype) * 3
    if activation == "probabilities":
        outputs = rng.random((300, 7)).astype(dtype)
    labels = (rng.random((300, 4)) < 0.3).astype(np.uint8)
    accumulator = MelepAccumulator(activation=activation)
    for start in range(0, 300, 64):
        accumulator.update(outputs[start : start + 64], labels[start : start + 64])
    expected = melep(outputs, labels, activation=activation)
    for _ in range(2):  # computing again gives the same: the stored outputs are not activated in place
        result = accumulator.compute()
        assert result.score == expected.score
        np.testing.assert_array_equal(result.phi, expected.phi)


@pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")
def test_hdf5_checks_see_the_float32_values_of_wider_types(tmp_path):
    """int32 beyond 2^24 and float64 beyond float32's range are checked as the float32 a model would get."""
    wide = np.tile(np.arange(30, dtype=np.int32)[None, :, None] * 1000, (6, 1, 2))
    wide[2] = 2**24 + np.arange(30, dtype=np.int32)[:, None] % 2  # distinct int32, equal as float32: flat
    big = wide.astype(np.float64)
    big[3, 5, 1] = 1e300  # inf as float32
    for values, expected in (
        (wide, [("2", "flat on every lead")]),
        (big, [("2", "flat on every lead"), ("3", "contains NaN or infinite values")]),
    ):
        path = write_target(tmp_path / f"{values.dtype}.h5", values, 4)
        target = open_target(path, labels_csv=write_labels(tmp_path / "l.csv", [*range(6)]), min_positives=1)
        batches = list(target.batches(4))
        assert target.skipped == expected
        assert all(batch.signals.dtype == np.float32 for batch in batches)


@pytest.mark.parametrize(
    "lines",
    [
        ["16 1000/mV 16 0 0 0 0 I", "16 1000/mV 16 0 0 0 0 II", "16 500/mV 16 0 0 0 0 III"],  # one gain differs
        ["16 1000(3)/mV 16 0 0 0 0 I", "16 1000(3)/mV 16 0 0 0 0 II", "16 1000(-0)/mV 16 0 0 0 0 III"],
        ["16 1000(3)/uV 16 0 0 0 0 I", "16 1000(3)/uV 16 0 0 0 0 II", "16 1000(3)/uV 16 0 0 0 0 III"],
        ["16 1000/mV 16 0 0 0 0 I", "16 1000/uV 16 0 0 0 0 II", "16 1000/mV 16 0 0 0 0 III"],
    ],
)
def test_parsed_headers_convert_like_the_formula(tmp_path, lines):
    path = tmp_path / "rec.hea"
    path.write_text("rec 3 500 400\n" + "".join(f"rec.dat {line}\n" for line in lines))
    adu = np.random.default_rng(0).integers(-32768, 32767, size=(400, 3)).astype("<i2")
    adu.tofile(tmp_path / "rec.dat")
    header = parse_header(path)
    assert_same_bits(read_wfdb_signal(header), plain_physical(adu, header))


# ----- invalid samples --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("formats", [["16"] * 3, ["16", "212", "8"], ["8"] * 3, ["24", "16", "80"], ["32"] * 3])
@pytest.mark.parametrize("dtype", [np.int16, np.int32, np.int64, np.float64])
def test_invalid_sample_check_agrees_with_a_plain_comparison(formats, dtype):
    """check_invalid_samples (one minimum first, one value or one per lead) against lead-by-lead equality."""
    from melep_cli.targets.challenge import INVALID_SAMPLE, check_invalid_samples, missing_samples_error

    signals = tuple(
        SignalSpec("rec.dat", fmt, 0, 200.0, 0.0, "mV", f"L{i}", fmt == "16") for i, fmt in enumerate(formats)
    )
    header = Header(Path("rec.hea"), "rec", len(signals), 500.0, None, signals, ())
    info = np.iinfo(dtype) if np.dtype(dtype).kind == "i" else np.iinfo(np.int64)
    rng = np.random.default_rng(len(set(formats)))
    for trial in range(20):
        adu = rng.integers(max(info.min, -(2**31)) + 1, min(info.max, 2**31), size=(300, len(formats))).astype(dtype)
        for lead in rng.choice(len(formats), size=trial % 3, replace=False):
            value = INVALID_SAMPLE.get(formats[lead], -32768)
            if np.dtype(dtype).kind == "i" and not info.min <= value <= info.max:
                continue
            adu[rng.integers(0, 300, size=trial % 4 + 1), lead] = value
        counts = np.array(
            [(adu[:, j] == INVALID_SAMPLE[fmt]).sum() if fmt in INVALID_SAMPLE else 0 for j, fmt in enumerate(formats)]
        )
        if not counts.any():
            check_invalid_samples(adu, header)
            continue
        with pytest.raises(TargetError) as error:
            check_invalid_samples(adu, header)
        assert str(error.value) == str(missing_samples_error(header, counts, header.leads))
