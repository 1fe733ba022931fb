"""WFDB targets: the real PhysioNet/CinC Challenge 2021 records, and plain WFDB directories with a labels CSV."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import wfdb

from melep_cli.errors import TargetError, UsageError
from melep_cli.targets import WfdbTarget, open_target
from melep_cli.targets.challenge import load_dx_mapping, parse_header
from melep_cli.targets.wfdb_dir import read_wfdb_signal

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
CINC = DATA / "cinc2021"
PTBXL = DATA / "ptbxl"
EQUIVALENT = {"59118001": "713427006", "63593006": "284470004", "17338001": "427172004", "164909002": "733534002"}


@pytest.fixture(scope="module")
def cinc() -> Path:
    if not CINC.is_dir():
        pytest.skip(f"{CINC} is absent")
    return CINC


def dx_line_codes(header_path: Path) -> set[str]:
    """The #Dx codes of a header, read independently of the package: empty codes dropped, equivalents merged."""
    for line in header_path.read_text().splitlines():
        if line.startswith("#Dx"):
            codes = {code.strip() for code in line.split(":", 1)[1].split(",") if code.strip()}
            return {EQUIVALENT.get(code, code) for code in codes}
    raise AssertionError(f"{header_path} has no #Dx line")


def test_every_cinc_record_is_read_with_the_labels_of_its_dx_line(cinc, caplog):
    with caplog.at_level(logging.WARNING, logger="melep"):
        target = open_target(cinc, min_positives=1)
    assert isinstance(target, WfdbTarget) and target.format == "wfdb"
    headers = sorted(cinc.glob("*.hea"))
    assert len(headers) == 156 and len(target) == 156
    assert target.record_ids == [path.stem for path in headers]
    for row, header_path in enumerate(headers):
        got = {code for code, flag in zip(target.label_codes, target.labels[row]) if flag}
        assert got == dx_line_codes(header_path), header_path.name
    # merged equivalents: one label, named by the first code of the pair
    assert "CRBBB" in target.label_names and "RBBB" not in target.label_names
    # the unknown code is a label under its own code, and reported
    assert "251238007" in target.label_names
    assert any("251238007" in record.getMessage() and "no mapping" in record.getMessage() for record in caplog.records)

    seen, lengths = 0, {}
    for batch in target.batches(40):
        assert batch.sampling_rate == 500.0
        assert batch.leads == ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")
        for record_id, signal in zip(batch.ids, batch.signals):
            assert signal.dtype == np.float32 and signal.shape[1] == 12
            lengths[record_id] = signal.shape[0]
        seen += len(batch)
    assert seen == 156 and not target.skipped
    assert sorted(length for length in lengths.values() if length != 5000) == [6000, 8500, 10000]


def test_cinc_signals_are_millivolts_from_gain_and_baseline(cinc):
    import scipy.io

    header = parse_header(cinc / "E00271.hea")  # Georgia: record line starts 'E00271.mat'
    assert header.record_name == "E00271" and header.sampling_rate == 500 and header.n_samples == 5000
    signal = read_wfdb_signal(header)
    adu = scipy.io.loadmat(cinc / "E00271.mat")["val"]
    np.testing.assert_allclose(signal, adu.T / 1000.0, atol=1e-6)


def test_quirky_headers_parse(cinc):
    js = parse_header(cinc / "JS20005.hea")
    assert js.comment("Dx") == "284470004,89792004,427084000,,427172004"
    assert [signal.gain for signal in js.signals] == [1000.0] * 12
    hr = parse_header(next(cinc.glob("HR*.hea")))
    assert {signal.units for signal in hr.signals} == {"mv"}  # lower-case units: still millivolts
    assert hr.signals[0].mv_per_unit == 1.0


def test_label_selection_by_abbreviation_code_and_equivalent(cinc):
    target = open_target(cinc, labels=["AF", "59118001", "pvc", "251238007", "164934002"])
    assert target.label_names == ("AF", "CRBBB", "PVC", "251238007", "TAb")
    assert target.label_codes == ("164889003", "713427006", "427172004", "251238007", "164934002")
    headers = sorted(cinc.glob("*.hea"))
    for row, header_path in enumerate(headers):
        codes = dx_line_codes(header_path)
        assert [int(code in codes) for code in target.label_codes] == target.labels[row].tolist()
    assert open_target(cinc, labels=["RBBB"]).label_names == ("CRBBB",)
    with pytest.raises(TargetError, match=r"label XYZ not found.*labels here: .*NSR"):
        open_target(cinc, labels=["XYZ"])


