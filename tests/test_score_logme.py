"""LogME (melep_cli.scores.logme) against a plain reference implementation of the published algorithm.

The features are derived from the real ECGs of sample_data/ptbxl_target.h5 (300 PTB-XL records, 12 leads, 10 s at
100 Hz). Real penultimate features would need a checkpoint with a features output; these stand in for them because
LogME only sees an n x D matrix of real records: per-lead summary statistics are hand-made features of the kind a
network's last layer summarises (correlated, of mixed scale, informative of the labels), and a fixed random
projection followed by a ReLU is exactly the penultimate layer of an untrained one-hidden-layer network on the
signals (non-negative, wider than the record count, so the n < D path is exercised on real data).
"""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import h5py
import numpy as np
import pytest

from melep_cli.errors import InputError
from melep_cli.scores.base import ModelOutputs
from melep_cli.scores.logme import LogmeResult, LogmeScore, logme

TARGET = Path(__file__).resolve().parents[1] / "sample_data" / "ptbxl_target.h5"
RTOL = 1e-8


def reference_logme(
    features: np.ndarray,
    labels: np.ndarray,
    *,
    steps: int = 10_000,
    corrected: bool = True,
    weights: np.ndarray | None = None,
) -> tuple[np.ndarray, list[int]]:
    """The fixed point of LogME's JMLR version (You et al. 2022) label by label, written out from its definitions.

    One thin SVD of F; per label the projections x = U'y, then alpha, beta <- gamma / |m|^2, (n - gamma) / |y - Fm|^2
    until both change by less than 1e-10 relatively (or `steps` steps). `corrected`: the log-determinant keeps the
    (D - k)/2 log alpha of the D - k zero eigenvalues (False: thuml's formula, which drops it).
    `weights`: record weights v, entering as sum v f f', sum v f y, sum v y^2 and n = sum v (rows scaled by sqrt v).
    Returns each label's evidence / n (NaN for all-0 or all-1 labels) and the steps each took.
    """
    f = np.asarray(features, dtype=np.float64)
    n, d = f.shape
    root = np.ones(n) if weights is None else np.sqrt(weights)
    f = f * root[:, None]
    if weights is not None:
        n = weights.sum()
    u, s, _ = np.linalg.svd(f, full_matrices=False)
    k = int(np.sum(s > s.max() * max(n, d) * np.finfo(np.float64).eps))
    u, sigma = u[:, :k], s[:k] ** 2
    evidences, taken = [], []
    for column in range(labels.shape[1]):
        y = labels[:, column].astype(np.float64)
        if y.min() == y.max():
            evidences.append(np.nan)
            taken.append(0)
            continue
        y = y * root
        x2 = (u.T @ y) ** 2
        outside = y @ y - x2.sum()  # the part of y no combination of the features reaches
        alpha, beta = 1.0, 1.0
        step = 0
        while step < steps:
            step += 1
            t = alpha / beta
            gamma = np.sum(sigma / (sigma + t))
            m2 = np.sum(sigma * x2 / (sigma + t) ** 2)
            res2 = outside + np.sum(x2 * (t / (sigma + t)) ** 2)
            new_alpha, new_beta = gamma / m2, (n - gamma) / res2
            done = abs(new_alpha - alpha) <= 1e-10 * alpha and abs(new_beta - beta) <= 1e-10 * beta
            alpha, beta = new_alpha, new_beta
            if done:
                break
        t = alpha / beta
        m2 = np.sum(sigma * x2 / (sigma + t) ** 2)
        res2 = outside + np.sum(x2 * (t / (sigma + t)) ** 2)
        log_det = np.sum(np.log(alpha + beta * sigma))
        if corrected:
            log_det += (d - k) * np.log(alpha)
        evidence = (
            d / 2 * np.log(alpha)
            + n / 2 * np.log(beta)
            - log_det / 2
            - beta / 2 * res2
            - alpha / 2 * m2
            - n / 2 * np.log(2 * np.pi)
        )
        evidences.append(evidence / n)
        taken.append(step)
    return np.array(evidences), taken


def direct_evidence(features: np.ndarray, y: np.ndarray, alpha: float, beta: float) -> float:
    """The log evidence / n at (alpha, beta) from its definition: A = alpha I + beta F'F, m = beta A^-1 F'y."""
    f = np.asarray(features, dtype=np.float64)
    n, d = f.shape
    a = alpha * np.eye(d) + beta * f.T @ f
    m = beta * np.linalg.solve(a, f.T @ y)
    _, log_det = np.linalg.slogdet(a)
    value = (
        d / 2 * np.log(alpha)
        + n / 2 * np.log(beta)
        - log_det / 2
        - beta / 2 * np.sum((y - f @ m) ** 2)
        - alpha / 2 * m @ m
        - n / 2 * np.log(2 * np.pi)
    )
    return value / n


