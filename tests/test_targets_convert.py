"""`melep convert` and the library `convert`: WFDB/PTB-XL/HDF5 -> HDF5 layout, resampling, cropping, atomicity."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest

from melep_cli.cli import run
from melep_cli.errors import TargetError, UsageError
from melep_cli.report import target_inspection_tables
from melep_cli.targets import TargetOptions, convert, inspect_target, open_target

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
CINC = DATA / "cinc2021"
PTBXL = DATA / "ptbxl"


@pytest.fixture(scope="module")
def cinc_subset(tmp_path_factory) -> Path:
    """30 Challenge records including the three longer ones (10000, 8500, 6000 samples)."""
    if not CINC.is_dir():
        pytest.skip(f"{CINC} is absent")
    directory = tmp_path_factory.mktemp("cinc")
    stems = [*sorted(path.stem for path in CINC.glob("*.hea"))[::6], "A1041", "A2712", "A5215", "JS20005"]
    for stem in sorted(set(stems)):
        for suffix in (".hea", ".mat"):
            shutil.copy(CINC / f"{stem}{suffix}", directory / f"{stem}{suffix}")
    return directory


def records(target, batch_size: int = 16) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    return {
        record_id: (signal, labels)
        for batch in target.batches(batch_size)
        for record_id, signal, labels in zip(batch.ids, batch.signals, batch.labels)
    }


def test_wfdb_to_hdf5_round_trip_keeps_signals_labels_and_order(cinc_subset, tmp_path):
    output = tmp_path / "cinc.h5"
    result = convert(cinc_subset, output, target_options=TargetOptions(min_positives=2))
    source = open_target(cinc_subset, min_positives=2)
    converted = open_target(output, min_positives=2)
    assert result.records == len(source) and result.padded
    assert converted.record_ids == source.record_ids
    assert converted.label_names == source.label_names
    np.testing.assert_array_equal(converted.labels, source.labels)
    original, copy = records(source), records(converted)
    assert list(copy) == list(original)
    for record_id, (signal, labels) in original.items():
        assert copy[record_id][0].shape == signal.shape  # native length, not the padded one
        np.testing.assert_allclose(copy[record_id][0], signal, atol=1 / 1000)  # int16 quantisation at 1000 adu/mV
        np.testing.assert_array_equal(copy[record_id][1], labels)
    with h5py.File(output) as h5:
        assert h5["signals"].dtype == np.float32 and h5["signals"].chunks is not None
        assert h5["signals"].compression == "gzip"
        assert h5.attrs["sampling_rate"] == 500
        assert list(h5.attrs["leads"]) == ["I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6"]
        assert [name for name in h5["labels"].attrs["label_names"]] == list(source.label_names)
        assert h5["signals"].shape == (len(source), 10000, 12)
        assert sorted(set(h5["lengths"][()].tolist())) == [5000, 6000, 8500, 10000]
    assert [p.name for p in tmp_path.iterdir()] == ["cinc.h5"]  # no temporary file left behind


def test_resampling_and_fixed_duration(cinc_subset, tmp_path):
    output = tmp_path / "short.h5"
    result = convert(cinc_subset, output, resample=100, seconds=8, target_options=TargetOptions(labels=["NSR", "PAC"]))
    assert not result.padded and result.samples == 800
    converted = open_target(output, labels=["NSR", "PAC"])
    source = open_target(cinc_subset, labels=["NSR", "PAC"])
    assert converted.record_ids == source.record_ids
    assert all(signal.shape == (800, 12) for signal, _ in records(converted).values())
    with h5py.File(output) as h5:
        assert "lengths" not in h5 and h5.attrs["sampling_rate"] == 100


def test_resampling_keeps_the_waveform(tmp_path):
    t = np.arange(2000) / 500.0  # 4 s at 500 Hz
    waves = np.stack([np.sin(2 * np.pi * 2 * t + lead) for lead in range(12)], axis=1).astype(np.float32)
    source = tmp_path / "sine.h5"
    with h5py.File(source, "w") as h5:
        h5["signals"] = np.stack([waves, -waves])
        h5.attrs["sampling_rate"] = 500
        h5["labels"] = np.array([[1], [0]], dtype=np.uint8)
        h5["labels"].attrs["label_names"] = ["S"]
        h5["record_ids"] = np.array([b"up", b"down"])
    for rate in (100, 360):
        output = tmp_path / f"sine{rate}.h5"
        result = convert(source, output, resample=rate, target_options=TargetOptions(min_positives=1))
        assert result.samples == 4 * rate and result.sampling_rate == rate
        batch = next(iter(open_target(output, min_positives=1).batches(2)))
        assert batch.sampling_rate == rate and batch.ids == ["up", "down"]
        t_out = np.arange(4 * rate) / rate
        expected = np.stack([np.sin(2 * np.pi * 2 * t_out + lead) for lead in range(12)], axis=1)
        inner = slice(rate // 2, -rate // 2)  # away from the filter's edge effects
        np.testing.assert_allclose(batch.signals[0][inner], expected[inner], atol=0.02)
        np.testing.assert_allclose(batch.signals[1][inner], -expected[inner], atol=0.02)


def test_zero_padding_to_a_longer_duration(tmp_path):
    signals = np.random.default_rng(0).normal(size=(3, 50, 12)).astype(np.float32)
    source = tmp_path / "in.h5"
    with h5py.File(source, "w") as h5:
        h5["signals"] = signals
        h5["signals"].attrs["sampling_rate"] = 50
        h5["labels"] = np.array([[1], [0], [1]], dtype=np.uint8)
        h5["labels"].attrs["label_names"] = ["Q"]
        h5["record_ids"] = np.array(["a", "b", "c"], dtype=h5py.string_dtype())
    convert(source, tmp_path / "out.h5", seconds=2, target_options=TargetOptions(min_positives=1))
    with h5py.File(tmp_path / "out.h5") as h5:
        stored = h5["signals"][()]
        assert [i.decode() if isinstance(i, bytes) else i for i in h5["record_ids"][()]] == ["a", "b", "c"]
    assert stored.shape == (3, 100, 12)
    np.testing.assert_array_equal(stored[:, :50], signals)
    assert not stored[:, 50:].any()


def test_failed_conversion_leaves_no_file(tmp_path, monkeypatch):
    signals = np.ones((4, 20, 12), dtype=np.float32)  # flat records: nothing readable
    source = tmp_path / "flat.h5"
    with h5py.File(source, "w") as h5:
        h5["signals"] = signals
        h5["signals"].attrs["sampling_rate"] = 10
        h5["labels"] = np.array([[1], [0], [1], [0]], dtype=np.uint8)
    output = tmp_path / "out.h5"
    with pytest.raises(TargetError, match="no readable record"):
        convert(source, output, target_options=TargetOptions(min_positives=1))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["flat.h5"]


def test_ptbxl_fold_converts_with_superclass_labels(tmp_path):
    if not (PTBXL / "ptbxl_database.csv").is_file():
        pytest.skip(f"{PTBXL} is absent")
    result = convert(PTBXL, tmp_path / "fold10.h5", target_options=TargetOptions(folds="10"))
    target = open_target(tmp_path / "fold10.h5")
    source = open_target(PTBXL, folds="10")
    assert result.records == len(source) == len(target)
    assert target.label_names == ("NORM", "MI", "STTC", "HYP", "CD")
    np.testing.assert_array_equal(target.labels, source.labels)
    assert target.record_ids == source.record_ids


def test_cli_convert_writes_the_file_and_reports_json(cinc_subset, tmp_path, capsys):
    output = tmp_path / "out.h5"
    code = run(["convert", str(cinc_subset), str(output), "--labels", "NSR,PAC", "--seconds", "10", "-f", "json"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    document = json.loads(captured.out)
    assert document["labels"] == ["NSR", "PAC"] and document["samples"] == 5000
    assert document["records"] == len(open_target(output, min_positives=1))


def test_cli_bad_target_exits_2_with_one_line_naming_the_file(tmp_path, capsys):
    missing = tmp_path / "nowhere"
    assert run(["convert", str(missing), str(tmp_path / "o.h5")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(missing) in err[0] and err[0].startswith("melep: error:")
    junk = tmp_path / "junk.txt"
    junk.write_text("hello")
    assert run(["convert", str(junk), str(tmp_path / "o.h5")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "junk.txt" in err[0] and "unknown target format" in err[0]
    assert not (tmp_path / "o.h5").exists()


def test_cli_unknown_label_exits_2_naming_it(cinc_subset, tmp_path, capsys):
    assert run(["convert", str(cinc_subset), str(tmp_path / "o.h5"), "--labels", "NOPE"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "NOPE" in err[0] and "labels here" in err[0]


def test_inspect_target_reports_rates_durations_labels_and_skips(cinc_subset, tmp_path):
    directory = tmp_path / "copy"
    shutil.copytree(cinc_subset, directory)
    (directory / "A1041.mat").write_bytes(b"broken")
    info = inspect_target(directory, target_options=TargetOptions(min_positives=2))
    assert info["format"] == "wfdb" and info["records"] == len(list(directory.glob("*.hea")))
    assert info["records_read"] == info["records"] - 1
    assert info["skipped"][0]["id"] == "A1041" and "A1041.mat" in info["skipped"][0]["reason"]
    assert info["sampling_rates"] == {"500": info["records_read"]}
    assert info["seconds"]["min"] == 10 and info["seconds"]["max"] == 20
    labels = {entry["name"]: entry for entry in info["labels"]}
    assert all(entry["positives"] >= 2 for entry in labels.values())
    assert labels["NSR"]["snomed_code"] == "426783006"
    json.dumps(info)  # JSON-ready
    from rich.console import Console

    console = Console(width=150, record=True)
    for table in target_inspection_tables(info):
        console.print(table)
    text = console.export_text()
    assert "NSR" in text and "A1041" in text and "500 Hz" in text


def test_mixed_rates_need_sampling_rate_and_leads_are_reordered(tmp_path):
    import wfdb

    rng = np.random.default_rng(2)
    for name, rate, leads in (("r1", 500, ["I", "II", "V1"]), ("r2", 250, ["V1", "I", "II"])):
        wfdb.wrsamp(
            name,
            fs=rate,
            units=["mV"] * 3,
            sig_name=leads,
            p_signal=rng.normal(size=(rate, 3)),
            fmt=["16"] * 3,
            adc_gain=[1000.0] * 3,
            baseline=[0] * 3,
            write_dir=str(tmp_path),
        )
    (tmp_path / "labels.csv").write_text("record_id,K\nr1,1\nr2,0\n")
    options = TargetOptions(labels_csv=tmp_path / "labels.csv", min_positives=1)
    with pytest.raises(TargetError, match=r"different sampling rates \(500 and 250 Hz.*; pass resample HZ") as raised:
        convert(tmp_path, tmp_path / "out.h5", target_options=options)
    assert "pass --resample HZ" in raised.value.naming(lambda name: "--" + name)
    assert not (tmp_path / "out.h5").exists()
    seen = []
    result = convert(
        tmp_path,
        tmp_path / "out.h5",
        resample=250,
        progress=lambda done, total: seen.append((done, total)),
        target_options=options,
    )
    assert result.leads == ("I", "II", "V1") and result.samples == 250 and seen[-1] == (2, 2)
    assert result.sampling_rate == 250 and result.source_sampling_rates == (250.0, 500.0)
    with h5py.File(tmp_path / "out.h5") as h5:
        assert h5.attrs["sampling_rate"] == 250 and h5.attrs["source_sampling_rates"].tolist() == [250.0, 500.0]
    source = records(open_target(tmp_path, options))
    converted = records(open_target(tmp_path / "out.h5", min_positives=1))
    np.testing.assert_allclose(converted["r2"][0], source["r2"][0][:, [1, 2, 0]], atol=1e-3)


def _sine_h5(path: Path, rate: float, seconds: float = 4.0) -> Path:
    """Two 12-lead sine records at `rate` Hz with the rate attribute."""
    t = np.arange(round(seconds * rate)) / rate
    waves = np.stack([np.sin(2 * np.pi * 2 * t + lead) for lead in range(12)], axis=1).astype(np.float32)
    with h5py.File(path, "w") as h5:
        h5["signals"] = np.stack([waves, -waves])
        h5.attrs["sampling_rate"] = rate
        h5["labels"] = np.array([[1], [0]], dtype=np.uint8)
        h5["labels"].attrs["label_names"] = ["S"]
        h5["record_ids"] = np.array([b"up", b"down"])
    return path


def test_resampling_uses_the_factors_prepare_uses(tmp_path):
    """1001 -> 1000 Hz: convert resamples by up/down = 1000/1001, as `prepare` does, not by a 999/1000 guess."""
    from scipy.signal import resample_poly

    from melep_cli.preprocess import InputSpec, prepare, resampling_factors

    assert resampling_factors(1001, 1000) == (1000, 1001)
    source = _sine_h5(tmp_path / "odd.h5", 1001)
    result = convert(source, tmp_path / "even.h5", resample=1000, target_options=TargetOptions(min_positives=1))
    assert result.sampling_rate == 1000 and result.source_sampling_rates == (1001.0,)
    with h5py.File(source) as h5:
        original = h5["signals"][()]
    with h5py.File(tmp_path / "even.h5") as h5:
        written = h5["signals"][()]
    expected = resample_poly(original, 1000, 1001, axis=1).astype(np.float32)
    np.testing.assert_allclose(written, expected, rtol=0, atol=1e-6)
    spec = InputSpec(
        sampling_rate=1000, samples=None, leads=tuple(result.leads), layout="NTC", normalization="none", dtype="float32"
    )
    np.testing.assert_allclose(written, prepare(original, 1001, result.leads, spec), rtol=0, atol=1e-6)


def test_library_resample_is_the_output_rate_and_sampling_rate_the_read_rate(tmp_path):
    """convert(..., sampling_rate=) is open_target's (the rate a file without the attribute is read at)."""
    source = tmp_path / "norate.h5"
    with h5py.File(_sine_h5(tmp_path / "rated.h5", 250)) as rated, h5py.File(source, "w") as h5:
        h5["signals"] = rated["signals"][()]
        h5["labels"] = rated["labels"][()]
        h5["record_ids"] = rated["record_ids"][()]
    result = convert(
        source, tmp_path / "out.h5", resample=125, target_options=TargetOptions(sampling_rate=250, min_positives=1)
    )
    assert result.source_sampling_rates == (250.0,) and result.sampling_rate == 125 and result.samples == 500
    with pytest.raises(UsageError, match="contradicts"):
        convert(
            tmp_path / "rated.h5", tmp_path / "x.h5", target_options=TargetOptions(sampling_rate=125, min_positives=1)
        )
    with pytest.raises(UsageError, match=r"^resample: must be a positive number"):
        convert(source, tmp_path / "x.h5", resample=0, target_options=TargetOptions(sampling_rate=250, min_positives=1))
    assert not (tmp_path / "x.h5").exists()


