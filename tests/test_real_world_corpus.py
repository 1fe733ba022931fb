"""Real-world inputs read by melep's target readers and compared with an independent reading of the same files.

Real signals (CinC 2021 records of `sample_data/cinc_wfdb`, PTB-XL records of `sample_data/ptbxl_target.h5`)
are written in every storage format wfdb reads: with `wfdb.wrsamp` where wfdb writes the format (16, 212, 80,
24, 32 and the FLAC formats 508, 516, 524), encoded here where it does not (8, 61, 160, 310, 311; the encoders
are checked against wfdb's digital reading), and as Challenge `.mat` files. Also multi-segment records (fixed
and variable layout, null segments), records of different lengths in one directory, CODE-15%-like HDF5 files
with an `exams.csv`, and labels CSVs. The reference is `wfdb.rdrecord` (h5py and the csv module for HDF5):
millivolts equal within float32 rounding, record ids and labels the file's. Records holding WFDB's
invalid-sample value are skipped with one reason, whatever the format and whichever code path reads them.
"""

from __future__ import annotations

import csv
import logging
from pathlib import Path

import h5py
import numpy as np
import pytest
import scipy.io
import wfdb

from melep_cli.errors import TargetError
from melep_cli.targets import TargetOptions, open_target

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "sample_data"
CINC_SAMPLE = SAMPLE / "cinc_wfdb"
PTBXL_H5 = SAMPLE / "ptbxl_target.h5"
SHARED = ROOT.parent / "shared" / "data"
LEADS = ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")
RATE = 500

#: Formats wfdb.wrsamp writes (wfdb 4.3), and formats wfdb reads that are encoded here.
WRSAMP_FORMATS = ("16", "212", "80", "24", "32", "508", "516", "524")
ENCODED_FORMATS = ("8", "61", "160", "310", "311")
#: Digital bits and WFDB's invalid-sample value of every format (format 8, first differences, has none).
BITS = {"8": 8, "61": 16, "160": 16, "310": 10, "311": 10}
INVALID = {"61": -(2**15), "160": -(2**15), "310": -(2**9), "311": -(2**9)}


# -- real signals ---------------------------------------------------------------------------------------------
def cinc_millivolts(stem: str, samples: int, leads: int = 12) -> np.ndarray:
    """(samples, leads) float64 mV of a sample CinC record, read with scipy and the header's gain (no melep)."""
    adu = scipy.io.loadmat(CINC_SAMPLE / f"{stem}.mat")["val"][:leads, :samples].T.astype(np.float64)
    lines = (CINC_SAMPLE / f"{stem}.hea").read_text(encoding="latin-1").splitlines()[1 : 1 + leads]
    gains = np.array([float(line.split()[2].split("/")[0]) for line in lines])
    return adu / gains


#: Three real records cut to different lengths (a directory of variable-length records).
SOURCES = (("A0689", 1000), ("E07506", 1250), ("JS36330", 900))


# -- writers --------------------------------------------------------------------------------------------------
def encode(fmt: str, digital: np.ndarray) -> bytes:
    """(T, L) digital samples as the bytes of a WFDB signal file in `fmt` (interleaved by frame)."""
    flat = digital.astype(np.int64).reshape(-1)
    if fmt == "8":  # first differences from the header's initial value (the first sample): int8
        diffs = np.diff(digital.astype(np.int64), axis=0, prepend=digital[:1].astype(np.int64))
        assert np.abs(diffs).max() <= 127
        return diffs.astype("<i1").tobytes()
    if fmt == "61":
        return flat.astype(">i2").tobytes()
    if fmt == "160":
        return (flat + 32768).astype("<u2").tobytes()
    values = np.concatenate([flat, np.zeros(-len(flat) % 3, dtype=np.int64)]) & 0x3FF  # 10-bit two's complement
    a, b, c = values[0::3], values[1::3], values[2::3]
    if fmt == "311":  # a, b, c in bits 0-9, 10-19, 20-29 of a little-endian 32-bit word
        return (a | b << 10 | c << 20).astype("<u4").tobytes()
    if fmt == "310":  # a, b in bits 1-10 of two 16-bit words; c's low and high 5 bits in bits 11-15 of each
        words = np.empty(2 * len(a), dtype=np.int64)
        words[0::2] = a << 1 | (c & 0x1F) << 11
        words[1::2] = b << 1 | (c >> 5) << 11
        return words.astype("<u2").tobytes()
    raise AssertionError(fmt)


