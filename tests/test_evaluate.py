"""`melep evaluate`: scores of real rankings against fine-tuning results, checked against scipy.stats directly.

The rank files are real: the sample checkpoints (and one broken file, a real error row) ranked on the
sample PTB-XL target with different label subsets, each subset a "target". The fine-tuning results are
stand-ins of our choosing (no fine-tuning runs in the tests), written as a RESULTS.csv with repeated runs,
a checkpoint and a target missing on each side, and a target with too few checkpoints.
"""

from __future__ import annotations

import csv
import json
import math
import statistics
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

import melep_cli
from melep_cli import report
from melep_cli.cli import run
from melep_cli.errors import InputError, UsageError
from melep_cli.evaluation import Ranking, evaluate_rankings, target_metrics

REPO = Path(__file__).resolve().parents[1]
CHECKPOINTS = REPO / "sample_data" / "checkpoints"
TARGET = REPO / "sample_data" / "ptbxl_target.h5"

#: Target name -> the labels of the sample target it is ranked on.
SUBSETS = {
    "superclasses": ["NORM", "MI", "STTC", "HYP", "CD"],
    "norm_mi": ["NORM", "MI"],
    "sttc_hyp": ["STTC", "HYP"],
    "cd_lvh": ["CD", "LVH"],
    "afib": ["AFIB", "MI"],
    "orphan": ["NORM"],  # ranked, but no fine-tuning results
}
#: One file as older versions of melep wrote it: no target.name (its name is the target path's stem) and no
#: `scores` object (its one score is `melep`).
LEGACY = "cd_lvh"
LEGACY_NAME = TARGET.stem

SUPER_BILSTM, SUPER_RESNET = "ptbxl_superclass_bilstm", "ptbxl_superclass_resnet1d"
FORM, RHYTHM, CINC = "ptbxl_form_resnet1d", "ptbxl_rhythm_bilstm", "cinc2021_snomed_bilstm"

#: Stand-in fine-tuning results (macro F1, higher is better), one tuple per run: target, checkpoint, value.
RUNS = [
    ("superclasses", SUPER_BILSTM, 0.81),
    ("superclasses", SUPER_BILSTM, 0.83),  # a second seed: averaged
    ("superclasses", SUPER_RESNET, 0.84),
    ("superclasses", FORM, 0.74),
    ("superclasses", CINC, 0.70),
    ("superclasses", RHYTHM, 0.66),
    ("superclasses", "broken", 0.10),  # its ranking failed: no score
    ("norm_mi", SUPER_BILSTM, 0.88),
    ("norm_mi", SUPER_RESNET, 0.86),
    ("norm_mi", SUPER_RESNET, 0.87),
    ("norm_mi", SUPER_RESNET, 0.85),
    ("norm_mi", FORM, 0.79),
    ("norm_mi", CINC, 0.80),
    ("norm_mi", RHYTHM, 0.71),
    ("sttc_hyp", SUPER_BILSTM, 0.77),
    ("sttc_hyp", SUPER_RESNET, 0.79),
    ("sttc_hyp", FORM, 0.75),
    ("sttc_hyp", CINC, 0.69),  # no RHYTHM run: a ranked checkpoint without results
    (LEGACY_NAME, SUPER_BILSTM, 0.72),
    (LEGACY_NAME, SUPER_RESNET, 0.70),
    (LEGACY_NAME, FORM, 0.71),
    (LEGACY_NAME, CINC, 0.69),
    (LEGACY_NAME, RHYTHM, 0.65),
    (LEGACY_NAME, "resnet_from_scratch", 0.60),  # not in the ranking
    ("afib", SUPER_BILSTM, 0.90),  # two checkpoints only: left out
    ("afib", RHYTHM, 0.93),
    ("ghost", SUPER_BILSTM, 0.50),  # a target without a ranking
]


