"""The paired bootstrap: its intervals, P(best) and ties, checked on the sample's real outputs and on PTB-XL."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

import melep_cli
from melep_cli.bootstrap import BootstrapSettings, Estimate, paired_bootstrap
from melep_cli.errors import UsageError
from melep_cli.metric import melep
from melep_cli.scores import MelepScore, ModelOutputs

SAMPLE = Path(__file__).resolve().parents[1] / "sample_data"
TARGET = SAMPLE / "ptbxl_target.h5"
CHECKPOINTS = SAMPLE / "checkpoints"
PTBXL = Path(__file__).resolve().parents[2] / "shared" / "data" / "ptbxl"


@dataclass
class Outputs:
    name: str
    scores: np.ndarray
    activation: str
    labels: np.ndarray


def _outputs_of(target: melep_cli.Target, report: melep_cli.ForwardReport) -> list[Outputs]:
    row_of = {record: row for row, record in enumerate(target.record_ids)}
    found = []
    for result in report.results:
        assert result.status == "ok", result.error
        rows = [row_of[record] for record in result.record_ids]
        outputs = result.model_outputs()
        found.append(Outputs(result.name, outputs.scores, outputs.activation, target.labels[rows]))
    return found


@pytest.fixture(scope="module")
def sample_outputs() -> list[Outputs]:
    """Every sample checkpoint's outputs on the sample target (one forward pass each)."""
    target = melep_cli.open_target(TARGET)
    return _outputs_of(target, melep_cli.forward([CHECKPOINTS], target, cache=None))


@pytest.mark.parametrize("weighting", ["prevalence", "paper", "uniform"])
def test_influence_is_the_change_when_a_record_is_left_out(sample_outputs: list[Outputs], weighting: str) -> None:
    """influence_j / n is, to first order, how much the score drops when record j is left out."""
    outputs = sample_outputs[0]
    n = len(outputs.labels)
    full = melep(outputs.scores, outputs.labels, activation=outputs.activation, weighting=weighting, influence=True)
    assert full.influence is not None and full.per_label_influence is not None
    assert abs(full.influence.mean()) < 1e-12
    exact, linear, exact_labels, linear_labels = [], [], [], []
    for record in np.random.default_rng(0).choice(n, 25, replace=False):
        keep = np.arange(n) != record
        left_out = melep(outputs.scores[keep], outputs.labels[keep], activation=outputs.activation, weighting=weighting)
        exact.append(left_out.score - full.score)
        linear.append(-full.influence[record] / n)
        exact_labels.append(left_out.per_label - full.per_label)
        linear_labels.append(-full.per_label_influence[record] / n)
    exact_array, linear_array = np.array(exact), np.array(linear)
    assert np.abs(exact_array - linear_array).max() < 0.05 * np.abs(exact_array).max()
    assert np.corrcoef(exact_array, linear_array)[0, 1] > 0.99
    labels_error = np.abs(np.array(exact_labels) - np.array(linear_labels))
    assert np.nanmax(labels_error) < 0.05 * np.nanmax(np.abs(np.array(exact_labels)))


def test_linear_bootstrap_agrees_with_the_recomputing_bootstrap(sample_outputs: list[Outputs]) -> None:
    """The same intervals and P(best) as recomputing MELEP on 400 resampled record sets (paired)."""
    n = len(sample_outputs[0].labels)
    rng = np.random.default_rng(7)
    recomputed = np.empty((400, len(sample_outputs)))
    for b in range(400):
        rows = rng.integers(0, n, n)
        for k, outputs in enumerate(sample_outputs):
            recomputed[b, k] = melep(outputs.scores[rows], outputs.labels[rows], activation=outputs.activation).score
    estimates = []
    for outputs in sample_outputs:
        result = melep(outputs.scores, outputs.labels, activation=outputs.activation, influence=True)
        estimates.append(Estimate(result.score, result.influence))
    linear = paired_bootstrap(estimates, settings=BootstrapSettings(resamples=2000, seed=3))
    wins = recomputed == recomputed.min(axis=1, keepdims=True)
    recomputed_p_best = (wins / wins.sum(axis=1, keepdims=True)).mean(axis=0)
    for k, uncertainty in enumerate(linear):
        low, high = np.quantile(recomputed[:, k], [0.025, 0.975])
        width = high - low
        assert abs(uncertainty.ci[0] - low) < 0.2 * width and abs(uncertainty.ci[1] - high) < 0.2 * width
        assert 0.8 < (uncertainty.ci[1] - uncertainty.ci[0]) / width < 1.2
        assert abs(uncertainty.p_best - recomputed_p_best[k]) < 0.1
    assert sum(uncertainty.p_best for uncertainty in linear) == pytest.approx(1.0)