def write_record(directory: Path, name: str, millivolts: np.ndarray, fmt: str, invalid: list[tuple[int, int]]) -> None:
    """One record in `fmt`; the samples at `invalid` (row, lead) hold the format's invalid-sample value."""
    leads = list(LEADS[: millivolts.shape[1]])
    if fmt in WRSAMP_FORMATS:
        signal = millivolts.copy()
        for row, lead in invalid:
            signal[row, lead] = np.nan  # wrsamp writes NaN as the format's invalid-sample value
        n = signal.shape[1]
        wfdb.wrsamp(
            name, fs=RATE, units=["mV"] * n, sig_name=leads, p_signal=signal, fmt=[fmt] * n, write_dir=str(directory)
        )
        return
    if fmt == "mat":  # the Challenge layout: MATLAB v4 `val` (leads x samples) int16 + a 16+24 header
        gain, bits, stored = 1000, 16, ".mat"
    else:
        bits = BITS[fmt]
        limit = 2 ** (bits - 1) - 2  # the lowest value is the invalid-sample value
        gain = int(limit / np.abs(millivolts).max())
        if fmt == "8":
            gain = min(gain, int(120 / np.abs(np.diff(millivolts, axis=0)).max()))
        stored = ".dat"
    digital = np.round(millivolts * gain).astype(np.int64)
    for row, lead in invalid:
        digital[row, lead] = INVALID.get(fmt, -32768)
    if fmt == "mat":
        scipy.io.savemat(directory / f"{name}.mat", {"val": digital.T.astype(np.int16)}, format="4")
        fmt_field = "16+24"
    else:
        (directory / f"{name}.dat").write_bytes(encode(fmt, digital))
        fmt_field = fmt
    lines = [f"{name} {len(leads)} {RATE} {len(digital)}"]
    lines += [
        f"{name}{stored} {fmt_field} {gain}/mV {bits} 0 {digital[0, j]} 0 0 {lead}" for j, lead in enumerate(leads)
    ]
    (directory / f"{name}.hea").write_text("\n".join(lines) + "\n")
    if fmt != "mat":  # the encoder is right: wfdb reads back the digital values written
        read = wfdb.rdrecord(str(directory / name), physical=False).d_signal
        np.testing.assert_array_equal(read, digital)


def reference(directory: Path, name: str) -> np.ndarray:
    """wfdb.rdrecord's millivolts (float64; NaN where a sample is invalid)."""
    record = wfdb.rdrecord(str(directory / name), physical=True)
    factor = np.array([{"mv": 1.0, "uv": 1e-3}[unit.casefold()] for unit in record.units])
    return record.p_signal * factor


def decoded(target) -> dict[str, tuple[float, tuple[str, ...], np.ndarray, np.ndarray]]:
    """record id -> (rate, leads, signal, labels) over every batch."""
    records = {}
    for batch in target.batches(2):
        for record_id, signal, labels in zip(batch.ids, batch.signals, batch.labels):
            assert record_id not in records
            records[record_id] = (batch.sampling_rate, batch.leads, signal, labels)
    return records


def assert_float32_equal(ours: np.ndarray, theirs: np.ndarray) -> None:
    """Our float32 millivolts are wfdb's float64 ones rounded to float32 (at most one float32 step apart)."""
    assert ours.dtype == np.float32 and ours.shape == theirs.shape
    np.testing.assert_array_max_ulp(ours, theirs.astype(np.float32), maxulp=1)


def labels_table(directory: Path, rows: dict[str, tuple[int, int]]) -> Path:
    """A labels CSV (record,X,Y), rows in reverse order: the join must go by id, never by position."""
    path = directory / "labels.csv"
    path.write_text("record,X,Y\n" + "".join(f"{name},{x},{y}\n" for name, (x, y) in reversed(rows.items())))
    return path


MISSING_REASON = "{path}: 2 missing samples (WFDB's invalid-sample value) on leads II, V1"