def test_target_options_with_an_open_target_are_an_error(tmp_path):
    """An open Target was opened with its own options: more are not silently dropped."""
    source = _sine_h5(tmp_path / "s.h5", 250)
    with pytest.raises(UsageError, match=r"target_options: apply to a target path, not to the open target"):
        convert(open_target(source, min_positives=1), tmp_path / "o.h5", target_options=TargetOptions(labels=["S"]))
    assert convert(open_target(source, min_positives=1), tmp_path / "o.h5").records == 2


def test_cli_ptbxl_sampling_rate_reads_the_500_hz_files_and_says_so(tmp_path, capsys):
    """`--sampling-rate 500 --folds 10` reads records500 (it used to upsample the 100 Hz files)."""
    if not (PTBXL / "records500").is_dir():
        pytest.skip(f"{PTBXL} is absent")
    output = tmp_path / "x.h5"
    code = run(["convert", str(PTBXL), str(output), "--sampling-rate", "500", "--folds", "10", "-f", "json"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    document = json.loads(captured.out)
    assert document["sampling_rate"] == 500 and document["source_sampling_rates"] == [500.0]
    assert [line for line in captured.err.splitlines() if line.startswith("melep: wrote")] == [
        f"melep: wrote {output}: {document['records']} records read at 500 Hz, not resampled"
    ]
    source = open_target(PTBXL, folds="10", sampling_rate=500)
    assert document["records"] == len(source)
    with h5py.File(output) as h5:
        assert h5.attrs["sampling_rate"] == 500 and h5.attrs["source_sampling_rates"].tolist() == [500.0]
    original, copy = records(source), records(open_target(output))
    assert list(copy) == list(original)
    for record_id, (signal, _) in original.items():
        np.testing.assert_allclose(copy[record_id][0], signal, atol=1e-6)


def test_cli_resample_reports_source_and_output_rates(tmp_path, capsys):
    source = _sine_h5(tmp_path / "sine.h5", 500)
    output = tmp_path / "out.h5"
    code = run(["convert", str(source), str(output), "--resample", "250", "--min-positives", "1"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert captured.err.splitlines() == [f"melep: wrote {output}: 2 records read at 500 Hz, resampled to 250 Hz"]
    assert "250 Hz (resampled from 500 Hz)" in captured.out
    with h5py.File(output) as h5:
        assert h5.attrs["sampling_rate"] == 250 and h5.attrs["source_sampling_rates"].tolist() == [500.0]
        assert h5["signals"].shape == (2, 1000, 12)
    assert run(["convert", str(source), str(tmp_path / "q.h5"), "--resample", "250", "--min-positives", "1", "-q"]) == 0
    assert capsys.readouterr().err == ""


def test_cli_source_rate_is_gone_with_a_pointer_to_the_new_spelling(tmp_path, capsys):
    source = _sine_h5(tmp_path / "sine.h5", 500)
    assert run(["convert", str(source), str(tmp_path / "o.h5"), "--source-rate", "500"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--source-rate" in err[0] and "--sampling-rate" in err[0] and "--resample" in err[0]
    assert not (tmp_path / "o.h5").exists()


def test_cli_sampling_rate_on_a_wfdb_source_points_to_resample(cinc_subset, tmp_path, capsys):
    """The old spelling of resampling, `convert WFDB out.h5 --sampling-rate 100`, is an error that says what to use."""
    assert run(["convert", str(cinc_subset), str(tmp_path / "o.h5"), "--sampling-rate", "100"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--sampling-rate applies to PTB-XL and HDF5 targets only (this is wfdb" in err[0], err
    assert "--resample" in err[0]
