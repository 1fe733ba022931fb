"""The `probe` score against a plain reference written out here: explicit standardisation, closed-form ridge
with an intercept per fold (numpy.linalg.solve), a rank-based AUROC.

The inputs are the real PTB-XL ECGs of sample_data/ptbxl_target.h5 (300 records, 9 labels). No trained
network's penultimate features are at hand in a unit test, so fixed functions of the real signals stand in
for them: per-lead summary statistics (a pooled, nonlinear summary of each ECG that carries label
information, as a network's pooled features do), and one random ReLU layer over the downsampled signal (an
untrained network's features: wide, correlated dimensions). What the probe does with features does not
depend on where they come from; real signals and labels give realistic correlations and label imbalance.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
from scipy.stats import rankdata

from melep_cli.errors import InputError
from melep_cli.scores.base import ModelOutputs
from melep_cli.scores.probe import ProbeScore, _design

TARGET = Path(__file__).resolve().parents[1] / "sample_data" / "ptbxl_target.h5"
FOLDS = 5
SEEDS = (0, 1)
ALPHA_PER_RECORD = 0.1


@pytest.fixture(scope="module")
def ecg() -> tuple[np.ndarray, np.ndarray, list[str]]:
    with h5py.File(TARGET, "r") as handle:
        signals = handle["signals"][()]  # (300, 1000, 12) float32 mV
        labels = handle["labels"][()]
        names = [str(name) for name in handle["labels"].attrs["label_names"]]
    return signals, labels, names


def lead_statistics(signals: np.ndarray) -> np.ndarray:
    """(n, 72) float32: per lead the mean, standard deviation, mean absolute slope and 5/50/95th percentiles."""
    percentiles = np.percentile(signals, [5, 50, 95], axis=1).transpose(1, 0, 2).reshape(len(signals), -1)
    slope = np.abs(np.diff(signals, axis=1)).mean(axis=1)
    return np.concatenate([signals.mean(axis=1), signals.std(axis=1), slope, percentiles], axis=1).astype(np.float32)


def random_relu_features(signals: np.ndarray, width: int, seed: int) -> np.ndarray:
    """(n, width): one fixed random ReLU layer over the standardised lead statistics and the signal's mean
    amplitude spectrum per lead (0-12.5 Hz in 0.5 Hz bins; a spectrum, unlike the waveform, does not depend on
    where in the 10 s the beats fall)."""
    spectrum = np.abs(np.fft.rfft(signals, axis=1))[:, 1:126].reshape(len(signals), 25, 5, 12).mean(axis=2)
    inputs = np.concatenate([lead_statistics(signals), np.log1p(spectrum.reshape(len(signals), -1))], axis=1)
    inputs = (inputs - inputs.mean(axis=0)) / inputs.std(axis=0)
    weights = np.random.default_rng(seed).standard_normal((inputs.shape[1], width)) / np.sqrt(inputs.shape[1])
    return np.maximum(inputs @ weights, 0.0)


# --- the reference, written out ------------------------------------------------------------------------------


def reference_folds(n: int, seed: int) -> list[np.ndarray]:
    """The test records of each fold: KFold(5, shuffle=True, random_state=seed) as its documentation says
    (a permutation by RandomState(seed), cut into 5 consecutive parts, the first n % 5 one record longer)."""
    order = np.arange(n)
    np.random.RandomState(seed).shuffle(order)
    sizes = np.full(FOLDS, n // FOLDS)
    sizes[: n % FOLDS] += 1
    return np.split(order, np.cumsum(sizes)[:-1])


def reference_standardise(features: np.ndarray) -> np.ndarray:
    x = features.astype(np.float64)
    x = x[:, np.ptp(x, axis=0) > 0]  # constant dimensions dropped
    return (x - x.mean(axis=0)) / x.std(axis=0)


def reference_ridge(x: np.ndarray, y: np.ndarray, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """argmin_{w, b} ||y - b - x w||^2 + alpha ||w||^2: the intercept unpenalised, so centre, solve, restore."""
    x_mean, y_mean = x.mean(axis=0), y.mean(axis=0)
    xc = x - x_mean
    w = np.linalg.solve(xc.T @ xc + alpha * np.eye(x.shape[1]), xc.T @ (y - y_mean))
    return w, y_mean - x_mean @ w


def reference_auroc(y: np.ndarray, s: np.ndarray) -> float:
    """Mann-Whitney: (rank sum of the positives - n1 (n1 + 1) / 2) / (n1 n0), midranks for ties."""
    ranks = rankdata(s)
    n1 = int(y.sum())
    n0 = len(y) - n1
    return (ranks[y == 1].sum() - n1 * (n1 + 1) / 2) / (n1 * n0)


def reference_predictions(features: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    """(informative mask, out-of-fold predictions of the informative labels for each seed)."""
    x = reference_standardise(features)
    positives = labels.sum(axis=0)
    informative = (positives >= FOLDS) & (len(labels) - positives >= FOLDS)
    y = labels[:, informative].astype(np.float64)
    repeats = []
    for seed in SEEDS:
        predictions = np.empty_like(y)
        for test in reference_folds(len(x), seed):
            train = np.setdiff1d(np.arange(len(x)), test)
            w, b = reference_ridge(x[train], y[train], ALPHA_PER_RECORD * len(train))
            predictions[test] = x[test] @ w + b
        repeats.append(predictions)
    return informative, repeats


def reference_probe(features: np.ndarray, labels: np.ndarray) -> tuple[float, np.ndarray]:
    informative, repeats = reference_predictions(features, labels)
    per_label = np.full(labels.shape[1], np.nan)
    y = labels[:, informative]
    per_label[informative] = [
        np.mean([reference_auroc(y[:, j], predictions[:, j]) for predictions in repeats]) for j in range(y.shape[1])
    ]
    return float(np.nanmean(per_label)), per_label


def weighted_auroc(y: np.ndarray, s: np.ndarray, w: np.ndarray) -> float:
    """The AUROC with record weights w: sum over (positive i, negative j) of w_i w_j [s_i > s_j] (ties 1/2)."""
    pos, neg = y == 1, y == 0
    wins = (s[pos][:, None] > s[neg][None, :]) + 0.5 * (s[pos][:, None] == s[neg][None, :])
    return float(w[pos] @ wins @ w[neg] / (w[pos].sum() * w[neg].sum()))


def weighted_value(labels: np.ndarray, informative: np.ndarray, repeats: list[np.ndarray], w: np.ndarray):
    """(total, per informative label) of the probe with the out-of-fold predictions held fixed, weights w."""
    y = labels[:, informative]
    per_label = np.array([np.mean([weighted_auroc(y[:, j], p[:, j], w) for p in repeats]) for j in range(y.shape[1])])
    return per_label.mean(), per_label


def probe(features: np.ndarray, labels: np.ndarray, names, *, influence: bool = False, **settings):
    outputs = ModelOutputs(np.zeros((len(labels), 1)), "logits", features=features)
    return ProbeScore(**settings).compute(outputs, labels, names, influence=influence)


# --- the tests ------------------------------------------------------------------------------------------------


def test_the_interface() -> None:
    assert (ProbeScore.name, ProbeScore.direction, ProbeScore.needs) == ("probe", "higher", frozenset({"features"}))


@pytest.mark.parametrize(
    "case",
    [
        "statistics",  # 72 float32 dimensions, n_train > D: sklearn's primal (X^T X) solve
        "first-120-with-constant",  # a constant and a duplicated dimension, n not a multiple of 5
        "random-relu-500",  # float64, D = 500 > n_train = 240: sklearn's kernel (X X^T) solve
        "random-relu-1500",  # wider than projection_dims, but n_train = 240 is not: solved exactly, unprojected
    ],
)
def test_matches_the_reference(ecg, case) -> None:
    signals, labels, names = ecg
    if case == "statistics":
        features = lead_statistics(signals)
    elif case == "first-120-with-constant":
        signals, labels = signals[:123], labels[:123]
        stats = lead_statistics(signals)
        features = np.concatenate([stats, np.full((123, 1), 3.5, np.float32), stats[:, :1]], axis=1)
    else:
        features = random_relu_features(signals, int(case.rsplit("-", 1)[1]), seed=1)
    result = probe(features, labels, names)
    value, per_label = reference_probe(features, labels)
    assert result.value == pytest.approx(value, abs=1e-6)
    np.testing.assert_allclose(result.per_label, per_label, atol=1e-6)
    assert np.array_equal(np.isnan(result.per_label), np.isnan(per_label))
    assert result.label_names == tuple(names)
    assert 0.6 < result.value < 0.95  # the real ECGs carry their labels: well above chance
    assert result.detail.projected_to is None and result.detail.records == len(labels)
    assert result.detail.per_repeat.shape == (2, len(names))


def test_degenerate_labels(ecg) -> None:
    signals, labels, _ = ecg
    features = lead_statistics(signals)
    chosen = np.zeros((len(labels), 5), np.uint8)
    chosen[:, 1] = 1  # all positive
    chosen[np.flatnonzero(labels[:, 0])[:4], 2] = 1  # 4 positives: fewer than the 5 folds
    chosen[np.flatnonzero(labels[:, 0])[:5], 3] = 1  # 5 positives: enough
    chosen[:, 4] = labels[:, 0]
    label_names = ["none", "all", "four", "five", "NORM"]
    result = probe(features, chosen, label_names, influence=True)
    assert np.isnan(result.per_label[:3]).all() and np.isfinite(result.per_label[3:]).all()
    assert result.value == pytest.approx(np.mean(result.per_label[3:]))
    assert result.detail.degenerate == ("none", "all", "four")
    assert (result.per_label_influence[:, :3] == 0).all()
    np.testing.assert_allclose(result.influence, result.per_label_influence[:, 3:].mean(axis=1))
    value, per_label = reference_probe(features, chosen)
    assert result.value == pytest.approx(value, abs=1e-6)
    np.testing.assert_allclose(result.per_label, per_label, atol=1e-6)
    # the same label flipped, 4 negatives instead of 4 positives, is as degenerate
    assert np.isnan(probe(features, 1 - chosen, label_names).per_label[2])

    with pytest.raises(InputError, match="fewer than 5 positives or negatives"):
        probe(features, chosen[:, :3], label_names[:3])


def test_bad_inputs(ecg) -> None:
    signals, labels, names = ecg
    features = lead_statistics(signals)
    outputs = ModelOutputs(np.zeros((len(labels), 1)), "logits")
    with pytest.raises(InputError, match="no features output") as raised:
        ProbeScore().compute(outputs, labels, names)
    assert "features_output" in str(raised.value) and "\n" not in str(raised.value)
    with pytest.raises(InputError, match="labels"):
        probe(features, labels[:-1], names)
    with pytest.raises(InputError, match="label names"):
        probe(features, labels, names[:-1])
    with pytest.raises(InputError, match="0 or 1"):
        probe(features, labels * 2, names)
    broken = features.copy()
    broken[7, 3] = np.nan
    with pytest.raises(InputError, match="finite"):
        probe(broken, labels, names)
    with pytest.raises(InputError, match="constant"):
        probe(np.ones((len(labels), 4), np.float32), labels, names)


def test_reproducible_and_leaves_the_features_alone(ecg) -> None:
    signals, labels, names = ecg
    for features in (lead_statistics(signals), random_relu_features(signals, 1500, seed=2).astype(np.float32)):
        before = features.copy()
        first = probe(features, labels, names, influence=True, projection_dims=128)
        second = probe(features, labels, names, influence=True, projection_dims=128)
        assert first.detail.projected_to == (128 if features.shape[1] > 128 else None)
        assert first.value == second.value
        assert np.array_equal(first.per_label, second.per_label, equal_nan=True)
        assert np.array_equal(first.per_label_influence, second.per_label_influence)
        assert np.array_equal(features, before)  # standardised and projected in copies, never in place


def test_projection_of_wide_features(ecg) -> None:
    """Wide features spanned by few directions: a Gaussian projection to 200 dimensions keeps that subspace,
    and with the penalty small against its variances the ridge predictions, so the AUROCs, hardly move.
    (Projected only because the 240 training records exceed projection_dims, as 1,024 would need.)"""
    signals, labels, names = ecg
    stats = reference_standardise(lead_statistics(signals))
    rng = np.random.default_rng(5)
    wide = (stats @ rng.standard_normal((stats.shape[1], 3000)) + 0.05 * rng.standard_normal((300, 3000))).astype(
        np.float32
    )
    projected = probe(wide, labels, names, projection_dims=200)
    again = probe(wide, labels, names, projection_dims=200)
    other_seed = probe(wide, labels, names, projection_dims=200, seed=1)
    unprojected = probe(wide, labels, names)
    assert projected.detail.projected_to == 200 and projected.detail.dimensions == 3000
    assert unprojected.detail.projected_to is None
    assert projected.value == again.value and np.array_equal(projected.per_label, again.per_label)
    assert other_seed.value != projected.value  # the seed draws the projection
    for approximate in (projected, other_seed):  # measured: totals 0.0035 and 0.0044 apart, labels at most 0.012
        assert approximate.value == pytest.approx(unprojected.value, abs=0.01)
        np.testing.assert_allclose(approximate.per_label, unprojected.per_label, atol=0.025)
    assert unprojected.value > 0.65


def test_projection_keeps_inner_products_in_expectation(ecg) -> None:
    """Entries N(0, 1/k): each projected row's squared norm estimates the standardised row's (D on average), so
    the penalty of 0.1 per record means on the projection what it means on the features."""
    signals, _, _ = ecg
    wide = random_relu_features(signals, 3000, seed=3).astype(np.float32)
    design, dimensions = _design(wide, None, 1024, 0)
    assert design.shape == (300, 1024) and dimensions == 3000
    standardised = reference_standardise(wide)
    assert np.mean(np.sum(design**2, axis=1)) == pytest.approx(np.mean(np.sum(standardised**2, axis=1)), rel=0.05)
    gram, exact = design @ design.T, standardised @ standardised.T
    assert np.corrcoef(gram.ravel(), exact.ravel())[0, 1] > 0.95
    np.testing.assert_allclose(design.mean(axis=0), 0.0, atol=1e-4)


def test_influence_is_the_derivative_with_predictions_fixed(ecg) -> None:
    signals, labels, names = ecg
    features = lead_statistics(signals)
    result = probe(features, labels, names, influence=True)
    informative, repeats = reference_predictions(features, labels)
    n = len(labels)
    assert result.influence.shape == (n,) and result.per_label_influence.shape == (n, len(names))
    np.testing.assert_allclose(result.per_label_influence.mean(axis=0), 0.0, atol=1e-12)
    value, per_label = weighted_value(labels, informative, repeats, np.ones(n))
    assert value == pytest.approx(result.value, abs=1e-6)
    rng = np.random.default_rng(0)
    for _ in range(3):
        u = rng.standard_normal(n)
        u -= u.mean()  # the multiplicities keep summing to n
        step = 1e-5
        moved, moved_per_label = weighted_value(labels, informative, repeats, 1.0 + step * u)
        assert (moved - value) / step == pytest.approx(np.mean(u * result.influence), rel=1e-3)
        np.testing.assert_allclose(
            (moved_per_label - per_label) / step, (u @ result.per_label_influence[:, informative]) / n, rtol=1e-3
        )


def test_influence_against_resampling(ecg) -> None:
    """Bootstrap resamples (multinomial multiplicities), predictions fixed: the linearised values track the
    recomputed AUROCs and have their spread."""
    signals, labels, names = ecg
    features = lead_statistics(signals)
    result = probe(features, labels, names, influence=True)
    informative, repeats = reference_predictions(features, labels)
    n = len(labels)
    rng = np.random.default_rng(1)
    exact, linear = [], []
    for _ in range(200):
        w = np.bincount(rng.integers(0, n, n), minlength=n).astype(np.float64)
        exact.append(weighted_value(labels, informative, repeats, w)[0])
        linear.append(result.value + np.mean((w - 1) * result.influence))
    exact, linear = np.array(exact), np.array(linear)
    # measured: spread ratio 0.993, correlation 0.969, root mean square difference 0.25 of the spread
    assert np.std(linear) == pytest.approx(np.std(exact), rel=0.1)
    assert np.corrcoef(exact, linear)[0, 1] > 0.93
    assert np.sqrt(np.mean((exact - linear) ** 2)) < 0.35 * np.std(exact)


def test_subsample_of_many_records(ecg) -> None:
    """Above max_records the probe is the probe of a seeded subsample; the other records have no influence,
    and the used ones n / m times their influence within the subsample."""
    signals, labels, names = ecg
    features = lead_statistics(signals)
    result = probe(features, labels, names, influence=True, max_records=200)
    rows = result.detail.rows
    assert result.detail.records == 200 and result.detail.total_records == 300
    assert rows.shape == (200,) and np.all(np.diff(rows) > 0)
    assert np.array_equal(probe(features, labels, names, max_records=200).detail.rows, rows)  # seeded
    value, per_label = reference_probe(features[rows], labels[rows])
    assert result.value == pytest.approx(value, abs=1e-6)
    np.testing.assert_allclose(result.per_label, per_label, atol=1e-6)
    left_out = np.setdiff1d(np.arange(300), rows)
    np.testing.assert_allclose(result.influence[left_out], 0.0, atol=1e-12)

    informative, repeats = reference_predictions(features[rows], labels[rows])
    u = np.random.default_rng(2).standard_normal(300)
    u -= u.mean()
    step = 1e-5
    base = weighted_value(labels[rows], informative, repeats, np.ones(200))[0]
    moved = weighted_value(labels[rows], informative, repeats, 1.0 + step * u[rows])[0]
    assert (moved - base) / step == pytest.approx(np.mean(u * result.influence), rel=1e-3)
    assert probe(features, labels, names).detail.rows is None