# -- every storage format -------------------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", [*WRSAMP_FORMATS, *ENCODED_FORMATS, "mat"])
def test_every_storage_format_reads_as_wfdb_reads_it(tmp_path: Path, fmt: str, caplog) -> None:
    leads = 5 if fmt in ("310", "311") else 12  # packed formats: 5 leads, so frames straddle the sample triplets
    names = [f"r{i}" for i in range(len(SOURCES))]
    invalid = [(17, 1), (300, 6 if leads == 12 else 4)]
    for (stem, samples), name in zip(SOURCES, names):
        bad = invalid if name == "r2" and fmt != "8" else []
        write_record(tmp_path, name, cinc_millivolts(stem, samples, leads), fmt, bad)
    rows = {"r0": (1, 0), "r1": (0, 1), "r2": (1, 1)}
    csv_path = labels_table(tmp_path, rows)
    target = open_target(tmp_path, labels_csv=csv_path, min_positives=1)
    assert target.record_ids == names and target.label_names == ("X", "Y")
    with caplog.at_level(logging.WARNING, logger="melep"):
        records = decoded(target)
    for name in names:
        theirs = reference(tmp_path, name)
        if np.isnan(theirs).any():
            assert name == "r2" and name not in records
            lead_names = "II, V1" if leads == 12 else "II, aVL"
            expected = MISSING_REASON.format(path=tmp_path / f"{name}.hea").replace("II, V1", lead_names)
            assert dict(target.skipped)[name] == expected
            continue
        rate, record_leads, signal, labels = records[name]
        assert rate == RATE and record_leads == LEADS[:leads]
        assert_float32_equal(signal, theirs)
        assert labels.tolist() == list(rows[name])
    assert (fmt == "8") == (not target.skipped)
    if target.skipped:
        with pytest.raises(TargetError, match=r"r2\.hea: 2 missing samples.*strict mode"):
            decoded(open_target(tmp_path, labels_csv=csv_path, min_positives=1, strict=True))


def test_invalid_samples_get_one_answer_on_the_fast_and_the_general_path(tmp_path: Path) -> None:
    """Format 16 in one file and Challenge .mat take melep's own decoder, format 16 in two files wfdb's."""
    millivolts = cinc_millivolts("A0689", 1000)
    for fmt in ("16", "mat"):
        folder = tmp_path / fmt
        folder.mkdir()
        write_record(folder, "bad", millivolts, fmt, [(17, 1), (300, 6)])
        write_record(folder, "good", millivolts[::-1].copy(), fmt, [])
    split = tmp_path / "split"
    split.mkdir()
    signal = millivolts.copy()
    signal[17, 1] = signal[300, 6] = np.nan
    wfdb.wrsamp(
        "bad", fs=RATE, units=["mV"] * 12, sig_name=list(LEADS), p_signal=signal, fmt=["16"] * 12,
        write_dir=str(split), adc_gain=[1000.0] * 12, baseline=[0] * 12,
    )  # fmt: skip
    header = (split / "bad.hea").read_text().splitlines()
    # leads V1..V6 in a second file: the header names two signal files, which melep reads through wfdb
    data = np.fromfile(split / "bad.dat", dtype="<i2").reshape(-1, 12)
    data[:, :6].tofile(split / "bad.dat")
    data[:, 6:].copy().tofile(split / "bad_2.dat")
    header[7:] = [line.replace("bad.dat", "bad_2.dat", 1) for line in header[7:]]
    (split / "bad.hea").write_text("\n".join(header) + "\n")
    assert np.isnan(reference(split, "bad")).sum() == 2
    write_record(split, "good", millivolts[::-1].copy(), "16", [])
    reasons = set()
    for folder in (tmp_path / "16", tmp_path / "mat", split):
        target = open_target(folder, labels_csv=labels_table(folder, {"bad": (1, 0), "good": (0, 1)}), min_positives=1)
        assert list(decoded(target)) == ["good"]
        reason = dict(target.skipped)["bad"]
        assert reason == MISSING_REASON.format(path=folder / "bad.hea")
        reasons.add(reason.replace(str(folder), "FOLDER"))
    assert len(reasons) == 1