@pytest.fixture(scope="module")
def ecgs() -> tuple[np.ndarray, np.ndarray]:
    """The sample target's real signals (300, 1000, 12) in float64 and labels (300, 9)."""
    with h5py.File(TARGET, "r") as file:
        return file["signals"][:].astype(np.float64), file["labels"][:]


@pytest.fixture(scope="module")
def summary(ecgs: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """132 per-lead summary statistics of each record: 300 x 132, so n > D."""
    signals = ecgs[0]
    steps = np.diff(signals, axis=1)
    stats = [signals.mean(1), signals.std(1), signals.min(1), signals.max(1)]
    stats += list(np.percentile(signals, [5, 25, 50, 75, 95], axis=1))
    stats += [np.abs(steps).mean(1), steps.std(1)]
    return np.concatenate(stats, axis=1)


@pytest.fixture(scope="module")
def random_layer(ecgs: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """ReLU of a fixed random projection of the signals (at 25 Hz): 300 x 1000, so n < D."""
    flat = ecgs[0][:, ::4, :].reshape(len(ecgs[0]), -1)
    weights = np.random.default_rng(0).standard_normal((flat.shape[1], 1000)) / np.sqrt(flat.shape[1])
    return np.maximum(flat @ weights, 0.0)


@pytest.mark.parametrize("case", ["n>D", "n<D random layer", "n<D summary of 100 records"])
def test_matches_the_reference(case: str, ecgs, summary, random_layer) -> None:
    labels = ecgs[1]
    features = {"n>D": summary, "n<D random layer": random_layer, "n<D summary of 100 records": summary[:100]}[case]
    labels = labels[: len(features)]
    result = logme(features, labels)
    expected, taken = reference_logme(features, labels)
    assert np.all(np.isfinite(expected))
    np.testing.assert_allclose(result.per_label, expected, rtol=RTOL)
    assert result.score == pytest.approx(expected.mean(), rel=RTOL)
    assert result.steps.tolist() == taken
    assert result.converged.all()


@pytest.mark.parametrize("which", ["summary", "random_layer"])
def test_float32_features_are_scored_in_float64(which: str, ecgs, request) -> None:
    """Float32 features give the reference's value on the same float32 numbers, not a float32-rounded one."""
    features = request.getfixturevalue(which).astype(np.float32)
    result = logme(features, ecgs[1])
    expected, _ = reference_logme(features.astype(np.float64), ecgs[1])
    np.testing.assert_allclose(result.per_label, expected, rtol=RTOL)


@pytest.mark.parametrize("which", ["summary", "random_layer"])
def test_the_maximum_is_the_evidence_of_its_definition_and_stationary(which: str, ecgs, request) -> None:
    """At the returned (alpha, beta), the evidence computed from A, m and slogdet is the score, and moving alpha
    or beta by 1% in either direction lowers it (a maximum of the corrected formula)."""
    features = request.getfixturevalue(which)
    result = logme(features, ecgs[1])
    for label in (0, 2, 4):
        y = ecgs[1][:, label].astype(np.float64)
        alpha, beta = result.alpha[label], result.beta[label]
        here = direct_evidence(features, y, alpha, beta)
        assert here == pytest.approx(result.per_label[label], rel=RTOL)
        for a, b in ((alpha * 1.01, beta), (alpha / 1.01, beta), (alpha, beta * 1.01), (alpha, beta / 1.01)):
            assert direct_evidence(features, y, a, b) < here


def test_the_log_determinant_correction_matters_when_n_is_below_d(ecgs, random_layer) -> None:
    """n = 300 < D = 1000: thuml's formula (without (D - k)/2 log alpha) is far from the evidence; n > D: no change."""
    labels = ecgs[1]
    result = logme(random_layer, labels)
    uncorrected, _ = reference_logme(random_layer, labels, corrected=False)
    assert np.all(uncorrected - result.per_label > 1.0)  # evidences / n are about -1 .. 0.3 here


def test_eleven_steps_are_not_converged(ecgs, summary, random_layer) -> None:
    """thuml's 11 steps stop short on these features (by up to 7e-5 on the summaries, 9e-3 on the random layer);
    the score is the converged value, the maximum, so higher than every 11-step value."""
    for features in (summary, random_layer):
        result = logme(features, ecgs[1])
        eleven, _ = reference_logme(features, ecgs[1], steps=11)
        assert np.all(result.steps > 11)
        assert np.max(np.abs(eleven - result.per_label)) > 1e-5  # 1,000 times the agreement with the reference
        assert np.all(eleven < result.per_label)


def test_degenerate_labels_are_left_out(ecgs, summary) -> None:
    labels = np.column_stack([ecgs[1][:, :3], np.zeros(300, np.uint8), np.ones(300, np.uint8)])
    result = logme(summary, labels, label_names=["NORM", "MI", "STTC", "none", "all"], influence=True)
    expected, _ = reference_logme(summary, ecgs[1][:, :3])
    assert np.isnan(result.per_label[3:]).all()
    np.testing.assert_allclose(result.per_label[:3], expected, rtol=RTOL)
    assert result.score == pytest.approx(expected.mean(), rel=RTOL)
    assert result.degenerate == ("none", "all")
    assert result.per_label_influence is not None and result.influence is not None
    assert np.all(result.per_label_influence[:, 3:] == 0)
    np.testing.assert_allclose(result.influence, result.per_label_influence[:, :3].mean(axis=1), rtol=1e-12)
    with pytest.raises(InputError, match="every target label is degenerate"):
        logme(summary, labels[:, 3:])


def test_a_label_the_features_cannot_explain_takes_the_limit_alpha_infinite(ecgs) -> None:
    """All-zero features: m = 0, the evidence is that of y ~ N(0, 1/beta) with beta = n / |y|^2."""
    labels = ecgs[1]
    result = logme(np.zeros((300, 8), np.float32), labels)
    y2 = labels.sum(axis=0)
    np.testing.assert_allclose(result.per_label, -(np.log(2 * np.pi * y2 / 300) + 1) / 2, rtol=1e-12)
    assert np.isinf(result.alpha).all() and result.converged.all()


def test_alpha_running_to_infinity_takes_the_limit(ecgs, summary) -> None:
    """AFIB has 1 positive in the first 60 records: alpha grows without bound (the evidence prefers m = 0) until
    |m|^2 underflows, and the value is the limit, above the evidence of its definition anywhere on a wide grid."""
    labels = ecgs[1][:60]
    result = logme(summary[:60], labels)
    afib = 7
    assert labels[:, afib].sum() == 1 and np.isinf(result.alpha[afib]) and result.steps[afib] > 100
    limit = -(np.log(2 * np.pi * 1 / 60) + 1) / 2
    assert result.per_label[afib] == pytest.approx(limit, rel=1e-12)
    y = labels[:, afib].astype(np.float64)
    grid = [direct_evidence(summary[:60], y, a, b) for a in np.logspace(-2, 12, 15) for b in np.logspace(-1, 4, 11)]
    assert max(grid) < limit


def test_unbounded_evidence_is_an_error(ecgs, summary, random_layer) -> None:
    """Features that reproduce a label exactly with fewer independent directions than records (beta -> infinity):
    the random layer (D = 1000) on records some of which appear twice, or a label that is itself a feature."""
    labels = ecgs[1]
    rows = np.concatenate([np.arange(300), np.arange(20)])
    with pytest.raises(InputError, match="evidence of label NORM is unbounded"):
        logme(
            random_layer[rows],
            labels[rows],
            label_names=["NORM", "MI", "STTC", "HYP", "CD", "IMI", "LVH", "AFIB", "PVC"],
        )
    with pytest.raises(InputError, match="unbounded"):
        logme(np.column_stack([summary, labels[:, 4]]), labels)
    assert np.isfinite(logme(summary[rows], labels[rows]).score)  # n > D: repeated records are no problem


@pytest.fixture(scope="module")
def many_records(ecgs, summary) -> tuple[np.ndarray, np.ndarray]:
    """20,000 x 64: records drawn from the real summaries with noise, projected to 64 dimensions, and their labels."""
    rng = np.random.default_rng(2)
    rows = rng.integers(0, 300, 20_000)
    scaled = summary / summary.std(axis=0)
    noisy = scaled[rows] + 0.5 * rng.standard_normal((20_000, scaled.shape[1]))
    return noisy @ rng.standard_normal((scaled.shape[1], 64)) / 8, ecgs[1][rows]


@pytest.mark.parametrize("which", ["summary", "random_layer"])
def test_influence_is_n_times_the_derivative_in_a_record_weight(which: str, ecgs, request) -> None:
    """The reference with record weights v (n = sum v), differentiated numerically: moving weight eps from record k
    to record j changes evidence / n by eps * (influence_j - influence_k) / n (the centring constant cancels)."""
    features, labels = request.getfixturevalue(which), ecgs[1]
    n = len(labels)
    full = logme(features, labels, influence=True)
    assert full.per_label_influence is not None
    assert np.abs(full.per_label_influence.mean(axis=0)).max() < 1e-12
    eps = 1e-4
    for j, k in ((3, 17), (100, 250), (299, 0)):
        shift = np.zeros(n)
        shift[j], shift[k] = eps, -eps
        up, _ = reference_logme(features, labels, weights=1 + shift)
        down, _ = reference_logme(features, labels, weights=1 - shift)
        derivative = (up - down) / (2 * eps) * n
        linear = full.per_label_influence[j] - full.per_label_influence[k]
        np.testing.assert_allclose(linear, derivative, rtol=1e-5, atol=1e-7 * np.abs(derivative).max())


def test_influence_is_the_change_when_one_record_replaces_another(many_records) -> None:
    """A resample that drops record j and counts record k twice (weights summing to n) scores about
    value + (influence_k - influence_j) / n: the leave-one-out change plus the duplication change, both exact.
    (First order in 1/n: with D/n not small, records of high leverage move the evidence less linearly.)"""
    features, labels = many_records
    n = len(labels)
    full = logme(features, labels, influence=True)
    assert full.influence is not None and full.per_label_influence is not None
    rng = np.random.default_rng(1)
    exact, linear, exact_labels, linear_labels = [], [], [], []
    for j, k in rng.choice(n, size=(8, 2), replace=False):
        rows = np.concatenate([np.delete(np.arange(n), j), [k]])
        moved = logme(features[rows], labels[rows])
        exact.append(moved.score - full.score)
        linear.append((full.influence[k] - full.influence[j]) / n)
        exact_labels.append(moved.per_label - full.per_label)
        linear_labels.append((full.per_label_influence[k] - full.per_label_influence[j]) / n)
    exact_array, linear_array = np.array(exact), np.array(linear)
    assert np.abs(exact_array - linear_array).max() < 0.05 * np.abs(exact_array).max()
    assert np.corrcoef(exact_array, linear_array)[0, 1] > 0.99
    labels_error = np.abs(np.array(exact_labels) - np.array(linear_labels))
    assert labels_error.max() < 0.05 * np.abs(np.array(exact_labels)).max()


def test_streaming_over_many_records_matches_the_one_shot_svd(many_records) -> None:
    """n = 20,000 > D = 64: the Gram matrix accumulated over blocks of records gives the reference's value from
    one SVD of the whole matrix."""
    features, labels = many_records
    result = logme(features, labels)
    expected, _ = reference_logme(features, labels)
    np.testing.assert_allclose(result.per_label, expected, rtol=RTOL)


def test_memory_does_not_grow_with_n_times_d(ecgs) -> None:
    """100,000 x 64 float32 features (25.6 MB): LogME allocates far less than their float64 copy (51 MB)."""
    rng = np.random.default_rng(3)
    features = rng.standard_normal((100_000, 64)).astype(np.float32)
    labels = ecgs[1][rng.integers(0, 300, 100_000)]
    tracemalloc.start()
    try:
        logme(features, labels)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 0.5 * features.size * 8


def test_the_score_class(ecgs, summary) -> None:
    score = LogmeScore()
    assert (score.name, score.direction, score.needs) == ("logme", "higher", frozenset({"features"}))
    names = ("NORM", "MI", "STTC", "HYP", "CD", "IMI", "LVH", "AFIB", "PVC")
    outputs = ModelOutputs(scores=np.zeros((300, 2)), activation="logits", features=summary.astype(np.float32))
    value = score.compute(outputs, ecgs[1], names, influence=True)
    direct = logme(summary.astype(np.float32), ecgs[1], influence=True)
    assert value.value == direct.score and value.label_names == names
    np.testing.assert_array_equal(value.per_label, direct.per_label)
    np.testing.assert_array_equal(value.influence, direct.influence)
    np.testing.assert_array_equal(value.per_label_influence, direct.per_label_influence)
    assert isinstance(value.detail, LogmeResult) and value.detail.influence is None
    assert value.better_than(
        score.compute(ModelOutputs(outputs.scores, "logits", features=summary[:, :4]), ecgs[1], names)
    )
    assert score.compute(outputs, ecgs[1], names).influence is None
    with pytest.raises(InputError, match="features_output"):
        score.compute(ModelOutputs(outputs.scores, "logits"), ecgs[1], names)


@pytest.mark.parametrize(
    ("features", "labels", "message"),
    [
        (np.zeros(10), np.zeros((10, 1)), "2-D"),
        (np.zeros((10, 3)), np.zeros((9, 1)), "labels"),
        (np.zeros((10, 3)), np.full((10, 1), 2), "0/1"),
        (np.array([[1.0, np.nan]] * 10), np.eye(10, 1), "non-finite value"),
        (np.array([[1.0, np.inf, 0.0, 2.0]] * 3), np.eye(3, 1), "non-finite value"),  # n < D: the kernel path
    ],
)
def test_bad_inputs(features: np.ndarray, labels: np.ndarray, message: str) -> None:
    with pytest.raises(InputError, match=message):
        logme(features, labels)
