"""The WFDB header parser (`melep_cli.targets.wfdb_header`): fields, defaults, comments, multi-segment, errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from melep_cli.errors import TargetError
from melep_cli.targets import challenge, wfdb_header
from melep_cli.targets.wfdb_header import DEFAULT_GAIN, Header, SignalSpec, parse_header


def write(tmp_path: Path, text: str, name: str = "rec.hea") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="latin-1")
    return path


def one_signal(tmp_path: Path, line: str) -> SignalSpec:
    header = parse_header(write(tmp_path, f"rec 1 500 10\n{line}\n"))
    assert len(header.signals) == 1
    return header.signals[0]


def test_a_full_header_reads_every_field_melep_uses(tmp_path):
    path = write(
        tmp_path,
        "rec 2 500 5000 14:50:55 05-May-2020\n"
        "rec.dat 16+24 1000(-5)/uV 16 7 -119 1508 0 aVR\n"
        "rec.dat 16 200/mV 16 3 0 0 0 lead with spaces\n",
    )
    header = parse_header(path)
    assert header == Header(
        path=path,
        record_name="rec",
        n_signals=2,
        sampling_rate=500.0,
        n_samples=5000,
        signals=(
            SignalSpec("rec.dat", "16", 24, 1000.0, -5.0, "uV", "aVR", plain_format16=True),
            SignalSpec("rec.dat", "16", 0, 200.0, 3.0, "mV", "lead with spaces", plain_format16=True),
        ),
        comments=(),
    )
    assert header.leads == ("aVR", "lead with spaces")
    assert header.signals[0].mv_per_unit == 1e-3


@pytest.mark.parametrize(
    ("line", "gain", "baseline", "units"),
    [
        ("rec.dat 16", DEFAULT_GAIN, 0.0, "mV"),  # no gain field: 200 adu/mV, ADC zero 0
        ("rec.dat 16 0 16 0 0 0 0 I", DEFAULT_GAIN, 0.0, "mV"),  # gain 0 means the default
        ("rec.dat 16 -0 16 0 0 0 0 I", DEFAULT_GAIN, 0.0, "mV"),
        ("rec.dat 16 200(0)/mV 16 0 0 0 0 I", 200.0, 0.0, "mV"),
        ("rec.dat 16 200(0)/mV 16 9 0 0 0 I", 200.0, 0.0, "mV"),  # the baseline wins over the ADC zero
        ("rec.dat 16 1000/mV 16 9 0 0 0 I", 1000.0, 9.0, "mV"),  # no baseline: the ADC zero
        ("rec.dat 16 1000 16 0 0 0 0 I", 1000.0, 0.0, "mV"),  # no units: mV
        ("rec.dat 16 2.5e2(7)/nV 16 0 0 0 0 I", 250.0, 7.0, "nV"),
        ("rec.dat 16 1000/uV 16 0 0 0 0 I", 1000.0, 0.0, "uV"),
    ],
)
def test_gain_baseline_and_units(tmp_path, line, gain, baseline, units):
    signal = one_signal(tmp_path, line)
    assert (signal.gain, signal.baseline, signal.units) == (gain, baseline, units)


@pytest.mark.parametrize(
    ("field", "fmt", "byte_offset", "plain_format16"),
    [
        ("16", "16", 0, True),
        ("16+24", "16", 24, True),
        ("212", "212", 0, False),
        ("16x2", "16", 0, False),  # samples per frame: not one int16 a lead a frame
        ("16:3+24", "16", 24, False),  # skew
    ],
)
def test_format_and_byte_offset(tmp_path, field, fmt, byte_offset, plain_format16):
    signal = one_signal(tmp_path, f"rec.dat {field} 1000/mV 16 0 0 0 0 I")
    assert (signal.fmt, signal.byte_offset, signal.plain_format16) == (fmt, byte_offset, plain_format16)


def test_signal_lines_without_a_description_are_lead_numbers(tmp_path):
    header = parse_header(write(tmp_path, "rec 2 500 10\nrec.dat 16 1000/mV 16 0 0 0 0\nrec.dat 16\n"))
    assert header.leads == ("lead0", "lead1")


def test_record_line_quirks(tmp_path):
    challenge_style = parse_header(write(tmp_path, "E00271.mat 1 500 5000 05-May-2020 14:50:55\nE00271.mat 16\n"))
    assert (challenge_style.record_name, challenge_style.sampling_rate) == ("E00271", 500.0)
    counter = parse_header(write(tmp_path, "rec 1 500/1000(0) 10\nrec.dat 16\n"))
    assert counter.sampling_rate == 500.0
    bare = parse_header(write(tmp_path, "rec 1\nrec.dat 16\n"))
    assert (bare.sampling_rate, bare.n_samples) == (250.0, None)  # WFDB's default rate, length unknown


def test_comments_and_blank_lines(tmp_path):
    text = (
        "\n# leading comment\n  \nrec 2 500 10\n#Age: 83\n\nrec.dat 16 1000/mV 16 0 0 0 0 I\n"
        "   #Sex: Female\nrec.dat 16 1000/mV 16 0 0 0 0 II\n\n#Dx: 59118001,,426783006\n#\n"
    )
    header = parse_header(write(tmp_path, text))
    assert header.leads == ("I", "II")
    assert header.comments == ("leading comment", "Age: 83", "Sex: Female", "Dx: 59118001,,426783006", "")
    assert header.comment("dx") == "59118001,,426783006" and header.comment("Weight") is None
    assert challenge.dx_codes(header) == ["59118001", "426783006"]


def test_carriage_returns_and_latin1(tmp_path):
    path = tmp_path / "rec.hea"
    path.write_bytes(b"rec 1 500 10\r\nrec.dat 16 1000/\xb5V 16 0 0 0 0 I\r#Dx: 1\r\n")
    header = parse_header(path)
    assert header.signals[0].units == "\u00b5V" and header.signals[0].mv_per_unit == 1e-3
    assert header.comments == ("Dx: 1",)


def test_multi_segment_master_takes_the_first_segments_signals(tmp_path):
    write(tmp_path, "seg1 2 500 10\nseg1.dat 16 1000/mV 16 0 0 0 0 I\nseg1.dat 16 1000/mV 16 0 0 0 0 II\n", "seg1.hea")
    write(tmp_path, "seg2 2 500 20\nseg2.dat 16 1000/mV 16 0 0 0 0 I\nseg2.dat 16 1000/mV 16 0 0 0 0 II\n", "seg2.hea")
    master = write(tmp_path, "multi/3 2 500\nseg1 10\n~ 5\nseg2 20\n#Dx: 1\n", "multi.hea")
    unresolved = parse_header(master, segments=False)
    assert unresolved.signals == () and unresolved.segments == (("seg1", 10), ("~", 5), ("seg2", 20))
    header = parse_header(master)
    assert (header.record_name, header.n_samples, header.leads) == ("multi", 35, ("I", "II"))
    assert header.segment_files == ("seg1.hea", "seg1.dat", "seg2.hea", "seg2.dat")
    assert header.comment("Dx") == "1"


def test_a_multi_segment_master_with_a_missing_segment_names_both(tmp_path):
    master = write(tmp_path, "multi/1 2 500 10\nseg1 10\n", "multi.hea")
    with pytest.raises(TargetError) as error:
        parse_header(master)
    assert str(error.value).startswith(f"{master}: segment seg1 of this multi-segment record: {tmp_path / 'seg1.hea'}")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty header"),
        ("# only a comment\n\n", "empty header"),
        ("rec\n", "record line 'rec' gives no number of signals"),
        ("rec x 500\n", "header number of signals 'x' is not a number"),
        ("rec 1.5 500\n", "header number of signals '1.5' is not a whole number >= 0"),
        ("rec 1 fast\nrec.dat 16\n", "header sampling frequency 'fast' is not a number"),
        ("rec 1 1e999\nrec.dat 16\n", "header sampling frequency '1e999' is out of range"),
        ("rec 1 0 10\nrec.dat 16\n", "sampling frequency 0 is not positive"),
        ("rec 1 500 -3\nrec.dat 16\n", "header number of samples '-3' is not a whole number >= 0"),
        ("rec 2 500 10\nrec.dat 16\n", "header announces 2 signals but has 1 signal lines"),
        ("rec 1 500 10\nrec.dat\n", "signal line 1 'rec.dat' has no format"),
        ("rec 1 500 10\nrec.dat x\n", "signal line 1: format 'x' is not a number"),
        ("rec 1 500 10\nrec.dat 16 1000(x)/mV\n", "signal line 1: gain '1000(x)/mV' is not understood"),
        ("rec 1 500 10\nrec.dat 16 .\n", "signal line 1: gain '.' is not a number"),
        ("rec 1 500 10\nrec.dat 16 1e999/mV\n", "signal line 1: gain '1e999/mV' is out of range"),
        ("rec 1 500 10\nrec.dat 16 200 16 nan\n", "header ADC zero 'nan' is not a number"),
        ("multi/0 2 500\n", "record line 'multi/0 2 500' names no segments"),
        ("multi/2 2 500\nseg1 10\n", "header announces 2 segments but has 1 segment lines"),
        ("multi/1 2 500\nseg1\n", "segment line 1 'seg1' is not 'name samples'"),
    ],
)
def test_malformed_headers_are_one_line_errors_naming_the_file(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(TargetError) as error:
        parse_header(path)
    assert str(error.value) == f"{path}: {message}"
    assert "\n" not in str(error.value)


def test_an_unreadable_file_is_an_error_naming_it(tmp_path):
    with pytest.raises(TargetError, match="cannot read header") as error:
        parse_header(tmp_path / "absent.hea")
    assert str(error.value).startswith(str(tmp_path / "absent.hea"))


def test_standard_headers_read_as_wfdb_reads_them(tmp_path):
    wfdb = pytest.importorskip("wfdb")
    text = (
        "rec 3 360 650000\n"
        "rec.dat 212 200/mV 11 1024 995 -22131 0 MLII\n"
        "rec.dat 212 200(7)/uV 11 1024 1011 20052 0 V5\n"
        "rec.dat 16+24 0 16 0 0 0 0\n"
    )
    ours = parse_header(write(tmp_path, text))
    theirs = wfdb.rdheader(str(tmp_path / "rec"))
    assert (ours.sampling_rate, ours.n_samples, ours.n_signals) == (theirs.fs, theirs.sig_len, theirs.n_sig)
    assert [s.file_name for s in ours.signals] == theirs.file_name
    assert [s.fmt for s in ours.signals] == theirs.fmt
    assert [s.byte_offset for s in ours.signals] == [offset or 0 for offset in theirs.byte_offset]
    assert [s.gain for s in ours.signals] == theirs.adc_gain
    assert [s.baseline for s in ours.signals] == theirs.baseline
    assert [s.units for s in ours.signals] == theirs.units
    assert list(ours.leads[:2]) == theirs.sig_name[:2]


def test_the_parser_is_one_object_wherever_it_is_imported_from():
    for name in ("parse_header", "Header", "SignalSpec", "INVALID_SAMPLE", "_parse_header_fields", "_split_header"):
        assert getattr(challenge, name) is getattr(wfdb_header, name)