# -- multi-segment records ------------------------------------------------------------------------------------
def write_segments(directory: Path, master: str, parts: list[np.ndarray | None], layout: str, lead_orders=None) -> None:
    """A multi-segment record written by wfdb.MultiRecord: segments (None: a null segment '~') and a master
    header; a variable layout gets a layout segment and segments that may order their leads differently."""
    segments, seg_names, seg_lens = [], [], []
    n = next(part for part in parts if part is not None).shape[1]
    if layout == "variable":  # a layout segment as PhysioNet writes them (wfdb refuses to write '~' file names)
        lines = [f"{master}_layout {n} {RATE} 0", *(f"~ 0 1000/mV 16 0 0 0 0 {lead}" for lead in LEADS[:n])]
        (directory / f"{master}_layout.hea").write_text("\n".join(lines) + "\n")
        segments.append(None)
        seg_names.append(f"{master}_layout")
        seg_lens.append(0)
    for index, part in enumerate(parts):
        if part is None:
            segments.append(None)
            seg_names.append("~")
            seg_lens.append(300)
            continue
        order = list(range(n)) if lead_orders is None else lead_orders[index]
        name = f"{master}_{index + 1:04d}"
        record = wfdb.Record(
            record_name=name, n_sig=n, fs=RATE, sig_len=len(part), p_signal=part[:, order], fmt=["16"] * n,
            adc_gain=[1000.0] * n, baseline=[0] * n, units=["mV"] * n, sig_name=[LEADS[j] for j in order],
            file_name=[f"{name}.dat"] * n,
        )  # fmt: skip
        record.set_d_features(do_adc=True)
        record.set_defaults()
        segments.append(record)
        seg_names.append(name)
        seg_lens.append(len(part))
    multi = wfdb.MultiRecord(
        record_name=master, segments=segments, seg_name=seg_names, seg_len=seg_lens, n_sig=n, fs=RATE,
        sig_len=sum(seg_lens), layout=layout, comments=["Dx: 426783006"],
    )  # fmt: skip
    for segment in segments:
        if segment is not None:
            segment.wrsamp(write_dir=str(directory))
    multi.wrheader(write_dir=str(directory))


@pytest.fixture
def multi_segment_dir(tmp_path: Path) -> Path:
    """Fixed- and variable-layout multi-segment records, one with a null segment, and a plain record."""
    a, b, c = (cinc_millivolts(stem, 1000) for stem in ("A0689", "E07506", "JS36330"))
    write_segments(tmp_path, "fixed", [a[:600], a[600:]], "fixed")
    reorder = [list(range(12)), [1, 0, *range(2, 12)]]  # the second segment stores II before I
    write_segments(tmp_path, "variable", [b[:400], b[400:]], "variable", reorder)
    write_segments(tmp_path, "gap", [c[:500], None, c[500:]], "variable")
    write_record(tmp_path, "plain", cinc_millivolts("A2712", 1200), "16", [])
    return tmp_path


def test_multi_segment_records_are_read_through_wfdb_and_their_segments_are_not_records(
    multi_segment_dir: Path, caplog
) -> None:
    rows = {"fixed": (1, 0), "gap": (0, 1), "plain": (0, 0), "variable": (1, 1)}
    csv_path = labels_table(multi_segment_dir, rows)
    with caplog.at_level(logging.WARNING, logger="melep"):
        target = open_target(multi_segment_dir, labels_csv=csv_path, min_positives=1)
        records = decoded(target)
    assert target.record_ids == ["fixed", "gap", "plain", "variable"] and not target.excluded
    assert not [record.getMessage() for record in caplog.records if "_0001" in record.getMessage()]
    for name in ("fixed", "plain", "variable"):
        rate, leads, signal, labels = records[name]
        assert rate == RATE and leads == LEADS and labels.tolist() == list(rows[name])
        assert_float32_equal(signal, reference(multi_segment_dir, name))
    assert records["fixed"][2].shape == (1000, 12)
    # a null segment is a stretch without signal: wfdb reads NaN there, melep skips the record
    assert np.isnan(reference(multi_segment_dir, "gap")).sum() == 300 * 12
    assert dict(target.skipped) == {
        "gap": f"{multi_segment_dir / 'gap.hea'}: 3,600 missing samples (WFDB's invalid-sample value) on leads "
        + ", ".join(LEADS)
    }
    assert "wfdb" in target.decode_imports() and target.sampling_rates == (float(RATE),)
    files = {path.name for path in target.source_files()}
    assert {"fixed.hea", "fixed_0001.hea", "fixed_0001.dat", "fixed_0002.dat", "variable_layout.hea"} <= files


def test_multi_segment_labels_come_from_the_master_header(multi_segment_dir: Path) -> None:
    (multi_segment_dir / "plain.hea").write_text((multi_segment_dir / "plain.hea").read_text() + "#Dx: 164889003\n")
    target = open_target(multi_segment_dir, min_positives=1)
    assert target.record_ids == ["fixed", "gap", "plain", "variable"]
    assert target.label_names == ("NSR", "AF")
    assert target.labels.tolist() == [[1, 0], [1, 0], [0, 1], [1, 0]]


