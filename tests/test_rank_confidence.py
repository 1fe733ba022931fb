"""`melep rank` says how sure it is: intervals, P(best), ties, the no-information value, small-target warnings."""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

import h5py
import pytest

from melep_cli.cli import run

SAMPLE = Path(__file__).resolve().parents[1] / "sample_data"
TARGET = SAMPLE / "ptbxl_target.h5"
CHECKPOINTS = SAMPLE / "checkpoints"
RANK = ["rank", "-c", str(CHECKPOINTS), "-t", str(TARGET)]


def rank_json(capsys: pytest.CaptureFixture[str], *extra: str) -> dict:
    assert run([*RANK, "--format", "json", *extra]) == 0
    return json.loads(capsys.readouterr().out)


def test_the_table_shows_intervals_p_best_and_the_tie_by_default(capsys: pytest.CaptureFixture[str]) -> None:
    assert run([*RANK, "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "95% interval" in out and "P(best)" in out
    lines = [line for line in out.splitlines() if "ptbxl_superclass_resnet1d" in line]
    assert lines and "tied" in lines[0]  # rank 2 is 0.0034 behind: within the noise of 300 records
    assert "ranks 1-2 are within the noise of this target: 300 records" in " ".join(out.split())
    assert "tied" not in next(line for line in out.splitlines() if "ptbxl_form_resnet1d" in line)


def test_json_and_csv_carry_the_bootstrap(capsys: pytest.CaptureFixture[str]) -> None:
    document = rank_json(capsys)
    assert document["bootstrap"] == {"resamples": 1000, "confidence": 0.95, "seed": 0}
    results = document["results"]
    assert sum(result["p_best"] for result in results) == pytest.approx(1.0)
    best = results[0]
    assert best["diff_ci"] == [0.0, 0.0] and best["tied_with_best"] is True
    for result in results:
        low, high = result["ci"]
        assert low < result["melep"] < high
        assert result["tied_with_best"] == (result["diff_ci"][0] <= 0.0 <= result["diff_ci"][1])
        for label, (label_low, label_high) in result["per_label_ci"].items():
            assert label_low <= result["per_label"][label] <= label_high
    assert [result["tied_with_best"] for result in results] == [True, True, False, False, False]
    again = rank_json(capsys)
    assert [result["ci"] for result in again["results"]] == [result["ci"] for result in results]

    assert run([*RANK, "--format", "csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [row["checkpoint"] for row in rows] == [result["checkpoint"] for result in results]
    for row, result in zip(rows, results):
        assert float(row["ci_low"]) == result["ci"][0] and float(row["p_best"]) == result["p_best"]
        assert row["tied_with_best"] == ("true" if result["tied_with_best"] else "false")


def test_bootstrap_options(capsys: pytest.CaptureFixture[str]) -> None:
    default = rank_json(capsys)["results"]
    reseeded = rank_json(capsys, "--seed", "5")["results"]
    assert [r["ci"] for r in reseeded] != [r["ci"] for r in default]
    assert [r["melep"] for r in reseeded] == [r["melep"] for r in default]
    narrow = rank_json(capsys, "--confidence", "0.5", "--bootstrap", "300")
    assert narrow["bootstrap"] == {"resamples": 300, "confidence": 0.5, "seed": 0}
    for wide, half in zip(default, narrow["results"]):
        assert wide["ci"][0] < half["ci"][0] < half["ci"][1] < wide["ci"][1]

    off = rank_json(capsys, "--bootstrap", "0")
    assert off["bootstrap"] is None
    assert all(result["ci"] is None and result["p_best"] is None for result in off["results"])
    assert run([*RANK, "--bootstrap", "0", "--quiet"]) == 0
    table = capsys.readouterr().out
    assert "interval" not in table and "P(best)" not in table and "within the noise" not in table


@pytest.mark.parametrize(
    ("option", "value"), [("--bootstrap", "-1"), ("--confidence", "1.5"), ("--confidence", "0"), ("--seed", "-3")]
)
def test_bad_bootstrap_values_are_one_line_errors(capsys: pytest.CaptureFixture[str], option: str, value: str) -> None:
    assert run([*RANK, option, value]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and option in err and "Traceback" not in err


def test_per_label_shows_the_no_information_value_and_warns_of_unpredicted_labels(
    capsys: pytest.CaptureFixture[str],
) -> None:
    document = rank_json(capsys)
    entropy = dict(zip(document["target"]["labels"], document["target"]["no_information"]))
    weak = sorted(
        label
        for label in document["target"]["labels"]
        if max(result["removed_share"][label] for result in document["results"]) <= 0.05
    )
    for result in document["results"]:
        for label, value in result["per_label"].items():
            assert result["removed_share"][label] == pytest.approx(1 - value / entropy[label])
    assert run([*RANK, "--per-label"]) == 0
    captured = capsys.readouterr()
    assert "H(y)" in captured.out
    norm = next(line for line in captured.out.splitlines() if line.lstrip("│ ").startswith("NORM"))
    assert f"{entropy['NORM']:.4f}" in norm and "%)" in norm
    assert weak, "the sample target has labels no sample checkpoint predicts"
    warning = " ".join(captured.err.split())
    assert "no checkpoint removes more than 5% of the no-information value H(y)" in warning
    for label in weak:
        assert f"{label} (at most" in warning


def _first_records(path: Path, count: int) -> Path:
    """The first `count` records of the sample target, as an HDF5 target of their own (real ECGs)."""
    with h5py.File(TARGET, "r") as source, h5py.File(path, "w") as copy:
        for key, value in source.attrs.items():
            copy.attrs[key] = value
        for name, dataset in source.items():
            data = dataset[:count] if dataset.shape and dataset.shape[0] == len(source["labels"]) else dataset[()]
            written = copy.create_dataset(name, data=data)
            for key, value in dataset.attrs.items():
                written.attrs[key] = value
    return path


def test_a_small_target_is_warned_about_and_still_gets_intervals(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    small = _first_records(tmp_path / "small.h5", 40)
    labels = ["NORM", "MI", "STTC", "HYP"]
    assert run(["rank", "-c", str(CHECKPOINTS), "-t", str(small), "--labels", ",".join(labels), "-f", "json"]) == 0
    captured = capsys.readouterr()
    document = json.loads(captured.out)
    warning = " ".join(captured.err.split())
    assert "only 40 records (fewer than 100)" in warning
    positives = {
        label: round(p * 40) for label, p in zip(document["target"]["labels"], document["target"]["prevalence"])
    }
    few = [label for label in labels if 0 < positives[label] < 10]
    assert few, positives
    assert "fewer than 10 positives for" in warning
    for label in few:
        assert f"{label} ({positives[label]})" in warning
    for result in document["results"]:
        low, high = result["ci"]
        assert math.isfinite(low) and math.isfinite(high) and low <= result["melep"] <= high
