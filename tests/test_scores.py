"""The scores beside MELEP (gain, LEEP, NCE) against plain references, and `rank --scores / --rank-by`."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

import melep_cli
from melep_cli.cli import run
from melep_cli.errors import InputError
from melep_cli.scores import SCORES, GainScore, LeepScore, ModelOutputs, NceScore

SAMPLE = Path(__file__).resolve().parents[1] / "sample_data"
TARGET = SAMPLE / "ptbxl_target.h5"
CHECKPOINTS = SAMPLE / "checkpoints"
SUPERCLASSES = ["NORM", "MI", "STTC", "HYP", "CD"]
EPS = 1e-12


@pytest.fixture(scope="module")
def sample() -> dict:
    """Real outputs: two sample checkpoints on the sample target; and its records with exactly one superclass
    (a single-label target, as LEEP and NCE take), with the superclass checkpoint's logits as a softmax head."""
    target = melep_cli.open_target(TARGET, labels=SUPERCLASSES)
    report = melep_cli.forward(
        [CHECKPOINTS / "ptbxl_superclass_resnet1d.onnx", CHECKPOINTS / "ptbxl_form_resnet1d.pt"], target, cache=None
    )
    row_of = {record: row for row, record in enumerate(target.record_ids)}
    found = {}
    for result in report.results:
        outputs = result.model_outputs()
        rows = [row_of[record] for record in result.record_ids]
        found[result.name] = (outputs, target.labels[rows])
    outputs, labels = found["ptbxl_superclass_resnet1d"]
    single = labels.sum(axis=1) == 1
    return {
        "multi": found,
        "single": (ModelOutputs(np.asarray(outputs.scores)[single], "softmax"), labels[single]),
    }


def _reference_phi(theta: np.ndarray, labels: np.ndarray, y: int, z: int) -> float:
    n = len(theta)
    theta1 = np.clip(theta[:, z], EPS, 1 - EPS)
    theta0 = 1 - theta1
    joint = {
        (t, s): sum((theta1 if s else theta0)[i] for i in range(n) if labels[i, y] == t) / n
        for t in (0, 1)
        for s in (0, 1)
    }
    cond = {(t, s): joint[t, s] / (joint[0, s] + joint[1, s]) for t in (0, 1) for s in (0, 1)}
    return -sum(math.log(cond[labels[i, y], 0] * theta0[i] + cond[labels[i, y], 1] * theta1[i]) for i in range(n)) / n


def test_gain_is_the_share_of_entropy_the_best_output_removes(sample: dict) -> None:
    outputs, labels = sample["multi"]["ptbxl_form_resnet1d"]
    theta = 1 / (1 + np.exp(-np.asarray(outputs.scores, dtype=np.float64)))
    value = GainScore().compute(outputs, labels, SUPERCLASSES)
    expected = []
    for y in range(labels.shape[1]):
        p = labels[:, y].mean()
        entropy = -(p * math.log(p) + (1 - p) * math.log(1 - p))
        best = min(_reference_phi(theta, labels, y, z) for z in range(theta.shape[1]))
        expected.append((entropy - best) / entropy)
    assert value.per_label == pytest.approx(expected, rel=1e-9)
    assert value.value == pytest.approx(np.mean(expected), rel=1e-9)
    assert value.direction == "higher" and all(0 < share < 1 for share in expected)


def _reference_leep(theta: np.ndarray, classes: np.ndarray, n_classes: int) -> float:
    """LEEP as Nguyen et al. (ICML 2020) write it: empirical joint, conditional, mean log expected prediction."""
    n, n_source = theta.shape
    joint = [
        [sum(theta[i, z] for i in range(n) if classes[i] == y) / n for z in range(n_source)] for y in range(n_classes)
    ]
    marginal = [sum(joint[y][z] for y in range(n_classes)) for z in range(n_source)]
    return (
        sum(math.log(sum(joint[classes[i]][z] / marginal[z] * theta[i, z] for z in range(n_source))) for i in range(n))
        / n
    )


def _reference_nce(source: np.ndarray, classes: np.ndarray) -> float:
    """NCE as Tran et al. (ICCV 2019) write it: -H(Y | Z) from the counts of (class, argmax source label)."""
    n = len(classes)
    pairs: dict[tuple[int, int], int] = {}
    for y, z in zip(classes, source):
        pairs[y, z] = pairs.get((y, z), 0) + 1
    marginal = {z: sum(count for (_, zz), count in pairs.items() if zz == z) for z in set(source)}
    return sum(count / n * math.log(count / marginal[z]) for (_, z), count in pairs.items())


def test_leep_and_nce_match_their_papers_on_a_single_label_target(sample: dict) -> None:
    outputs, labels = sample["single"]
    logits = np.asarray(outputs.scores, dtype=np.float64)
    theta = np.exp(logits - logits.max(axis=1, keepdims=True))
    theta /= theta.sum(axis=1, keepdims=True)
    classes = labels.argmax(axis=1)
    leep = LeepScore().compute(outputs, labels, SUPERCLASSES)
    assert leep.value == pytest.approx(_reference_leep(theta, classes, labels.shape[1]), rel=1e-9)
    nce = NceScore().compute(outputs, labels, SUPERCLASSES)
    assert nce.value == pytest.approx(_reference_nce(logits.argmax(axis=1), classes), rel=1e-12)
    # the per-class terms average, weighted by class size, to the whole
    counts = np.bincount(classes, minlength=labels.shape[1])
    for value in (leep, nce):
        present = counts > 0
        assert np.sum(counts[present] * value.per_label[present]) / counts.sum() == pytest.approx(value.value)