def test_a_multi_segment_record_with_a_missing_segment_is_left_out_naming_it(multi_segment_dir: Path, caplog) -> None:
    (multi_segment_dir / "fixed_0002.hea").unlink()
    csv_path = labels_table(multi_segment_dir, {"fixed": (1, 0), "gap": (0, 1), "plain": (1, 1), "variable": (0, 0)})
    with caplog.at_level(logging.WARNING, logger="melep"):
        target = open_target(multi_segment_dir, labels_csv=csv_path, min_positives=1)
    assert target.record_ids == ["gap", "plain", "variable"]  # fixed_0001 is a segment, never a record
    (record_id, reason), *others = target.excluded
    assert record_id == "fixed" and not others
    assert str(multi_segment_dir / "fixed.hea") in reason and "fixed_0002" in reason
    with pytest.raises(TargetError, match=r"fixed\.hea.*fixed_0002.*strict mode"):
        open_target(multi_segment_dir, labels_csv=csv_path, min_positives=1, strict=True)


def test_a_missing_segment_signal_file_skips_the_record_naming_the_file(multi_segment_dir: Path) -> None:
    (multi_segment_dir / "variable_0002.dat").unlink()
    csv_path = labels_table(multi_segment_dir, {"plain": (1, 0), "fixed": (0, 1), "variable": (0, 1)})
    target = open_target(multi_segment_dir, labels_csv=csv_path, min_positives=1)
    assert "variable" not in decoded(target)
    assert "variable_0002.dat" in dict(target.skipped)["variable"]


# -- records of the sample and the shared data ----------------------------------------------------------------
def test_sample_cinc_records_read_as_wfdb_or_scipy_reads_them() -> None:
    """Every sample CinC record (10 and 12 s): wfdb.rdrecord where wfdb takes the header, else scipy + gain."""
    target = open_target(CINC_SAMPLE, min_positives=1)
    records = decoded(target)
    assert sorted(records) == sorted(path.stem for path in CINC_SAMPLE.glob("*.hea")) and not target.skipped
    lengths = set()
    for name, (_, _, signal, _) in records.items():
        try:
            theirs = reference(CINC_SAMPLE, name)
        except Exception:  # Georgia headers (record line 'E00271.mat ...'): wfdb refuses them
            assert name.startswith("E")
            theirs = cinc_millivolts(name, 10**6)
        header_samples = int((CINC_SAMPLE / f"{name}.hea").read_text().split()[3])
        assert_float32_equal(signal, theirs[:header_samples])
        lengths.add(len(signal))
    assert lengths == {5000, 6000}


def test_shared_cinc_and_ptbxl_records_read_as_wfdb_reads_them() -> None:
    if not SHARED.is_dir():
        pytest.skip(f"{SHARED} is absent")
    from melep_cli.targets.challenge import parse_header
    from melep_cli.targets.wfdb_dir import read_wfdb_signal

    headers = sorted((SHARED / "cinc2021").glob("*.hea"))
    headers += sorted((SHARED / "ptbxl" / "records100").glob("*/*.hea"))[::100]
    headers += sorted((SHARED / "ptbxl" / "records500").glob("*/*.hea"))[::100]
    compared = 0
    for path in headers:
        try:
            theirs = reference(path.parent, path.stem)
        except Exception:
            continue  # headers wfdb refuses are compared with scipy in the test above and in test_targets_wfdb
        assert_float32_equal(read_wfdb_signal(parse_header(path)), theirs)
        compared += 1
    assert compared > 100


# -- CODE-15%-like HDF5 ---------------------------------------------------------------------------------------
CODE15_LEADS = ("DI", "DII", "DIII", "AVR", "AVL", "AVF", "V1", "V2", "V3", "V4", "V5", "V6")
CODE15_COLUMNS = (
    "exam_id,age,is_male,nn_predicted_age,1dAVb,RBBB,LBBB,SB,ST,AF,patient_id,death,timey,normal_ecg,trace_file"
)