def _removed(result: dict, document: dict) -> float:
    """A second, higher-is-better score from the same real ranking: the mean share 1 - m(y) / H(y) of the
    no-information value H(y) that the checkpoint removes."""
    entropy = melep_cli.binary_entropy(np.array(document["target"]["prevalence"]))
    shares = [1 - value / h for value, h in zip(result["per_label"].values(), entropy) if value is not None]
    return float(np.mean(shares))


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The rank JSON files (one per target, from real rankings) and RESULTS.csv."""
    root = tmp_path_factory.mktemp("evaluate")
    broken = root / "broken.onnx"
    broken.write_bytes(b"not an onnx model")
    ranks = {}
    for name, labels in SUBSETS.items():
        target = melep_cli.open_target(TARGET, labels=labels, min_positives=1)
        document = report.rank_to_dict(melep_cli.rank([CHECKPOINTS, broken], target, cache=root / "cache"))
        if name == LEGACY:
            document["target"].pop("name", None)
            for result in document["results"]:
                result.pop("scores", None)
        else:
            document["target"]["name"] = name  # what `melep rank --target-name` writes
            for result in document["results"]:
                if result["status"] == "ok":
                    result["scores"] = {
                        "melep": {"value": result["melep"], "direction": "lower", "ci": None, "p_best": None},
                        "removed": {"value": _removed(result, document), "direction": "higher"},
                    }
        path = root / f"{name}.json"
        path.write_text(json.dumps(document), encoding="utf-8")
        ranks[name] = path
    results = root / "results.csv"
    with results.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["target", "checkpoint", "seed", "finetuned"])
        writer.writerows((target, checkpoint, seed, value) for seed, (target, checkpoint, value) in enumerate(RUNS))
    return {"root": root, "results": results, "ranks": ranks, "paths": [str(path) for path in ranks.values()]}


def _pairs(files: dict, score: str) -> dict[str, dict[str, tuple[float, float]]]:
    """target -> checkpoint -> (score value oriented higher-is-better, mean result), read here independently."""
    runs: dict[tuple[str, str], list[float]] = {}
    with files["results"].open(encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            runs.setdefault((row["target"], row["checkpoint"]), []).append(float(row["finetuned"]))
    pairs: dict[str, dict[str, tuple[float, float]]] = {}
    for path in files["ranks"].values():
        document = json.loads(path.read_text(encoding="utf-8"))
        name = document["target"].get("name", LEGACY_NAME)
        for result in document["results"]:
            if result["status"] != "ok":
                continue
            entry = result.get("scores", {}).get(score) or (
                {"value": result["melep"], "direction": "lower"} if score == "melep" else None
            )
            key = (name, result["checkpoint"])
            if entry is None or key not in runs:
                continue
            sign = -1.0 if entry["direction"] == "lower" else 1.0
            pairs.setdefault(name, {})[result["checkpoint"]] = (sign * entry["value"], statistics.mean(runs[key]))
    return {target: by_checkpoint for target, by_checkpoint in pairs.items() if len(by_checkpoint) >= 3}


def _expected(pairs: dict[str, tuple[float, float]]) -> dict[str, float]:
    """The per-target statistics straight from scipy.stats and their definitions."""
    names = sorted(pairs)
    x = np.array([pairs[name][0] for name in names])
    y = np.array([pairs[name][1] for name in names])
    by_score = sorted(range(len(names)), key=lambda i: (-x[i], names[i]))
    return {
        "pearson": stats.pearsonr(x, y)[0],
        "spearman": stats.spearmanr(x, y)[0],
        "kendall": stats.kendalltau(x, y)[0],
        "weighted_tau": stats.weightedtau(x, y)[0],
        "rel_at_1": y[by_score[0]] / y.max(),
        "rel_at_3": max(y[i] for i in by_score[:3]) / y.max(),
        "top1_hit": float(y[by_score[0]] == y.max()),
        "regret": y.max() - y[by_score[0]],
        "random_regret": y.max() - y.mean(),
    }


@pytest.mark.parametrize("score", ["melep", "removed"])
def test_every_number_is_scipy_stats_on_the_same_pairs(files: dict, score: str) -> None:
    evaluation = melep_cli.evaluate(files["results"], files["paths"])
    result = evaluation.score(score)
    pairs = _pairs(files, score)
    assert sorted(target.target for target in result.targets) == sorted(pairs)
    assert len(pairs) == (4 if score == "melep" else 3)  # "removed" is not in the legacy file
    for target in result.targets:
        expected = _expected(pairs[target.target])
        assert target.metrics == pytest.approx(expected, rel=1e-12, abs=1e-12)
    for key in expected:
        values = np.array([target.metrics[key] for target in result.targets])
        summary = result.summary[key]
        assert summary.mean == pytest.approx(values.mean(), rel=1e-12)
        assert summary.targets == len(values)
        reference = _scipy_bootstrap(values)
        assert summary.ci == pytest.approx(reference, rel=1e-9, abs=1e-12)
    # Across targets, per checkpoint (Table 2 of the MELEP paper).
    for item in result.per_checkpoint:
        x, y = zip(*(pairs[t][item.checkpoint] for t in pairs if item.checkpoint in pairs[t]))
        assert item.targets == len(x)
        if len(x) >= 3:
            assert (item.pearson, item.p_value) == pytest.approx(tuple(stats.pearsonr(x, y)), rel=1e-12)
        else:
            assert math.isnan(item.pearson)


def _scipy_bootstrap(values: np.ndarray) -> tuple[float, float]:
    """scipy.stats.bootstrap's percentile interval of the mean, 1000 resamples from default_rng(0)."""
    generator = np.random.default_rng(0)
    try:
        found = stats.bootstrap((values,), np.mean, n_resamples=1000, method="percentile", rng=generator)
    except TypeError:  # scipy < 1.15 calls it random_state
        found = stats.bootstrap((values,), np.mean, n_resamples=1000, method="percentile", random_state=generator)
    return (found.confidence_interval.low, found.confidence_interval.high)


