"""Target options: one TargetOptions, checked once; an option that does not apply to a target's format is one
usage error in every command, found in `open_target`.

`--ptbxl-labels` and `--folds` apply to PTB-XL only, `--labels-csv` to HDF5 and WFDB, `--sampling-rate` to
PTB-XL and HDF5; `--lead-names` applies to every format. An option the user did not give is never an error,
so options with a default (`ptbxl_labels`) tell "given" from "default" (None).
"""

from __future__ import annotations

import importlib
from pathlib import Path

import h5py
import numpy as np
import pytest

from melep_cli.cli import run
from melep_cli.errors import UsageError
from melep_cli.targets import TargetOptions, open_target

PTBXL = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "ptbxl"
STANDARD = ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")
EXPORTED = tuple(f"L{index}" for index in range(1, 13))


def _write_h5(path: Path, leads: tuple[str, ...] | None = None) -> Path:
    rng = np.random.default_rng(5)
    with h5py.File(path, "w") as h5:
        h5["signals"] = rng.normal(size=(4, 250, 12)).astype(np.float32)
        h5["signals"].attrs["sampling_rate"] = 250.0
        if leads is not None:
            h5["signals"].attrs["leads"] = np.array(list(leads), dtype=h5py.string_dtype())
        h5["labels"] = np.array([[1], [0], [1], [0]], dtype=np.uint8)
        h5["labels"].attrs["label_names"] = ["K"]
        h5["record_ids"] = np.array(["a", "b", "c", "d"], dtype=h5py.string_dtype())
    return path


