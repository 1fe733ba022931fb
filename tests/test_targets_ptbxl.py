"""PTB-XL targets on the real 2,992-record subset: label levels, folds, sampling rates."""

from __future__ import annotations

import ast
import csv
from pathlib import Path

import numpy as np
import pytest

from melep_cli.errors import TargetError, UsageError
from melep_cli.targets import PtbxlTarget, TargetOptions, open_target

PTBXL = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "ptbxl"


@pytest.fixture(scope="module")
def ptbxl() -> Path:
    if not (PTBXL / "ptbxl_database.csv").is_file():
        pytest.skip(f"{PTBXL} is absent")
    return PTBXL


def database_rows(ptbxl: Path) -> list[dict[str, str]]:
    with (ptbxl / "ptbxl_database.csv").open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_superclass_counts_over_all_records(ptbxl):
    target = open_target(ptbxl)  # reads only the CSVs: no record is decoded here
    assert isinstance(target, PtbxlTarget) and target.format == "ptbxl"
    assert len(target) == 2992
    assert target.label_names == ("NORM", "MI", "STTC", "HYP", "CD")
    counts = dict(zip(target.label_names, target.labels.sum(axis=0).tolist()))
    assert counts == {"NORM": 1433, "STTC": 703, "MI": 665, "CD": 602, "HYP": 346}
    assert int((target.labels.sum(axis=1) == 0).sum()) == 61
    info = target.describe()
    assert [entry["name"] for entry in info["labels"]] == list(target.label_names)
    assert info["labels"][0]["prevalence"] == pytest.approx(1433 / 2992)


def test_folds_select_records_by_strat_fold(ptbxl):
    rows = database_rows(ptbxl)
    for folds, wanted in (("9,10", {9, 10}), ("1-8", set(range(1, 9)))):
        target = open_target(ptbxl, folds=folds)
        expected = [row["ecg_id"] for row in rows if int(row["strat_fold"]) in wanted]
        assert target.record_ids == expected
    assert len(open_target(ptbxl, folds="9,10")) + len(open_target(ptbxl, folds="1-8")) == 2992
    assert open_target(ptbxl, folds="9,10").describe()["folds"] == [9, 10]


def test_statement_levels(ptbxl):
    rows = database_rows(ptbxl)
    rhythm = open_target(ptbxl, ptbxl_labels="rhythm", min_positives=1)
    assert "SR" in rhythm.label_names and "AFIB" in rhythm.label_names and "NORM" not in rhythm.label_names
    everything = open_target(ptbxl, ptbxl_labels="all", labels=["AFIB", "NORM", "IMI"])
    for row, values in zip(rows, everything.labels):
        codes = ast.literal_eval(row["scp_codes"])
        assert values.tolist() == [int(code in codes) for code in ("AFIB", "NORM", "IMI")]
    subclass = open_target(ptbxl, ptbxl_labels="subclass")
    assert {"NORM", "IMI", "STTC", "LVH", "CLBBB"} <= set(subclass.label_names)
    form = open_target(ptbxl, ptbxl_labels="form", min_positives=1)
    assert "LVOLT" in form.label_names
    diagnostic = open_target(ptbxl, ptbxl_labels="diagnostic", min_positives=1)
    assert "IMI" in diagnostic.label_names and "SR" not in diagnostic.label_names


def test_unknown_labels_name_the_level_that_has_them(ptbxl):
    with pytest.raises(
        TargetError,
        match=r"AFIB not found; labels here: NORM, MI.*; AFIB is a PTB-XL \w+ label: pass ptbxl_labels \w+$",
    ) as raised:
        open_target(ptbxl, labels=["AFIB"])
    assert raised.value.naming(lambda name: "--ptbxl-labels").endswith("label: pass --ptbxl-labels rhythm")
    with pytest.raises(TargetError, match="label WHAT not found"):
        open_target(ptbxl, labels=["NORM", "WHAT"])
    with pytest.raises(UsageError, match="100 and 500 Hz"):
        open_target(ptbxl, sampling_rate=250)
    with pytest.raises(UsageError, match=r"^folds: "):
        open_target(ptbxl, folds="x")


def test_500_hz_files_exist_for_the_first_500_records_only(ptbxl, caplog):
    target = open_target(ptbxl, sampling_rate=500, folds="10")
    rows = [row for row in database_rows(ptbxl) if row["strat_fold"] == "10"]
    assert target.record_ids == [row["ecg_id"] for row in rows if int(row["ecg_id"]) <= 500]
    assert len(target.skipped) == sum(int(row["ecg_id"]) > 500 for row in rows)
    assert any("with no 500 Hz file" in record.getMessage() for record in caplog.records)
    batch = next(iter(target.batches(4)))
    assert batch.sampling_rate == 500.0 and batch.signals.shape == (4, 5000, 12)
    with pytest.raises(TargetError, match="strict"):
        open_target(ptbxl, sampling_rate=500, folds="10", strict=True)


def test_decoding_a_fold_gives_millivolts_at_100_hz(ptbxl):
    target = open_target(ptbxl, folds="3")
    count = 0
    for batch in target.batches(128):
        assert batch.sampling_rate == 100.0 and batch.leads[:3] == ("I", "II", "III")
        assert batch.signals.shape[1:] == (1000, 12) and batch.signals.dtype == np.float32
        assert 0.05 < float(np.abs(batch.signals).mean()) < 2  # millivolts, not adu
        count += len(batch)
    assert count == len(target) and not target.skipped


def test_invalid_samples_skip_a_ptbxl_record_with_the_wfdb_reason(ptbxl, tmp_path):
    """PTB-XL's format-16 records are read by melep's own decoder: -32768 (WFDB's invalid sample) skips the record
    as wfdb's NaN would, with the reason every other path gives."""
    import shutil

    import wfdb

    rows = database_rows(ptbxl)[:8]
    with (tmp_path / "ptbxl_database.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    shutil.copy(ptbxl / "scp_statements.csv", tmp_path)
    for row in rows:
        record = tmp_path / row["filename_lr"]
        record.parent.mkdir(parents=True, exist_ok=True)
        for suffix in (".hea", ".dat"):
            shutil.copy(ptbxl / f"{row['filename_lr']}{suffix}", record.with_name(record.name + suffix))
    broken = tmp_path / f"{rows[2]['filename_lr']}.dat"
    adu = np.fromfile(broken, dtype="<i2").reshape(-1, 12)
    adu[40:45, 3] = -32768
    adu.tofile(broken)
    assert np.isnan(wfdb.rdrecord(str(broken.with_suffix(""))).p_signal).sum() == 5
    target = open_target(tmp_path, min_positives=1)
    read = [record_id for batch in target.batches(3) for record_id in batch.ids]
    assert read == [row["ecg_id"] for row in rows if row is not rows[2]]
    header = broken.with_suffix(".hea")
    assert target.skipped == [
        (rows[2]["ecg_id"], f"{header}: 5 missing samples (WFDB's invalid-sample value) on lead AVR")
    ]


def test_inspect_lists_every_superclass_below_the_threshold(ptbxl):
    from melep_cli.targets import inspect_target

    info = inspect_target(ptbxl, decode=False, target_options=TargetOptions(folds="10", min_positives=200))
    every = {entry["name"]: entry for entry in info["all_labels"]}
    assert set(every) == {"NORM", "MI", "STTC", "HYP", "CD"}
    selected = [entry["name"] for entry in info["labels"]]
    assert selected == [name for name, entry in every.items() if entry["positives"] >= 200]
    assert all(entry["note"] == "fewer than 200 positives" for name, entry in every.items() if name not in selected)