def test_repeated_runs_are_averaged_and_counted(files: dict) -> None:
    evaluation = melep_cli.evaluate(files["results"], files["paths"])
    assert evaluation.finetuned["norm_mi"][SUPER_RESNET].runs == 3
    assert evaluation.finetuned["norm_mi"][SUPER_RESNET].mean == pytest.approx(0.86)
    assert evaluation.finetuned["superclasses"][SUPER_BILSTM].mean == pytest.approx(0.82)
    assert evaluation.runs == len(RUNS)
    target = next(t for t in evaluation.score("melep").targets if t.target == "norm_mi")
    assert dict(zip(target.checkpoints, target.runs))[SUPER_RESNET] == 3


def test_what_is_missing_on_either_side_is_reported(files: dict, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("WARNING", logger="melep"):
        evaluation = melep_cli.evaluate(files["results"], files["paths"])
    missing = evaluation.missing
    assert missing.targets_without_ranking == ("ghost",)
    assert missing.targets_without_results == (("orphan", str(files["ranks"]["orphan"])),)
    without_score = {(t, c): (scores, reason) for t, c, scores, reason in missing.checkpoints_without_score}
    assert without_score[(LEGACY_NAME, "resnet_from_scratch")] == (("melep", "removed"), "not in the ranking")
    assert without_score[("superclasses", "broken")][1].startswith("failed in the ranking: ")
    for checkpoint in (SUPER_BILSTM, SUPER_RESNET, FORM, CINC, RHYTHM):  # the legacy file has melep only
        assert without_score[(LEGACY_NAME, checkpoint)] == (("removed",), "no removed value in the ranking")
    assert ("sttc_hyp", RHYTHM) in missing.checkpoints_without_results
    assert ("afib", "broken") in missing.checkpoints_without_results
    assert evaluation.score("melep").left_out == (("afib", 2),)
    assert dict(evaluation.score("removed").left_out) == {"afib": 2, LEGACY_NAME: 0}
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert "1 target with results but no ranking, left out: ghost" in logged
    assert f"1 ranked target without results in {files['results']}, left out: orphan" in logged
    assert "superclasses/broken (failed in the ranking" in logged
    assert f"{LEGACY_NAME}/resnet_from_scratch (not in the ranking)" in logged
    assert "sttc_hyp/ptbxl_rhythm_bilstm" in logged
    assert "melep: 1 target with fewer than 3 checkpoints having both a score and a result" in logged
    assert "left out: afib (2)" in logged


def test_json_has_everything_and_the_same_numbers(files: dict, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["evaluate", str(files["results"]), *files["paths"], "--format", "json"]) == 0
    captured = capsys.readouterr()
    document = json.loads(captured.out)
    assert "ghost" in captured.err  # warnings on stderr, the document on stdout
    evaluation = melep_cli.evaluate(files["results"], files["paths"])
    assert [score["name"] for score in document["scores"]] == ["melep", "removed"]
    melep_doc = document["scores"][0]
    assert melep_doc["direction"] == "lower" and melep_doc["negated"] is True
    expected = evaluation.score("melep")
    for key, summary in expected.summary.items():
        assert melep_doc["summary"][key]["mean"] == pytest.approx(summary.mean, rel=1e-12)
        assert melep_doc["summary"][key]["ci"] == pytest.approx(list(summary.ci), rel=1e-12)
    per_target = {entry["target"]: entry for entry in melep_doc["per_target"]}
    pairs = _pairs(files, "melep")
    for name, entry in per_target.items():
        assert entry["kendall"] == pytest.approx(_expected(pairs[name])["kendall"], rel=1e-12)
        assert {pair["checkpoint"]: pair["finetuned"] for pair in entry["pairs"]} == pytest.approx(
            {checkpoint: y for checkpoint, (_, y) in pairs[name].items()}
        )
    assert per_target["superclasses"]["pick"] == SUPER_BILSTM  # the lowest MELEP
    assert per_target["superclasses"]["best"] == [SUPER_RESNET]
    assert {entry["checkpoint"] for entry in melep_doc["per_checkpoint"]} == {
        SUPER_BILSTM,
        SUPER_RESNET,
        FORM,
        CINC,
        RHYTHM,
    }
    assert document["missing"]["targets_without_ranking"] == ["ghost"]
    assert document["missing"]["targets_without_results"][0]["target"] == "orphan"
    assert document["results"]["runs"] == len(RUNS)
    assert document["bootstrap"] == {"resamples": 1000, "confidence": 0.95, "seed": 0}


def test_csv_is_one_row_per_score(files: dict, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["evaluate", str(files["results"]), *files["paths"], "-f", "csv", "-q"]) == 0
    captured = capsys.readouterr()
    assert captured.err == ""  # --quiet: no warnings
    rows = list(csv.DictReader(captured.out.splitlines()))
    assert [row["score"] for row in rows] == ["melep", "removed"]
    evaluation = melep_cli.evaluate(files["results"], files["paths"])
    for row in rows:
        summary = evaluation.score(row["score"]).summary
        assert float(row["kendall"]) == pytest.approx(summary["kendall"].mean, rel=1e-12)
        assert float(row["regret_ci_high"]) == pytest.approx(summary["regret"].ci[1], rel=1e-12)
        assert int(row["pearson_targets"]) == summary["pearson"].targets
    assert rows[0]["targets"] == "4" and rows[0]["direction"] == "lower"


def test_table_shows_means_intervals_and_per_checkpoint_r(files: dict, capsys: pytest.CaptureFixture[str]) -> None:
    out_file = files["root"] / "evaluation.txt"
    assert run(["evaluate", str(files["results"]), *files["paths"], "--scores", "melep", "-o", str(out_file)]) == 0
    assert f"melep: wrote {out_file}" in capsys.readouterr().err
    text = out_file.read_text(encoding="utf-8")
    summary = melep_cli.evaluate(files["results"], files["paths"], scores=["melep"]).score("melep").summary
    kendall = summary["kendall"]
    assert f"{kendall.mean:.3f} [{kendall.ci[0]:.3f}, {kendall.ci[1]:.3f}]" in text
    for label in ("Pearson r", "Spearman rho", "weighted tau", "Rel@1", "Rel@3", "top-1 hit rate", "random-pick"):
        assert label in text
    assert "removed" not in text.split("Pearson r between")[0]  # --scores melep
    assert "per checkpoint" in text and SUPER_RESNET in text


def test_lower_is_better_flips_the_results(files: dict, tmp_path: Path) -> None:
    """The same runs written as errors (1 - F1) with --lower-is-better agree on every orientation-free number."""
    flipped = tmp_path / "errors.csv"
    flipped.write_text(
        "target,checkpoint,finetuned\n" + "".join(f"{t},{c},{1 - v!r}\n" for t, c, v in RUNS), encoding="utf-8"
    )
    plain = melep_cli.evaluate(files["results"], files["paths"]).score("melep")
    lower = melep_cli.evaluate(flipped, files["paths"], lower_is_better=True).score("melep")
    for key in ("pearson", "spearman", "kendall", "weighted_tau", "top1_hit", "regret", "random_regret"):
        assert lower.summary[key].mean == pytest.approx(plain.summary[key].mean, rel=1e-9, abs=1e-12), key
    for target in lower.targets:  # Rel@k of errors: the best error over the best error among the picks
        errors = np.array(target.finetuned)
        expected = errors.min() / errors[target.checkpoints.index(target.pick)]
        assert target.metrics["rel_at_1"] == pytest.approx(expected)


def test_ties_constant_results_and_the_pick_are_as_documented() -> None:
    # Ties in the score: the first checkpoint by name is the pick.
    metrics, pick = target_metrics([0.5, 0.5, 0.7], [0.8, 0.9, 0.7], direction="lower", lower_is_better=False)
    assert pick == 0 and metrics["top1_hit"] == 0.0 and metrics["regret"] == pytest.approx(0.1)
    assert metrics["random_regret"] == pytest.approx(0.9 - 0.8)
    # Equal results everywhere: the correlations are undefined, the rest is not; the mean is over the others.
    rankings = [
        Ranking(t, {"s": {"a": 1.0, "b": 2.0, "c": 3.0}}, {"s": "higher"}, ("a", "b", "c")) for t in ("t1", "t2")
    ]
    runs = {"t1": {"a": [0.5], "b": [0.5], "c": [0.5]}, "t2": {"a": [0.1], "b": [0.2], "c": [0.4]}}
    evaluation = evaluate_rankings(runs, rankings, results_source="runs.csv")
    summary = evaluation.score("s").summary
    assert summary["kendall"].targets == 1 and summary["kendall"].mean == pytest.approx(1.0)
    assert summary["top1_hit"].targets == 2
    assert any("Kendall tau undefined on 1 of 2 targets" in note and "t1" in note for note in evaluation.warnings)
    # Rel@k needs positive results.
    metrics, _ = target_metrics([1, 2, 3], [-0.1, 0.2, 0.3], direction="higher", lower_is_better=False)
    assert math.isnan(metrics["rel_at_1"]) and metrics["top1_hit"] == 1.0


def test_nothing_to_evaluate_and_bad_names_are_usage_errors(files: dict, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"no ranking has the score logme \(they have: melep, removed\)"):
        melep_cli.evaluate(files["results"], files["paths"], scores=["logme"])
    unmatched = tmp_path / "other.csv"
    unmatched.write_text("target,checkpoint,finetuned\nx,a,0.1\n", encoding="utf-8")
    with pytest.raises(UsageError, match="no ranked target has results in"):
        melep_cli.evaluate(unmatched, files["paths"])
    with pytest.raises(UsageError, match="is also the target of"):
        melep_cli.evaluate(files["results"], [files["paths"][0], files["paths"][0]])
    with pytest.raises(InputError, match="finetuned 'n/a' is not a number"):
        bad = tmp_path / "bad.csv"
        bad.write_text("target,checkpoint,finetuned\nx,a,n/a\n", encoding="utf-8")
        melep_cli.evaluate(bad, files["paths"])


BAD_RESULTS = {
    "no_columns.csv": ("target,model,f1\nx,a,0.5\n", "no column checkpoint, finetuned"),
    "semicolons.csv": ("target;checkpoint;finetuned\nx;a;0.5\n", "must be comma-separated"),
    "text.csv": ("target,checkpoint,finetuned\nx,a,0.5\nx,b,good\n", "line 3: finetuned 'good' is not a number"),
    "nan.csv": ("target,checkpoint,finetuned\nx,a,nan\n", "line 2: finetuned 'nan' is not a finite number"),
    "short.csv": ("target,checkpoint,finetuned\nx,a\n", "line 2: 2 fields, the header has 3"),
    "header_only.csv": ("target,checkpoint,finetuned\n", "no runs, only a header row"),
    "empty.csv": ("", "empty; expected a header row"),
}
BAD_RANKS = {
    "score.json": ('{"melep": 0.5, "per_label": {}}', "not a rank result (no 'results' list)"),
    "broken.json": ('{"target": {', "not JSON (line 1 column"),
    "list.json": ("[1, 2]", "not a rank result"),
    "no_target.json": ('{"results": []}', "no 'target' object"),
    "bad_value.json": (
        '{"target": {"path": "t.h5"}, "results": [{"checkpoint": "a", "status": "ok", "melep": "low"}]}',
        "results[0]: melep is not a number",
    ),
    "bad_direction.json": (
        '{"target": {"name": "t"}, "results": [{"checkpoint": "a", "status": "ok", '
        '"scores": {"x": {"value": 1, "direction": "up"}}}]}',
        "scores.x.direction is 'up'",
    ),
}


def _one_error_line(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    code = run(argv)
    captured = capsys.readouterr()
    assert code == 2, captured.err
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("melep: error: "), captured.err
    assert "Traceback" not in captured.err
    return lines[0]


@pytest.mark.parametrize("name", sorted(BAD_RESULTS))
def test_a_bad_results_csv_is_one_error_line_naming_it(
    name: str, files: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text, problem = BAD_RESULTS[name]
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    line = _one_error_line(capsys, ["evaluate", str(path), *files["paths"]])
    assert line.startswith(f"melep: error: {path}: ") and problem in line, line


@pytest.mark.parametrize("name", sorted(BAD_RANKS))
def test_a_bad_rank_file_is_one_error_line_naming_it(
    name: str, files: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text, problem = BAD_RANKS[name]
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    line = _one_error_line(capsys, ["evaluate", str(files["results"]), files["paths"][0], str(path)])
    assert line.startswith(f"melep: error: {path}: ") and problem in line, line


def test_missing_files_directories_and_binary_files(files: dict, tmp_path: Path, capsys) -> None:
    absent = tmp_path / "absent.csv"
    line = _one_error_line(capsys, ["evaluate", str(absent), *files["paths"]])
    assert line == f"melep: error: {absent}: no such file"
    line = _one_error_line(capsys, ["evaluate", str(files["results"]), str(tmp_path)])
    assert line == f"melep: error: {tmp_path}: is a directory; expected a JSON file"
    binary = tmp_path / "ranks.json"
    binary.write_bytes(b"\x89HDF\r\n\x1a\n\xff\xfe")
    assert "not UTF-8 text" in _one_error_line(capsys, ["evaluate", str(files["results"]), str(binary)])
    line = _one_error_line(capsys, ["evaluate", str(files["results"]), *files["paths"], "--scores", "logme"])
    assert line.startswith("melep: error: --scores: no ranking has the score logme")
    line = _one_error_line(capsys, ["evaluate", str(files["results"]), *files["paths"], "--confidence", "95"])
    assert line.startswith("melep: error: --confidence: expected a number between 0 and 1")


def test_the_output_never_replaces_an_input(files: dict, capsys: pytest.CaptureFixture[str]) -> None:
    before = files["results"].read_bytes()
    line = _one_error_line(capsys, ["evaluate", str(files["results"]), *files["paths"], "-o", str(files["results"])])
    assert "is an input of this command" in line
    rank_file = files["paths"][1]
    line = _one_error_line(capsys, ["evaluate", str(files["results"]), *files["paths"], "-o", rank_file])
    assert "is an input of this command" in line
    assert files["results"].read_bytes() == before
