"""Fuzzing the readers of untrusted files: WFDB/Challenge headers, labels CSVs, HDF5 targets.

Random bytes and random structures may give a result or the documented error (a MelepError
subclass, one line naming the file), never any other exception. Fast by default (50 examples
each); a longer local run:

    MELEP_FUZZ_EXAMPLES=2000 pytest tests/test_fuzz.py
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import h5py
import numpy as np
import pytest
import scipy.io
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from melep_cli.errors import MelepError
from melep_cli.targets import open_target
from melep_cli.targets.challenge import (
    Header,
    _parse_header_fields,
    _parse_plain_header,
    _split_header,
    dx_codes,
    parse_header,
)
from melep_cli.targets.labels_csv import LabelTable, join_labels, read_labels_csv
from melep_cli.targets.wfdb_dir import WfdbTarget

EXAMPLES = int(os.environ.get("MELEP_FUZZ_EXAMPLES", "50"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    derandomize=EXAMPLES <= 50,  # CI runs the same examples every time; longer local runs explore
)


@pytest.fixture(scope="module")
def scratch() -> Iterator[Path]:
    """One folder for the whole module (hypothesis re-runs a test body many times per fixture)."""
    with tempfile.TemporaryDirectory(prefix="melep-fuzz-") as folder:
        yield Path(folder)


def _single_line(error: MelepError) -> None:
    assert "\n" not in str(error), repr(str(error))


# ----- WFDB / Challenge headers ------------------------------------------------------------------
_NUMBERS = st.sampled_from(
    ["12", "0", "-3", "1", "500", "500/1000(0)", "5000", "1e999", "-1e999", "nan", "inf", "1e-320", "99999999999999999"]
)
_TOKENS = st.one_of(_NUMBERS, st.text(min_size=1, max_size=8).map(lambda text: "".join(text.split()) or "x"))
_FORMATS = st.sampled_from(["16", "16+24", "212", "16x2", "16:3+24", "x", "80", "16+99999999999999999999"])
_GAINS = st.sampled_from(["1000/mV", "1000(0)/mV", "200(-5)/uV", "0", "-1", "1e999", ".", "e", "1000(x)/mV", "/"])


@st.composite
def _headers(draw) -> str:
    """Header text: a record line, signal lines and comments built from real and hostile tokens."""
    name = draw(st.sampled_from(["E00271.mat", "E00271", "rec", "a/b", "x.dat"]))
    signals = draw(st.integers(0, 4))
    counts = st.one_of(st.just(str(signals)), _NUMBERS)  # mostly a count that agrees with the lines below
    record = [name, *draw(st.lists(counts, max_size=4)), *draw(st.lists(_TOKENS, max_size=2))]
    lines = [" ".join(record)]
    for _ in range(signals):
        signal = [
            draw(st.sampled_from(["E00271.mat", "rec.dat", "rec.dat", "x"])),
            draw(_FORMATS),
            draw(_GAINS),
            *draw(st.lists(_NUMBERS, max_size=6)),
            draw(st.sampled_from(["I", "II", "V1", "aVR", "lead with spaces"])),
        ]
        lines.append(" ".join(signal[: draw(st.integers(1, len(signal)))]))
    comments = draw(
        st.lists(st.sampled_from(["#Dx: 59118001,,426783006", "#Dx: 59118001", "#Dx:", "#Age: 83", "# x: y: z", "#"]))
    )
    lines[draw(st.integers(0, len(lines))) : 0] = comments
    return "\n".join(lines) + draw(st.sampled_from(["\n", "", "\r\n", "\n\n"]))


def _parse_or_error(path: Path) -> Header | None:
    try:
        header = parse_header(path)
    except MelepError as error:
        _single_line(error)
        assert str(path) in str(error)
        return None
    assert header.sampling_rate > 0 and np.isfinite(header.sampling_rate)
    assert header.n_signals == len(header.signals) >= 0
    assert header.n_samples is None or header.n_samples >= 0
    dx_codes(header)
    return header


@FUZZ
@given(data=st.binary(max_size=600))
def test_header_parser_on_random_bytes(scratch: Path, data: bytes) -> None:
    path = scratch / "random.hea"
    path.write_bytes(data)
    _parse_or_error(path)


@FUZZ
@given(text=_headers())
@example(text="E00271.mat -3\n")  # found by this test: a negative signal count was accepted
@example(text="rec 1 1e999 10\nrec.dat 16 200 16 0 0 0 0 I\n")  # an infinite rate
@example(text="rec 1 500 1e999\n")  # int(inf) raised OverflowError
def test_header_parser_on_random_structures(scratch: Path, text: str) -> None:
    path = scratch / "structured.hea"
    path.write_bytes(text.encode("utf-8", "surrogatepass"))
    _parse_or_error(path)


@st.composite
def _common_headers(draw) -> str:
    """Headers close to the common shape the fast path takes, with one hostile token here and there."""
    signals = draw(st.integers(0, 3))
    rate = draw(st.sampled_from(["500", "100", "00250"]) | st.sampled_from(["0", "1e999", "500.5", "٥٠٠"]))
    record = f"rec {draw(st.sampled_from([str(signals), str(signals + 1), '0' + str(signals)]))} {rate} 5000"
    lines = [record + draw(st.sampled_from(["", " 05-May-2020 14:50:55"]))]
    for _ in range(signals):
        fields = [
            draw(st.sampled_from(["rec.dat", "rec.mat"])),
            draw(st.sampled_from(["16", "16+24", "212", "8", "16+0"]) | _FORMATS | st.just("٨")),
            draw(st.sampled_from(["1000.0(0)/mV", "1000/mV", "-0(-0)/MV", "2.5e2(7)/nV", "1e-320/mV"]) | _GAINS),
            "16",
            draw(st.sampled_from(["0", "-0", "0x1", "+.5e-3"]) | _NUMBERS),
            "0",
            "0",
            "0",
            draw(st.sampled_from(["I", "aVR", "lead with spaces"])),
        ]
        lines.append(" ".join(fields[: draw(st.just(len(fields)) | st.integers(2, len(fields)))]))
    return "\n".join(lines) + "\n#Dx: 1\n"


@FUZZ
@given(text=_headers() | _common_headers())
@example(text="rec 2 500 5000\nrec.dat 16+24 1000/mV 16 0 0 0 0 I\nrec.dat 212 200(-5)/uV 12 1e-320 0 0 0 II\n")
@example(text="rec 1 500 10 x\nrec.dat 16 -0(-0)/MV 16 -0 0 0 0 a b c\n#Dx: 1\n")
def test_the_header_fast_path_agrees_with_the_general_parser(text: str) -> None:
    """Where the fast path gives a Header, the general parser gives an equal one (and does not reject the header)."""
    fields, comments = _split_header(text)
    path = Path("fuzz.hea")
    fast = _parse_plain_header(path, fields, comments)
    if fast is not None:
        assert fast == _parse_header_fields(path, fields, comments)


@FUZZ
@given(text=_headers(), strict=st.booleans())
@example(text="#Dx:\nE00271.mat 0\n", strict=False)  # found by this test: no label at all raised ValueError
@example(text="E00271 1 500 10\nrec.dat 16+99999999999999999999 1000/mV\n#Dx: 59118001\n", strict=False)
def test_a_wfdb_directory_with_a_random_header_opens_or_fails_cleanly(scratch: Path, text: str, strict: bool) -> None:
    """The whole reader: open the directory, then decode (the signal files are small, random or absent).

    A second, well-formed record with another diagnosis gives every label a positive and a negative,
    so label selection lets the fuzzed record through to decoding.
    """
    folder = Path(tempfile.mkdtemp(dir=scratch))
    (folder / "E00271.hea").write_bytes(text.encode("utf-8", "surrogatepass"))
    (folder / "good.hea").write_text(
        "good 2 500 12\ngood.mat 16 1000/mV 16 0 0 0 0 I\ngood.mat 16 1000/mV 16 0 0 0 0 II\n#Dx: 164889003\n"
    )
    scipy.io.savemat(folder / "good.mat", {"val": np.arange(24, dtype=np.int16).reshape(2, 12)})
    scipy.io.savemat(folder / "E00271.mat", {"val": np.arange(24, dtype=np.int16).reshape(2, 12)})
    (folder / "rec.dat").write_bytes(bytes(range(256)) * 4)
    try:
        target = WfdbTarget(folder, min_positives=1, strict=strict)
        for _ in target.batches(4):
            pass
    except MelepError as error:
        _single_line(error)


# ----- labels CSV --------------------------------------------------------------------------------
_CELLS = st.one_of(
    st.sampled_from(["0", "1", "1.0", "0.0", "true", "False", "yes", "", " 1 ", "2", "nan", "1" * 400 + ".0", "-0"]),
    st.text(max_size=6),
)


@st.composite
def _label_tables(draw) -> str:
    width = draw(st.integers(1, 5))
    header = draw(
        st.lists(st.sampled_from(["record_id", "ecg_id", "id", "AF", "NORM", "", "x,y", '"q"']), min_size=width)
    )[:width]
    rows = [header]
    for _ in range(draw(st.integers(0, 6))):
        row = draw(st.lists(_CELLS, min_size=width, max_size=width + draw(st.integers(0, 1))))
        rows.append(row)
    separator = draw(st.sampled_from([",", ";"]))
    quote = draw(st.booleans())
    return "\n".join(separator.join(f'"{cell}"' if quote else cell for cell in row) for row in rows)


def _read_or_error(path: Path, record_ids: list[str]) -> LabelTable | None:
    try:
        table = read_labels_csv(path)
    except MelepError as error:
        _single_line(error)
        assert str(path) in str(error)
        return None
    assert table.matrix.shape == (len(table.ids), len(table.names))
    assert set(np.unique(table.matrix)) <= {0, 1}
    try:
        join = join_labels(record_ids, table, source="target", strict=False)
    except MelepError as error:
        _single_line(error)
    else:
        assert join.matrix.shape == (len(join.record_positions), len(table.names))
    return table


@FUZZ
@given(data=st.binary(max_size=400), record_ids=st.lists(st.text(max_size=4), max_size=4, unique=True))
def test_labels_csv_on_random_bytes(scratch: Path, data: bytes, record_ids: list[str]) -> None:
    path = scratch / "random.csv"
    path.write_bytes(data)
    _read_or_error(path, record_ids)


@FUZZ
@given(text=_label_tables(), record_ids=st.lists(st.sampled_from(["1", "2", "10", "A0689", ""]), unique=True))
@example(text="ecg_id,AF\n" + "1" * 400 + ".0,1\n", record_ids=["1"])  # found by this test: float() overflowed
def test_labels_csv_on_random_tables(scratch: Path, text: str, record_ids: list[str]) -> None:
    path = scratch / "table.csv"
    path.write_bytes(text.encode("utf-8", "surrogatepass"))
    _read_or_error(path, record_ids)


# ----- HDF5 targets ------------------------------------------------------------------------------
_ATTRIBUTE_VALUES = st.sampled_from(
    [None, 100, 500.0, -1, 0, np.nan, np.inf, "100", "abc", b"\xff", [], [100, 200], np.array([[1.0]]), True]
)
_NAMES = st.sampled_from(
    [None, ["A"], ["A", "B"], ["A", "A"], [b"A", b"\xff"], [1, 2], [], "A", np.array([[b"A", b"B"]]), ["I"] * 12]
)


@st.composite
def _hdf5_files(draw) -> dict:
    n = draw(st.integers(0, 4))
    samples = draw(st.integers(0, 12))
    leads = draw(st.sampled_from([0, 1, 2, 12, 13]))
    shape = draw(st.sampled_from([(n, samples, leads), (n, samples), (n,), (n, samples, leads, 1)]))
    dtype = draw(st.sampled_from(["int16", "float32", "float64", "bool", "S2", "complex64", "uint8"]))
    return {
        "signals_name": draw(st.sampled_from(["signals", "tracings", "other", "signals/group"])),
        "shape": shape,
        "dtype": dtype,
        "fill": draw(st.sampled_from(["random", "nan", "inf", "flat", "zero"])),
        "rate": draw(_ATTRIBUTE_VALUES),
        "rate_on": draw(st.sampled_from(["file", "dataset"])),
        "leads": draw(_NAMES),
        "labels": draw(st.sampled_from([None, "binary", "two", "nan", "text", "wrong_rows", "group", "3d"])),
        "label_width": draw(st.integers(0, 3)),
        "label_names": draw(_NAMES),
        "label_names_as": draw(st.sampled_from(["attribute", "dataset"])),
        "ids": draw(st.sampled_from([None, "int", "text", "bytes", "float", "nan", "duplicates", "wrong_count", "2d"])),
        "ids_name": draw(st.sampled_from(["record_ids", "exam_id"])),
        "lengths": draw(st.sampled_from([None, "ok", "negative", "too_long", "float", "nan", "wrong_count"])),
        "requested": draw(st.sampled_from([None, ["A"], ["B", "A"], ["missing"]])),
        "seed": draw(st.integers(0, 2**16)),
    }


def _write_hdf5(path: Path, spec: dict) -> None:
    random = np.random.default_rng(spec["seed"])
    shape, n = spec["shape"], spec["shape"][0]
    values = {
        "random": random.normal(size=shape) * 100,
        "nan": np.full(shape, np.nan),
        "inf": np.full(shape, np.inf),
        "flat": np.ones(shape),
        "zero": np.zeros(shape),
    }[spec["fill"]]
    dtype = np.dtype(spec["dtype"])
    if dtype.kind in "iub":
        values = np.nan_to_num(values, nan=0, posinf=0).astype(dtype)
    elif dtype.kind == "S":
        values = np.full(shape, b"x", dtype=dtype)
    else:
        values = values.astype(dtype)
    width = spec["label_width"]
    with h5py.File(path, "w") as handle:
        if "/" in spec["signals_name"]:
            handle.create_group("signals")
        signals = handle.create_dataset(spec["signals_name"], data=values)
        if spec["rate"] is not None:
            (handle if spec["rate_on"] == "file" else signals).attrs["sampling_rate"] = spec["rate"]
        if spec["leads"] is not None:
            handle.attrs["leads"] = spec["leads"]
        labels_kind = spec["labels"]
        if labels_kind == "group":
            handle.create_group("labels")
        elif labels_kind is not None:
            labels = {
                "binary": random.integers(0, 2, size=(n, width)),
                "two": np.full((n, width), 2),
                "nan": np.full((n, width), np.nan),
                "text": np.full((n, width), b"1"),
                "wrong_rows": random.integers(0, 2, size=(n + 1, width)),
                "3d": random.integers(0, 2, size=(n, width, 2)),
            }[labels_kind]
            dataset = handle.create_dataset("labels", data=labels)
            if spec["label_names"] is not None:
                names = spec["label_names"]
                if isinstance(names, list) and names and isinstance(names[0], str):
                    names = np.asarray(names, dtype=h5py.string_dtype())  # variable-length strings
                if spec["label_names_as"] == "attribute":
                    dataset.attrs["label_names"] = names
                else:
                    handle.create_dataset("label_names", data=names)
        ids = {
            None: None,
            "int": np.arange(n),
            "text": np.array([f"r{i}" for i in range(n)], dtype=h5py.string_dtype()),
            "bytes": np.array([b"\xff" + bytes([i]) for i in range(n)]),
            "float": np.arange(n) + 0.5,
            "nan": np.full(n, np.nan),
            "duplicates": np.zeros(n, dtype=int),
            "wrong_count": np.arange(n + 2),
            "2d": np.zeros((n, 2)),
        }[spec["ids"]]
        if ids is not None:
            handle.create_dataset(spec["ids_name"], data=ids)
        samples = shape[1] if len(shape) > 1 else 0
        lengths = {
            None: None,
            "ok": np.full(n, max(samples - 1, 0)),
            "negative": np.full(n, -1),
            "too_long": np.full(n, samples + 1),
            "float": np.full(n, samples / 2),
            "nan": np.full(n, np.nan),
            "wrong_count": np.zeros(n + 1, dtype=int),
        }[spec["lengths"]]
        if lengths is not None:
            handle.create_dataset("lengths", data=lengths)


@FUZZ
@given(data=st.binary(max_size=3000), keep_signature=st.booleans())
def test_hdf5_reader_on_random_bytes(scratch: Path, data: bytes, keep_signature: bool) -> None:
    path = scratch / "random.h5"
    signature = b"\x89HDF\r\n\x1a\n"
    path.write_bytes(signature + data if keep_signature else data)
    with pytest.raises(MelepError) as raised:
        open_target(path)
    _single_line(raised.value)
    assert str(path) in str(raised.value)


@FUZZ
@given(spec=_hdf5_files(), strict=st.booleans(), batch_size=st.integers(1, 3))
def test_hdf5_reader_on_random_structures(scratch: Path, spec: dict, strict: bool, batch_size: int) -> None:
    path = scratch / "structured.h5"
    _write_hdf5(path, spec)
    try:
        target = open_target(path, labels=spec["requested"], min_positives=1, strict=strict)
        decoded = 0
        for batch in target.batches(batch_size):
            signals = batch.signals if isinstance(batch.signals, list) else list(batch.signals)
            assert all(np.isfinite(signal).all() for signal in signals)
            assert batch.labels.shape == (len(batch), len(target.label_names))
            decoded += len(batch)
        assert decoded + len(target.skipped) - len(target.excluded) == len(target)
    except MelepError as error:
        _single_line(error)