def test_default_labels_have_min_positives_and_a_negative(cinc):
    target = open_target(cinc)
    positives = target.labels.sum(axis=0)
    assert (positives >= 10).all() and (positives < len(target)).all()
    assert set(target.label_names) >= {"NSR", "SB", "STach", "PAC", "TAb"}
    with pytest.raises(UsageError, match="sampling_rate applies to PTB-XL and HDF5"):
        open_target(cinc, sampling_rate=500)


def test_unreadable_and_flat_records_are_skipped(cinc, tmp_path, caplog):
    for stem in ("A0689", "E00271", "JS20005"):
        for suffix in (".hea", ".mat"):
            shutil.copy(cinc / f"{stem}{suffix}", tmp_path / f"{stem}{suffix}")
    (tmp_path / "E00271.mat").write_bytes(b"garbage")
    import scipy.io

    scipy.io.savemat(tmp_path / "JS20005.mat", {"val": np.full((12, 5000), 7, dtype=np.int16)})
    target = open_target(tmp_path, min_positives=1)
    with caplog.at_level(logging.WARNING, logger="melep"):
        ids = [record_id for batch in target.batches(8) for record_id in batch.ids]
    assert ids == ["A0689"]
    reasons = dict(target.skipped)
    assert "E00271.mat" in reasons["E00271"] and reasons["JS20005"] == "flat on every lead"
    assert any("skipped 2 records" in record.getMessage() for record in caplog.records)
    with pytest.raises(TargetError, match="E00271"):
        list(open_target(tmp_path, min_positives=1, strict=True).batches(8))


def write_wfdb_records(directory: Path, count: int, fmt: str) -> tuple[list[str], list[np.ndarray]]:
    """Records written with wfdb.wrsamp (physical mV in, digital at the header's gain on disk)."""
    rng = np.random.default_rng(5)
    names, signals = [], []
    for i in range(count):
        rate = 250 if i % 2 else 500
        signal = rng.normal(0, 0.5, size=(rate * 2 + i, 3))
        name = f"rec{i:03d}"
        wfdb.wrsamp(
            name,
            fs=rate,
            units=["mV"] * 3,
            sig_name=["I", "II", "V1"],
            p_signal=signal,
            fmt=[fmt] * 3,
            adc_gain=[200.0] * 3,
            baseline=[0] * 3,
            write_dir=str(directory),
        )
        names.append(name)
        signals.append(signal)
    return names, signals


@pytest.mark.parametrize("fmt", ["16", "212"])
def test_plain_wfdb_directory_with_labels_csv(tmp_path, fmt):
    names, signals = write_wfdb_records(tmp_path, 6, fmt)
    labels_csv = tmp_path / "labels.csv"
    labels_csv.write_text("record,X,Y\n" + "".join(f"{n},{i % 2},{int(i < 3)}\n" for i, n in enumerate(names[::-1])))
    target = open_target(tmp_path, labels_csv=labels_csv, min_positives=1)
    assert target.record_ids == names and target.label_names == ("X", "Y")
    got = {}
    for batch in target.batches(10):
        assert len({signal.shape for signal in batch.signals}) >= 1
        for record_id, signal, labels in zip(batch.ids, batch.signals, batch.labels):
            got[record_id] = (batch.sampling_rate, signal, labels)
    for i, name in enumerate(names):
        rate, signal, labels = got[name]
        assert rate == (250 if i % 2 else 500)
        np.testing.assert_allclose(signal, signals[i], atol=1 / 200 + 1e-6)  # one adu at gain 200
        reverse = names[::-1].index(name)
        assert labels.tolist() == [reverse % 2, int(reverse < 3)]