@pytest.fixture(scope="module")
def code15(tmp_path_factory) -> tuple[Path, Path, Path]:
    """A CODE-15%-like part (`tracings` (n, 4096, 12) at 400 Hz, `exam_id`, a zero padding row with id 0), the
    same with a `leads` attribute DI, DII, ... AVR, ..., and an `exams.csv` with rows for other parts too."""
    from scipy.signal import resample_poly

    folder = tmp_path_factory.mktemp("code15")
    with h5py.File(PTBXL_H5) as h5:
        source = h5["signals"][:40].astype(np.float64)  # real PTB-XL records, 100 Hz, 10 s
        names = [name.decode() if isinstance(name, bytes) else str(name) for name in h5["labels"].attrs["label_names"]]
        flags = h5["labels"][:40]
    tracings = np.zeros((41, 4096, 12), dtype=np.float32)  # the last row: CODE-15%'s zero padding, exam_id 0
    tracings[:40, 48:4048] = resample_poly(source, 4, 1, axis=1)  # 4000 samples at 400 Hz, zero-padded to 4096
    exam_ids = np.append(np.arange(40, dtype=np.int64) * 7919 + 1_000_003, 0)
    paths = []
    for name, leads in (("exams_part0.hdf5", None), ("exams_part1.hdf5", CODE15_LEADS)):
        with h5py.File(folder / name, "w") as h5:
            dataset = h5.create_dataset("tracings", data=tracings, chunks=(8, 4096, 12))
            h5.create_dataset("exam_id", data=exam_ids)
            if leads is not None:
                dataset.attrs["leads"] = list(leads)
        paths.append(folder / name)
    column = {name: flags[:, names.index(name)] for name in ("AFIB", "NORM", "CD", "MI")}
    lines = [CODE15_COLUMNS]
    for i, exam in enumerate(exam_ids[:40]):
        af, normal = ("True" if column["AFIB"][i] else "False"), ("True" if column["NORM"][i] else "False")
        rbbb, st = ("True" if column["CD"][i] else "False"), ("True" if column["MI"][i] else "False")
        lines.append(
            f"{exam},{30 + i},{'True' if i % 2 else 'False'},{31.5 + i},False,{rbbb},False,False,{st},{af},"
            f"{500 + i},False,,{normal},exams_part0.hdf5"
        )
    lines += [
        f"{77_000_000 + i},55,True,50.1,False,False,False,True,False,False,{900 + i},False,,True,exams_part9.hdf5"
        for i in range(5)
    ]
    lines.insert(7, lines.pop(1))  # rows out of file order
    (folder / "exams.csv").write_text("\n".join(lines) + "\n")
    return paths[0], paths[1], folder / "exams.csv"


def test_code15_like_file_reads_as_h5py_and_csv_read_it(code15, caplog) -> None:
    part, _, exams = code15
    with caplog.at_level(logging.WARNING, logger="melep"):
        target = open_target(part, labels_csv=exams, labels=["AF", "normal_ecg", "RBBB", "ST"])
    with h5py.File(part) as h5:
        tracings, exam_ids = h5["tracings"][()], h5["exam_id"][()]
    rows = {row["exam_id"]: row for row in csv.DictReader(exams.open())}
    assert target.record_ids == [str(exam) for exam in exam_ids[:40]]  # the padding row has no exams.csv row
    expected = [
        [int(rows[i][name] == "True") for name in ("AF", "normal_ecg", "RBBB", "ST")] for i in target.record_ids
    ]
    np.testing.assert_array_equal(target.labels, expected)
    seen = []
    for batch in target.batches(16):
        assert batch.sampling_rate == 400.0 and batch.leads == LEADS
        rows_of = [int(np.flatnonzero(exam_ids == int(record_id))[0]) for record_id in batch.ids]
        np.testing.assert_array_equal(np.asarray(batch.signals), tracings[rows_of])
        seen += batch.ids
    assert seen == target.record_ids and target.skipped == [("0", "no row in exams.csv")]
    messages = " ".join(record.getMessage() for record in caplog.records)
    assert "400 Hz" in messages and "left out 1 record with no row" in messages and "77000000" in messages


def test_code15_lead_names_are_mapped_to_the_standard_leads(code15) -> None:
    from melep_cli import rank

    plain, named, exams = code15
    target = open_target(named, labels_csv=exams, labels=["normal_ecg", "RBBB"])
    assert next(iter(target.batches(64))).leads == CODE15_LEADS
    checkpoint = SAMPLE / "checkpoints" / "ptbxl_superclass_resnet1d.onnx"
    options = TargetOptions(labels_csv=exams, labels=["normal_ecg", "RBBB"])
    scores = [rank([checkpoint], path, target_options=options, cache=None, device="cpu") for path in (plain, named)]
    assert [len(report.ok) for report in scores] == [1, 1]
    assert scores[0].ok[0].melep == pytest.approx(scores[1].ok[0].melep, rel=1e-9)