@pytest.fixture(scope="module")
def targets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One small target per format: HDF5 file, WFDB directory (labels CSV beside it), real PTB-XL."""
    import wfdb

    root = tmp_path_factory.mktemp("targets")
    found = {"hdf5": _write_h5(root / "small.h5")}
    wfdb_dir = root / "wfdb"
    wfdb_dir.mkdir()
    rng = np.random.default_rng(6)
    for name in ("r1", "r2", "r3"):
        wfdb.wrsamp(
            name,
            fs=250,
            units=["mV"] * 12,
            sig_name=list(STANDARD),
            p_signal=rng.normal(size=(250, 12)),
            fmt=["16"] * 12,
            adc_gain=[1000.0] * 12,
            baseline=[0] * 12,
            write_dir=str(wfdb_dir),
        )
    found["wfdb"] = wfdb_dir
    (root / "labels.csv").write_text("record_id,K\nr1,1\nr2,0\nr3,1\na,1\nb,0\nc,1\nd,0\n")
    found["csv"] = root / "labels.csv"
    if (PTBXL / "ptbxl_database.csv").is_file():
        found["ptbxl"] = PTBXL
    return found


def _target(targets: dict[str, Path], target_format: str) -> Path:
    if target_format not in targets:
        pytest.skip(f"{PTBXL} is absent")
    return targets[target_format]


#: (library parameter, CLI flag and value, format it does not apply to, the formats it applies to)
NOT_APPLICABLE = [
    ("ptbxl_labels", ["--ptbxl-labels", "form"], "hdf5", "PTB-XL"),
    ("ptbxl_labels", ["--ptbxl-labels", "form"], "wfdb", "PTB-XL"),
    ("folds", ["--folds", "9"], "hdf5", "PTB-XL"),
    ("folds", ["--folds", "9"], "wfdb", "PTB-XL"),
    ("labels_csv", ["--labels-csv", "CSV"], "ptbxl", "HDF5 and WFDB"),
    ("sampling_rate", ["--sampling-rate", "500"], "wfdb", "PTB-XL and HDF5"),
]


def _argv(command: str, target: Path, tmp_path: Path) -> list[str]:
    """`command` on `target`, with whatever else the command needs; nothing is read before the target opens."""
    if command in ("rank", "forward"):
        checkpoint = tmp_path / "never_loaded.onnx"
        checkpoint.write_bytes(b"not a model: the target's options fail first")
        return [command, "-c", str(checkpoint), "-t", str(target)]
    if command == "convert":
        return ["convert", str(target), str(tmp_path / "out.h5")]
    return ["inspect", str(target)]


@pytest.mark.parametrize("command", ["rank", "forward", "inspect", "convert"])
@pytest.mark.parametrize(("option", "flag", "target_format", "applies_to"), NOT_APPLICABLE)
def test_an_option_of_another_format_is_one_usage_error_naming_the_format(
    command: str,
    option: str,
    flag: list[str],
    target_format: str,
    applies_to: str,
    targets: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    target = _target(targets, target_format)
    flag = [str(targets["csv"]) if part == "CSV" else part for part in flag]
    code = run([*_argv(command, target, tmp_path), *flag, "-q"])
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert code == 2, captured.err
    assert len(err) == 1, err
    # The library names its parameter (`option`); the CLI names the flag typed.
    assert err[0].startswith(f"melep: error: {target}: {flag[0]} applies to {applies_to} targets only")
    assert f"(this is {target_format}" in err[0]
    assert not (tmp_path / "out.h5").exists()


def test_explicit_target_format_is_the_format_named(
    targets: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--target-format wfdb on a PTB-XL tree: --folds is then another format's option."""
    ptbxl = _target(targets, "ptbxl")
    code = run(["inspect", str(ptbxl), "--target-format", "wfdb", "--folds", "10", "-q"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "--folds applies to PTB-XL targets only (this is wfdb" in err[0], err


@pytest.mark.parametrize("target_format", ["hdf5", "wfdb"])
def test_the_default_ptbxl_labels_is_no_error_but_the_given_default_is(
    target_format: str, targets: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    target = _target(targets, target_format)
    csv = ["--labels-csv", str(targets["csv"])]
    assert run(["inspect", str(target), *csv, "--min-positives", "1", "-q", "-f", "json"]) == 0
    capsys.readouterr()
    code = run(["inspect", str(target), *csv, "--min-positives", "1", "--ptbxl-labels", "superclass", "-q"])
    err = capsys.readouterr().err.strip().splitlines()
    expected = f"--ptbxl-labels applies to PTB-XL targets only (this is {target_format}"
    assert code == 2 and len(err) == 1 and expected in err[0], err


def test_ptbxl_without_ptbxl_labels_reads_the_superclasses(
    targets: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    ptbxl = _target(targets, "ptbxl")
    assert open_target(ptbxl, folds="10").label_names == ("NORM", "MI", "STTC", "HYP", "CD")
    assert open_target(ptbxl, folds="10", ptbxl_labels=None).label_names == ("NORM", "MI", "STTC", "HYP", "CD")
    assert open_target(ptbxl, folds="10", ptbxl_labels="rhythm", min_positives=1).label_names != (
        "NORM",
        "MI",
        "STTC",
        "HYP",
        "CD",
    )


@pytest.mark.parametrize(
    ("option", "value", "target_format"),
    [
        ("ptbxl_labels", "superclass", "hdf5"),
        ("ptbxl_labels", "form", "wfdb"),
        ("folds", "9", "hdf5"),
        ("folds", [9, 10], "wfdb"),
        ("labels_csv", "CSV", "ptbxl"),
        ("sampling_rate", 250, "wfdb"),
    ],
)
def test_library_names_its_own_parameters(
    option: str, value: object, target_format: str, targets: dict[str, Path]
) -> None:
    target = _target(targets, target_format)
    value = targets["csv"] if value == "CSV" else value
    with pytest.raises(UsageError, match=rf"{option} applies to .* targets only \(this is {target_format}"):
        open_target(target, **{option: value})


@pytest.mark.parametrize("command", ["rank", "forward", "inspect", "convert"])
def test_every_command_passes_options_not_given_as_none(
    command: str, targets: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No target option on the command line: the library gets TargetOptions() (ptbxl_labels None, not the
    superclass default that help shows), so no option counts as given for another format."""
    seen: list[object] = []

    def record(*args: object, target_options: object = None, **kwargs: object) -> None:
        seen.append(target_options)
        raise RuntimeError("recorded")  # the command stops here (an internal error, exit 3)

    work = {"rank": "rank", "forward": "forward", "inspect": "inspect_path", "convert": "convert"}[command]
    monkeypatch.setattr(importlib.import_module(f"melep_cli.cli.{command}"), work, record)
    assert run([*_argv(command, targets["hdf5"], tmp_path), "-q"]) == 3
    assert seen == [TargetOptions()]
    assert TargetOptions().ptbxl_labels is None and TargetOptions().labels_csv is None


def test_the_cli_gives_each_option_to_target_options(
    targets: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[object] = []
    monkeypatch.setattr(
        importlib.import_module("melep_cli.cli.inspect"),
        "inspect_path",
        lambda *args, target_options=None, **kwargs: seen.append(target_options) or {"kind": "none"},
    )
    flags = ["--target-format", "ptbxl", "--labels", "NORM, MI", "--min-positives", "3", "--ptbxl-labels"]
    flags += ["subclass", "--folds", "9,10", "--sampling-rate", "500", "--strict", "--lead-names", "DI, DII"]
    run(["inspect", str(targets["hdf5"]), *flags, "-q", "-f", "json"])
    assert type(seen[0].target_format) is str  # the CLI's choice as the library's plain value
    assert seen == [
        TargetOptions(
            target_format="ptbxl",
            labels=("NORM", "MI"),
            min_positives=3,
            ptbxl_labels="subclass",
            folds=frozenset({9, 10}),
            sampling_rate=500.0,
            strict=True,
            lead_names=("DI", "DII"),
        )
    ]


@pytest.mark.parametrize(
    ("options", "parameter", "flag"),
    [
        ({"min_positives": 0}, "min_positives", None),
        ({"folds": "9-1"}, "folds", "--folds"),
        ({"folds": "x"}, "folds", "--folds"),
        ({"target_format": "csv"}, "target_format", None),
        ({"ptbxl_labels": "nope"}, "ptbxl_labels", None),
        ({"sampling_rate": -5}, "sampling_rate", "--sampling-rate"),
    ],
)
def test_target_options_are_checked_once_naming_the_parameter(
    options: dict[str, object],
    parameter: str,
    flag: str | None,
    targets: dict[str, Path],
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(UsageError, match=rf"^{parameter}: ") as raised:
        TargetOptions(**options)  # type: ignore[arg-type]
    assert raised.value.parameter == parameter
    if flag is not None:  # choices and --min-positives below 1 are Typer's own errors on the command line
        value = str(next(iter(options.values())))
        assert run(["inspect", str(targets["hdf5"]), flag, value, "-q"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith(f"melep: error: {flag}: "), err


def test_target_options_are_frozen_hashable_and_normalised(targets: dict[str, Path]) -> None:
    options = TargetOptions(labels="MI, AFIB", folds=[10, 9], lead_names=["I", " II "], sampling_rate=500)
    assert options == TargetOptions(labels=("MI", "AFIB"), folds="9,10", lead_names="I,II", sampling_rate=500.0)
    assert hash(options) == hash(
        TargetOptions(labels=["MI", "AFIB"], folds="9-10", lead_names=("I", "II"), sampling_rate=500)
    )
    with pytest.raises(AttributeError):
        options.strict = True  # type: ignore[misc]
    # keyword arguments still work, and replace an options object's fields
    opened = open_target(targets["hdf5"], TargetOptions(min_positives=50), min_positives=1, labels_csv=targets["csv"])
    assert opened.label_names == ("K",)


def test_options_with_an_open_target_are_an_error(targets: dict[str, Path]) -> None:
    from melep_cli import rank

    opened = open_target(targets["hdf5"], min_positives=1, labels_csv=targets["csv"])
    with pytest.raises(UsageError, match=r"^target_options: "):
        rank([targets["hdf5"]], opened, target_options=TargetOptions(strict=True), cache=None)


@pytest.mark.parametrize("target_format", ["hdf5", "wfdb", "ptbxl"])
def test_lead_names_apply_to_every_format(target_format: str, targets: dict[str, Path]) -> None:
    target = _target(targets, target_format)
    options: dict[str, object] = {"folds": "10"} if target_format == "ptbxl" else {"labels_csv": targets["csv"]}
    opened = open_target(target, lead_names=EXPORTED, min_positives=1, **options)
    assert opened.lead_names == EXPORTED
    assert next(iter(opened.batches(2))).leads == EXPORTED


@pytest.mark.parametrize("target_format", ["hdf5", "wfdb", "ptbxl"])
def test_convert_lead_names_are_the_written_leads(
    target_format: str, targets: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`melep convert --lead-names`: the file carries the renamed leads, and reading it back gives them."""
    target = _target(targets, target_format)
    options = ["--folds", "10"] if target_format == "ptbxl" else ["--labels-csv", str(targets["csv"])]
    options += ["--min-positives", "1"]
    output = tmp_path / "renamed.h5"
    code = run(["convert", str(target), str(output), "--lead-names", ",".join(EXPORTED), *options, "-q"])
    assert code == 0, capsys.readouterr().err
    with h5py.File(output) as h5:
        assert tuple(h5.attrs["leads"]) == EXPORTED and tuple(h5["signals"].attrs["leads"]) == EXPORTED
    assert next(iter(open_target(output, min_positives=1).batches(2))).leads == EXPORTED


def test_convert_lead_names_give_standard_names_to_an_export(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    exported = _write_h5(tmp_path / "exported.h5", leads=EXPORTED)
    output = tmp_path / "standard.h5"
    code = run(["convert", str(exported), str(output), "--lead-names", ",".join(STANDARD), "--min-positives", "1"])
    assert code == 0, capsys.readouterr().err
    converted = open_target(output, min_positives=1)
    assert next(iter(converted.batches(4))).leads == STANDARD
    with h5py.File(exported) as source, h5py.File(output) as written:
        np.testing.assert_array_equal(written["signals"][()], source["signals"][()])
