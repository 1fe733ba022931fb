"""HDF5 targets: the FORMATS.md layout, CODE-15% names, labels CSV joined by id, skips, streaming bounds."""

from __future__ import annotations

import csv
import logging
import random
import tracemalloc
from pathlib import Path

import h5py
import numpy as np
import pytest

from melep_cli.errors import TargetError, UsageError
from melep_cli.targets import Hdf5Target, open_target
from melep_cli.targets.base import parse_folds

LEADS = ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")


def ecg_like(n: int, samples: int = 200, leads: int = 12, seed: int = 0) -> np.ndarray:
    """(n, samples, leads) float32 signals that differ per record and are never flat."""
    rng = np.random.default_rng(seed)
    t = np.linspace(0, 2 * np.pi, samples, dtype=np.float32)
    phase = rng.uniform(0, 2 * np.pi, size=(n, 1, leads)).astype(np.float32)
    return (np.sin(t[None, :, None] * 3 + phase) + rng.normal(0, 0.05, (n, samples, leads))).astype(np.float32)


def write_h5(
    path: Path,
    signals: np.ndarray,
    *,
    labels: np.ndarray | None = None,
    label_names: list[str] | None = None,
    ids: list | None = None,
    rate: float | None = 500.0,
    code15: bool = False,
    chunks: tuple[int, ...] | None = None,
) -> Path:
    with h5py.File(path, "w") as h5:
        dataset = h5.create_dataset("tracings" if code15 else "signals", data=signals, chunks=chunks)
        if rate is not None:
            dataset.attrs["sampling_rate"] = rate
        if labels is not None:
            label_set = h5.create_dataset("labels", data=labels)
            if label_names is not None:
                label_set.attrs["label_names"] = label_names
        if ids is not None:
            values = np.asarray(ids)
            if values.dtype.kind == "U":
                values = values.astype(h5py.string_dtype())
            h5.create_dataset("exam_id" if code15 else "record_ids", data=values)
    return path


def all_records(target) -> tuple[list[str], list[np.ndarray], np.ndarray]:
    ids, signals, labels = [], [], []
    for batch in target.batches(7):
        ids += batch.ids
        signals += list(batch.signals)
        labels.append(batch.labels)
    return ids, signals, np.concatenate(labels) if labels else np.zeros((0, len(target.label_names)))


def test_layout_with_labels_dataset_streams_every_record_in_order(tmp_path):
    signals = ecg_like(30)
    labels = (np.arange(30)[:, None] % np.array([2, 3]) == 0).astype(np.uint8)
    path = write_h5(tmp_path / "t.h5", signals, labels=labels, label_names=["A", "B"], ids=[f"r{i}" for i in range(30)])
    target = open_target(path, min_positives=1)
    assert isinstance(target, Hdf5Target) and target.format == "hdf5"
    assert target.label_names == ("A", "B") and len(target) == 30
    ids, decoded, batch_labels = all_records(target)
    assert ids == [f"r{i}" for i in range(30)]
    np.testing.assert_array_equal(np.stack(decoded), signals)
    np.testing.assert_array_equal(batch_labels, labels)
    first = next(iter(target.batches(7)))
    assert first.sampling_rate == 500.0 and first.leads == LEADS
    assert isinstance(first.signals, np.ndarray) and first.signals.shape == (7, 200, 12)
    assert first.signals.dtype == np.float32
    # batches() re-reads from the start
    assert all_records(target)[0] == ids


def test_labels_csv_is_joined_by_id_not_position(tmp_path, caplog):
    ids = [1000 + 7 * i for i in range(40)]
    signals = ecg_like(40)
    path = write_h5(tmp_path / "t.h5", signals, ids=ids)
    truth = {record_id: (record_id % 2, int(record_id % 3 == 0)) for record_id in ids}
    rows = [[record_id, *truth[record_id]] for record_id in ids[:-3]]  # 3 records have no row
    rows.append([99999, 1, 0])  # a row for a record not in the file
    random.Random(4).shuffle(rows)
    csv_path = tmp_path / "labels.csv"
    with csv_path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["record_id", "ODD", "THREE", "note"])
        writer.writerows([[*row, "free text"] for row in rows])
    with caplog.at_level(logging.WARNING, logger="melep"):
        target = open_target(path, labels_csv=csv_path, min_positives=1)
    assert target.label_names == ("ODD", "THREE")
    assert target.record_ids == [str(i) for i in ids[:-3]]
    expected = np.array([truth[i] for i in ids[:-3]], dtype=np.uint8)
    np.testing.assert_array_equal(target.labels, expected)
    messages = " ".join(record.getMessage() for record in caplog.records)
    assert "left out 3 records with no row" in messages and str(ids[-1]) in messages
    assert "1 row for records not in" in messages and "99999" in messages
    assert {record_id for record_id, _ in target.skipped} == {str(i) for i in ids[-3:]}
    decoded_ids, decoded, decoded_labels = all_records(target)
    assert decoded_ids == target.record_ids
    np.testing.assert_array_equal(np.stack(decoded), signals[:-3])
    np.testing.assert_array_equal(decoded_labels, expected)
    with pytest.raises(TargetError, match="no row"):
        open_target(path, labels_csv=csv_path, min_positives=1, strict=True)
    with pytest.raises(TargetError, match=r"note.*not 0/1"):
        open_target(path, labels_csv=csv_path, labels=["note"])