def test_single_label_scores_refuse_what_they_do_not_define(sample: dict) -> None:
    outputs, labels = sample["multi"]["ptbxl_superclass_resnet1d"]
    with pytest.raises(InputError, match="one target class per record"):
        NceScore().compute(outputs, labels, SUPERCLASSES)
    single_outputs, single_labels = sample["single"]
    with pytest.raises(InputError, match="softmax"):
        LeepScore().compute(ModelOutputs(single_outputs.scores, "logits"), single_labels, SUPERCLASSES)


@pytest.mark.parametrize("name", ["gain", "leep", "nce"])
def test_influence_is_the_change_when_a_record_is_left_out(sample: dict, name: str) -> None:
    outputs, labels = sample["single"] if name != "gain" else sample["multi"]["ptbxl_superclass_resnet1d"]
    score = SCORES[name]()
    full = score.compute(outputs, labels, SUPERCLASSES, influence=True)
    n = len(labels)
    assert abs(full.influence.mean()) < 1e-12
    exact, linear = [], []
    for record in np.random.default_rng(1).choice(n, 20, replace=False):
        keep = np.arange(n) != record
        left = score.compute(
            ModelOutputs(np.asarray(outputs.scores)[keep], outputs.activation), labels[keep], SUPERCLASSES
        )
        exact.append(left.value - full.value)
        linear.append(-full.influence[record] / n)
    exact_array, linear_array = np.array(exact), np.array(linear)
    assert np.corrcoef(exact_array, linear_array)[0, 1] > 0.98
    # NCE is a function of counts: leaving out a record of a small (class, source label) cell is a step of
    # log(count - 1) - log(count), second-order terms of ~1/count are larger there than in the smooth scores.
    tolerance = 0.2 if name == "nce" else 0.1
    assert np.abs(exact_array - linear_array).max() < tolerance * np.abs(exact_array).max()


def _rank_json(capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[int, dict | None, str]:
    code = run(["rank", "-c", str(CHECKPOINTS), "-t", str(TARGET), "-f", "json", *extra])
    captured = capsys.readouterr()
    return code, json.loads(captured.out) if captured.out else None, captured.err


def test_rank_by_another_score(capsys: pytest.CaptureFixture[str]) -> None:
    code, document, _ = _rank_json(capsys, "--scores", "melep,gain", "--rank-by", "gain", "--target-name", "sample")
    assert code == 0 and document is not None
    assert document["scores"] == ["melep", "gain"] and document["rank_by"] == "gain"
    assert document["target"]["name"] == "sample"
    results = document["results"]
    gains = [result["scores"]["gain"]["value"] for result in results]
    assert gains == sorted(gains, reverse=True)  # higher is better
    assert [result["rank"] for result in results] == [1, 2, 3, 4, 5]
    for result in results:
        assert result["melep"] == result["scores"]["melep"]["value"]
        assert result["ci"] == result["scores"]["gain"]["ci"]  # the top-level interval is the ranked score's
        low, high = result["scores"]["melep"]["ci"]
        assert low < result["melep"] < high
    assert sum(result["scores"]["gain"]["p_best"] for result in results) == pytest.approx(1.0)
    assert sum(result["scores"]["melep"]["p_best"] for result in results) == pytest.approx(1.0)

    assert run(["rank", "-c", str(CHECKPOINTS), "-t", str(TARGET), "--scores", "melep,gain", "-q"]) == 0
    table = capsys.readouterr().out
    header = next(line for line in table.splitlines() if "checkpoint" in line)
    assert "MELEP" in header and "gain" in header


def test_a_score_the_target_does_not_suit_is_one_warning_or_one_error(capsys: pytest.CaptureFixture[str]) -> None:
    code, document, err = _rank_json(capsys, "--scores", "melep,nce")
    assert code == 0 and document is not None
    assert err.count("nce needs one target class per record") == 1  # the target's problem, said once
    assert all("error" in result["scores"]["nce"] for result in document["results"])
    code, document, err = _rank_json(capsys, "--scores", "nce")
    assert code == 2 and document is None
    assert err.count("\n") == 1 and "nce needs one target class per record" in err


@pytest.mark.parametrize(
    ("arguments", "flag"),
    [(["--scores", "melep,bogus"], "--scores"), (["--scores", "melep", "--rank-by", "gain"], "--rank-by")],
)
def test_bad_score_choices_are_one_line_errors(capsys: pytest.CaptureFixture[str], arguments: list, flag: str) -> None:
    code, _, err = _rank_json(capsys, *arguments)
    assert code == 2 and err.count("\n") == 1 and flag in err and "Traceback" not in err


def test_the_cli_starts_without_the_heavy_libraries_of_some_scores() -> None:
    """scikit-learn (probe) and scipy.stats (evaluate) cost about 0.4 s each to import, ray (--executor ray)
    about 0.4 s: only when used."""
    import subprocess
    import sys

    heavy = "('sklearn', 'scipy.stats', 'matplotlib', 'ray')"
    probe = f"import sys, melep_cli.cli; print(sorted(m for m in {heavy} if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]", result.stdout