def test_identical_checkpoints_are_tied_whatever_the_resamples(tmp_path: Path) -> None:
    """Two byte-identical checkpoints: the same score and interval, P(best) split, tied with each other."""
    first = CHECKPOINTS / "ptbxl_superclass_bilstm.ts"
    copies = tmp_path / "zoo"
    copies.mkdir()
    for name in ("a_bilstm.ts", "b_bilstm.ts"):
        shutil.copyfile(first, copies / name)
    shutil.copyfile(CHECKPOINTS / "ptbxl_form_resnet1d.pt", copies / "form_resnet1d.pt")
    for seed in range(6):
        ranked = melep_cli.rank([copies], TARGET, bootstrap=BootstrapSettings(resamples=300, seed=seed))
        a, b = ranked.ok[0], ranked.ok[1]
        assert {a.name, b.name} == {"a_bilstm", "b_bilstm"}
        assert a.melep == b.melep
        assert a.uncertainty is not None and b.uncertainty is not None
        assert a.uncertainty.ci == b.uncertainty.ci
        assert a.uncertainty.p_best == b.uncertainty.p_best
        assert b.uncertainty.diff_ci == (0.0, 0.0) and b.uncertainty.tied_with_best
        assert ranked.tied_ranks[:2] == [1, 2]


def test_settings_are_reproducible_and_checked(sample_outputs: list[Outputs]) -> None:
    estimates = []
    for outputs in sample_outputs[:3]:
        result = melep(outputs.scores, outputs.labels, activation=outputs.activation, influence=True)
        estimates.append(Estimate(result.score, result.influence, result.per_label, result.per_label_influence))
    first = paired_bootstrap(estimates, settings=BootstrapSettings(resamples=500, seed=11))
    again = paired_bootstrap(estimates, settings=BootstrapSettings(resamples=500, seed=11))
    other = paired_bootstrap(estimates, settings=BootstrapSettings(resamples=500, seed=12))
    assert [u.ci for u in first] == [u.ci for u in again]
    assert [u.ci for u in first] != [u.ci for u in other]
    narrow = paired_bootstrap(estimates, settings=BootstrapSettings(resamples=500, seed=11, confidence=0.5))
    for wide, half in zip(first, narrow):
        assert wide.ci[0] < half.ci[0] < half.ci[1] < wide.ci[1]
        assert wide.per_label_ci is not None and np.all(wide.per_label_ci[:, 0] <= wide.per_label_ci[:, 1])
    for bad, parameter in (
        (dict(resamples=-1), "resamples"),
        (dict(confidence=1.0), "confidence"),
        (dict(seed=-2), "seed"),
    ):
        with pytest.raises(UsageError, match=parameter):
            BootstrapSettings(**bad)  # type: ignore[arg-type]


def test_no_bootstrap_gives_no_intervals() -> None:
    ranked = melep_cli.rank([CHECKPOINTS], TARGET, bootstrap=BootstrapSettings(resamples=0))
    assert ranked.bootstrap is None and ranked.tied_ranks == []
    assert all(outcome.uncertainty is None for outcome in ranked.ok)


@pytest.mark.skipif(not PTBXL.is_dir(), reason="needs ../shared/data/ptbxl")
def test_intervals_cover_the_score_on_all_of_ptbxl() -> None:
    """Subsamples of 300 of the 2,992 PTB-XL records: the 95% interval covers the all-records score in at least
    90% of them, and its width is about 3.92 times the spread of the subsample scores."""
    target = melep_cli.open_target(PTBXL)
    found = _outputs_of(target, melep_cli.forward([CHECKPOINTS], target))
    everything = [melep(o.scores, o.labels, activation=o.activation).score for o in found]
    rng = np.random.default_rng(2024)
    subsamples = 120
    covered = np.zeros(len(found))
    scores = np.empty((subsamples, len(found)))
    widths = np.empty((subsamples, len(found)))
    score = MelepScore()
    for s in range(subsamples):
        rows = rng.choice(len(found[0].labels), 300, replace=False)
        estimates = []
        for o in found:
            value = score.compute(
                ModelOutputs(o.scores[rows], o.activation), o.labels[rows], target.label_names, influence=True
            )
            estimates.append(Estimate(value.value, value.influence))  # type: ignore[arg-type]
        for k, uncertainty in enumerate(paired_bootstrap(estimates, settings=BootstrapSettings(seed=s))):
            covered[k] += uncertainty.ci[0] <= everything[k] <= uncertainty.ci[1]
            scores[s, k] = estimates[k].value
            widths[s, k] = uncertainty.ci[1] - uncertainty.ci[0]
    coverage = covered / subsamples
    ratio = widths.mean(axis=0) / (3.92 * scores.std(axis=0))
    assert np.all(coverage >= 0.90), coverage
    assert np.all((ratio > 0.7) & (ratio < 1.5)), ratio