def test_labels_csv_needs_ids_in_the_file(tmp_path):
    path = write_h5(tmp_path / "t.h5", ecg_like(5))
    csv_path = tmp_path / "labels.csv"
    csv_path.write_text("record_id,A\n0,1\n1,0\n2,1\n3,0\n4,1\n")
    with pytest.raises(TargetError, match="never matched by position"):
        open_target(path, labels_csv=csv_path)


def test_code15_names_and_exams_csv(tmp_path, caplog):
    exam_ids = np.array([52, 17, 3001, 88, 940, 0], dtype=np.int64)  # CODE-15% parts end with a 0 id
    signals = ecg_like(6, samples=400)
    path = write_h5(tmp_path / "exams_part0.hdf5", signals, ids=exam_ids, rate=None, code15=True)
    csv_path = tmp_path / "exams.csv"
    header = "exam_id,age,is_male,nn_id,1dAVb,RBBB,LBBB,SB,ST,AF,patient_id,death,timey,normal_ecg,trace_file"
    lines = [header]
    for i, exam in enumerate([3001, 52, 88, 17, 940, 123456]):
        flags = ["1" if (i + k) % 3 == 0 else "0" for k in range(6)]
        lines.append(f"{exam},{40 + i},True,{i},{','.join(flags)},{900 + i},False,,False,exams_part0.hdf5")
    csv_path.write_text("\n".join(lines) + "\n")
    with caplog.at_level(logging.WARNING, logger="melep"):
        target = open_target(path, labels_csv=csv_path, labels=["AF", "1dAVb", "rbbb"])
    assert target.label_names == ("AF", "1dAVb", "RBBB")
    assert target.record_ids == ["52", "17", "3001", "88", "940"]
    batch = next(iter(target.batches(64)))
    assert batch.sampling_rate == 400.0 and batch.leads == LEADS
    np.testing.assert_array_equal(batch.signals, signals[:5])
    # exams.csv row order differs from the file: labels follow the ids
    csv_rows = {row["exam_id"]: row for row in csv.DictReader(csv_path.open())}
    expected = [[int(csv_rows[i][name]) for name in ("AF", "1dAVb", "RBBB")] for i in target.record_ids]
    np.testing.assert_array_equal(target.labels, expected)
    messages = " ".join(record.getMessage() for record in caplog.records)
    assert "400 Hz" in messages and "123456" in messages and "left out 1 record with no row" in messages


def test_nan_and_flat_records_are_skipped_or_fail_in_strict_mode(tmp_path, caplog):
    signals = ecg_like(12)
    signals[3, 10, 2] = np.nan
    signals[7] = 0.25  # flat on every lead
    signals[9, :, :11] = 0.0  # flat on 11 leads only: kept
    labels = (np.arange(12)[:, None] % 2).astype(np.uint8)
    path = write_h5(tmp_path / "t.h5", signals, labels=labels, label_names=["X"], ids=[f"id{i}" for i in range(12)])
    target = open_target(path, min_positives=1)
    with caplog.at_level(logging.WARNING, logger="melep"):
        ids, _, decoded_labels = all_records(target)
    assert ids == [f"id{i}" for i in range(12) if i not in (3, 7)]
    np.testing.assert_array_equal(decoded_labels[:, 0], [int(i[2:]) % 2 for i in ids])
    assert target.skipped == [("id3", "contains NaN or infinite values"), ("id7", "flat on every lead")]
    assert any("skipped 2 records" in r.getMessage() and "id3" in r.getMessage() for r in caplog.records)
    all_records(target)  # a second pass does not double the skips
    assert len(target.skipped) == 2
    strict = open_target(path, min_positives=1, strict=True)
    with pytest.raises(TargetError, match=r"id3.*NaN"):
        all_records(strict)