def test_batches_split_where_the_rate_changes(tmp_path):
    names, _ = write_wfdb_records(tmp_path, 4, "16")
    labels_csv = tmp_path / "labels.csv"
    labels_csv.write_text("record_id,X\n" + "".join(f"{n},{i % 2}\n" for i, n in enumerate(names)))
    batches = list(open_target(tmp_path, labels_csv=labels_csv, min_positives=1).batches(10))
    assert [batch.sampling_rate for batch in batches] == [500, 250, 500, 250]


def test_directory_without_labels_is_an_error(tmp_path):
    write_wfdb_records(tmp_path, 2, "16")
    with pytest.raises(TargetError, match=r"no '#Dx:' line.*--labels-csv"):
        open_target(tmp_path)


def test_format16_fast_path_matches_wfdb_rdrecord():
    records = sorted((PTBXL / "records100").glob("*/*.hea"))[::600] if PTBXL.is_dir() else []
    if not records:
        pytest.skip(f"{PTBXL} is absent")
    for header_path in records:
        ours = read_wfdb_signal(parse_header(header_path))
        theirs = wfdb.rdrecord(str(header_path.with_suffix("")), physical=True).p_signal
        np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-6)


def test_mapping_table_merges_the_scored_equivalents():
    mapping = load_dx_mapping()
    for code, canonical in EQUIVALENT.items():
        assert mapping.label_name(code) == mapping.label_name(canonical) == mapping.abbreviation[canonical]
    assert mapping.label_name("164889003") == "AF"
    assert mapping.label_name("251238007") == "251238007"


# -- the shipped CinC sample ---------------------------------------------------------------------------------------
ROOT = Path(__file__).resolve().parents[1]
SAMPLE_CINC = ROOT / "sample_data" / "cinc_wfdb"
README_RANK = "melep rank -c sample_data/checkpoints -t sample_data/cinc_wfdb"
NO_MAPPING = "SNOMED CT codes in no mapping"


def run_melep(argv: list[str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> tuple:
    """`melep ARGV` from the repository root (as the README runs it): exit code, stdout, stderr."""
    from melep_cli.cli import run

    monkeypatch.chdir(ROOT)
    code = run(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_the_sample_readme_command_ranks_the_cinc_sample(capsys, monkeypatch):
    import json

    assert README_RANK in (ROOT / "sample_data" / "README.md").read_text(encoding="utf-8")
    argv = README_RANK.split()[1:]
    code, out, err = run_melep([*argv, "--format", "json", "--device", "cpu"], capsys, monkeypatch)
    assert code == 0, err
    document = json.loads(out)
    assert len(document["results"]) == 5 and all(entry["status"] == "ok" for entry in document["results"])
    assert document["target"]["labels"] == ["NSR"]
    assert document["target"]["records"] == len(list(SAMPLE_CINC.glob("*.hea")))
    assert err.count(NO_MAPPING) == 1, err


def test_inspect_shows_every_label_of_the_cinc_sample_whatever_the_threshold(capsys, monkeypatch):
    import json

    code, out, err = run_melep(["inspect", "sample_data/cinc_wfdb", "--format", "json"], capsys, monkeypatch)
    assert code == 0, err
    assert err.count(NO_MAPPING) == 1, err
    info = json.loads(out)
    every = {entry["name"]: entry for entry in info["all_labels"]}
    independent: dict[str, int] = {}
    mapping = load_dx_mapping()
    for header_path in sorted(SAMPLE_CINC.glob("*.hea")):
        for code_ in {mapping.label_name(code) for code in dx_line_codes(header_path)}:
            independent[code_] = independent.get(code_, 0) + 1
    assert {name: entry["positives"] for name, entry in every.items()} == independent
    assert [entry["name"] for entry in info["labels"]] == ["NSR"]  # the labels `melep rank` would use
    assert all(entry["selected"] == (entry["name"] == "NSR") for entry in every.values())
    assert every["STach"]["note"] == "fewer than 10 positives"

    # a threshold no label reaches: still every label, none selected, and a warning instead of an error
    code, out, err = run_melep(["inspect", "sample_data/cinc_wfdb", "--min-positives", "50"], capsys, monkeypatch)
    assert code == 0, err
    assert "no label has at least 50 positives" in err and err.count(NO_MAPPING) == 1
    for name in independent:
        assert name in out
    assert "fewer than 50 positives" in out