def test_label_selection_default_explicit_and_unknown(tmp_path):
    rng = np.random.default_rng(1)
    labels = np.zeros((40, 4), dtype=np.uint8)
    labels[:12, 0] = 1  # 12 positives
    labels[:9, 1] = 1  # 9 positives: below the default 10
    labels[:, 2] = 1  # no negative
    labels[rng.permutation(40)[:20], 3] = 1
    path = write_h5(tmp_path / "t.h5", ecg_like(40), labels=labels, label_names=["AF", "IAVB", "ALL", "RBBB"])
    assert open_target(path).label_names == ("AF", "RBBB")
    assert open_target(path, min_positives=9).label_names == ("AF", "IAVB", "RBBB")
    explicit = open_target(path, labels=["rbbb", "IAVB"])
    assert explicit.label_names == ("RBBB", "IAVB")
    np.testing.assert_array_equal(explicit.labels, labels[:, [3, 1]])
    with pytest.raises(TargetError, match=r"label NOPE not found.*labels here: AF, IAVB, ALL, RBBB"):
        open_target(path, labels=["AF", "NOPE"])
    with pytest.raises(TargetError, match="no label has at least 50 positives"):
        open_target(path, min_positives=50)


def test_rate_and_metadata_errors_name_the_file(tmp_path):
    no_rate = write_h5(tmp_path / "norate.h5", ecg_like(3), labels=np.ones((3, 1)), rate=None)
    with pytest.raises(TargetError, match=r"norate\.h5: no sampling_rate"):
        open_target(no_rate)
    assert open_target(no_rate, sampling_rate=250, labels=["label0"]).batches(2).__next__().sampling_rate == 250
    rated = write_h5(tmp_path / "rated.h5", ecg_like(3), labels=np.ones((3, 1)))
    with pytest.raises(UsageError, match="contradicts"):
        open_target(rated, sampling_rate=100)
    nolabels = write_h5(tmp_path / "nolabels.h5", ecg_like(3))
    with pytest.raises(TargetError, match=r"nolabels\.h5: no 'labels' dataset"):
        open_target(nolabels)
    with pytest.raises(TargetError, match="no such file"):
        open_target(tmp_path / "missing.h5")
    garbage = tmp_path / "garbage.h5"
    garbage.write_text("not hdf5")
    with pytest.raises(TargetError, match=r"garbage\.h5: cannot open as HDF5"):
        open_target(garbage)
    with pytest.raises(UsageError, match="folds applies to PTB-XL"):
        open_target(rated, folds="1")


def test_lengths_dataset_gives_records_back_at_their_own_length(tmp_path):
    signals = ecg_like(4, samples=300)
    lengths = np.array([300, 120, 300, 200])
    for i, length in enumerate(lengths):
        signals[i, length:] = 0
    path = write_h5(tmp_path / "t.h5", signals, labels=np.array([[1], [0], [1], [0]]), label_names=["Y"])
    with h5py.File(path, "a") as h5:
        h5["lengths"] = lengths
    batch = next(iter(open_target(path, min_positives=1).batches(8)))
    assert [record.shape[0] for record in batch.signals] == lengths.tolist()


def test_parse_folds():
    assert parse_folds("9,10") == {9, 10}
    assert parse_folds("1-8") == set(range(1, 9))
    assert parse_folds(" 1-3, 9 ") == {1, 2, 3, 9}
    assert parse_folds([2, 4]) == {2, 4}
    assert parse_folds(None) is None
    for bad in ("a", "3-1", "1-", ","):
        with pytest.raises(UsageError, match=r"^folds: "):
            parse_folds(bad)


def test_streaming_100k_records_stays_far_below_the_file_size(tmp_path):
    n, samples, leads = 100_000, 100, 12
    path = tmp_path / "big.h5"
    pattern = (np.sin(np.linspace(0, 6, samples))[None, :, None] * 1000 + np.arange(leads)).astype(np.int16)
    block = np.repeat(pattern, 10_000, axis=0)
    block[:, 0, :] += np.arange(10_000, dtype=np.int16)[:, None] % 7
    with h5py.File(path, "w") as h5:
        signals = h5.create_dataset(
            "signals",
            (n, samples, leads),
            dtype=np.int16,
            chunks=(1000, samples, leads),
            compression="gzip",
            compression_opts=1,
            shuffle=True,
        )
        for start in range(0, n, 10_000):
            signals[start : start + 10_000] = block
        signals.attrs["sampling_rate"] = 100
        h5.create_dataset("labels", data=(np.arange(n) % 5 == 0).astype(np.uint8)[:, None])
        h5["labels"].attrs["label_names"] = ["Z"]
    whole_float32 = n * samples * leads * 4  # what loading the signals would take: 480 MB
    target = open_target(path)
    tracemalloc.start()
    try:
        count = positives = 0
        for batch in target.batches(256):
            count += len(batch)
            positives += int(batch.labels.sum())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == n and positives == n // 5 and not target.skipped
    assert peak < whole_float32 / 10, f"peak {peak / 2**20:.0f} MiB while streaming {whole_float32 / 2**20:.0f} MiB"
