"""The MELEP core against the spec's golden vectors, its properties, and its edge cases."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from melep_cli import InputError, MelepAccumulator, binary_entropy, melep
from melep_cli.metric import activate

#: A copy of shared/spec/vectors.json, so that the metric is checked on every clone.
SPEC = Path(__file__).resolve().parent / "data" / "vectors.json"
RTOL = 1e-9


def _cases() -> list[dict]:
    return json.loads(SPEC.read_text())["cases"]


def _outputs(case: dict) -> tuple[np.ndarray, str]:
    if "logits" in case:
        return np.asarray(case["logits"], dtype=np.float64), "logits"
    return np.asarray(case["probs"], dtype=np.float64), "probabilities"


@pytest.mark.parametrize("case", _cases(), ids=lambda case: case["name"])
@pytest.mark.parametrize("weighting", ["prevalence", "paper", "uniform"])
def test_golden_vectors(case: dict, weighting: str) -> None:
    outputs, activation = _outputs(case)
    result = melep(outputs, np.asarray(case["labels"]), activation=activation, weighting=weighting)
    assert result.score == pytest.approx(case["expected"][weighting], rel=RTOL)
    np.testing.assert_allclose(result.per_label, case["expected_per_label"], rtol=RTOL)
    np.testing.assert_allclose(result.phi, case["expected_phi"], rtol=RTOL)
    assert result.degenerate == ()


@pytest.mark.parametrize("case", _cases(), ids=lambda case: case["name"])
def test_accumulator_matches_golden_vectors(case: dict) -> None:
    outputs, activation = _outputs(case)
    labels = np.asarray(case["labels"])
    accumulator = MelepAccumulator(activation=activation)
    for start in range(0, len(labels), 7):
        accumulator.update(outputs[start : start + 7], labels[start : start + 7])
    assert accumulator.records == len(labels)
    assert accumulator.compute().score == pytest.approx(case["expected"]["prevalence"], rel=RTOL)


def test_score_is_the_weighted_mean_of_per_label_values() -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, size=(80, 4))
    outputs = rng.uniform(size=(80, 6))
    for weighting in ("prevalence", "paper", "uniform"):
        result = melep(outputs, labels, weighting=weighting)
        assert result.score == pytest.approx(np.sum(result.label_weights * result.per_label), rel=1e-12)
    prevalence = labels.mean(axis=0)
    result = melep(outputs, labels, weighting="prevalence")
    np.testing.assert_allclose(result.label_weights, prevalence / prevalence.sum())
    paper = melep(outputs, labels, weighting="paper")
    np.testing.assert_allclose(paper.label_weights, (prevalence / (1 - prevalence)) / 4)


def test_source_weights_replace_the_plain_mean() -> None:
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, size=(50, 2))
    outputs = rng.uniform(size=(50, 3))
    plain = melep(outputs, labels)
    weighted = melep(outputs, labels, source_weights=[2, 0, 2])
    np.testing.assert_allclose(weighted.per_label, plain.phi[:, [0, 2]].mean(axis=1))
    np.testing.assert_allclose(weighted.source_weights, [0.5, 0, 0.5])
    with pytest.raises(InputError, match="3 source labels"):
        melep(outputs, labels, source_weights=[1, 1])
    with pytest.raises(InputError, match="non-negative"):
        melep(outputs, labels, source_weights=[1, -1, 1])


def test_softmax_activation_matches_a_manual_softmax() -> None:
    rng = np.random.default_rng(2)
    logits = rng.normal(size=(40, 5))
    labels = rng.integers(0, 2, size=(40, 3))
    manual = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    assert melep(logits, labels, activation="softmax").score == pytest.approx(
        melep(manual, labels, activation="probabilities").score, rel=1e-12
    )


def test_sigmoid_is_float64_so_large_logits_do_not_saturate() -> None:
    theta = activate(np.array([[20.0, 30.0]], dtype=np.float32), "logits")
    assert theta.dtype == np.float64
    assert np.all(theta < 1.0)


# Degenerate cases and errors --------------------------------------------------------------


def test_degenerate_labels_are_left_out_and_reported() -> None:
    rng = np.random.default_rng(3)
    informative = rng.integers(0, 2, size=(60, 2))
    labels = np.column_stack([informative[:, 0], np.ones(60), informative[:, 1], np.zeros(60)])
    outputs = rng.uniform(size=(60, 4))
    result = melep(outputs, labels, label_names=["a", "all", "b", "none"], weighting="paper")
    reference = melep(outputs, informative, label_names=["a", "b"], weighting="paper")
    assert result.degenerate == ("all", "none")
    assert np.isnan(result.per_label[[1, 3]]).all()
    assert np.isnan(result.phi[[1, 3]]).all()
    assert result.score == pytest.approx(reference.score, rel=1e-12)
    assert np.isfinite(result.score)


def test_every_label_degenerate_is_an_error() -> None:
    with pytest.raises(InputError, match="every target label is degenerate"):
        melep(np.full((5, 2), 0.5), np.ones((5, 3)))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_outputs_are_an_error(bad: float) -> None:
    outputs = np.full((4, 2), 0.5)
    outputs[2, 1] = bad
    with pytest.raises(InputError, match=r"non-finite.*record 2, column 1"):
        melep(outputs, np.array([[0], [1], [0], [1]]))


def test_labels_that_are_not_binary_are_an_error() -> None:
    with pytest.raises(InputError, match=r"0 or 1: found 2.0 at record 1, column 0"):
        melep(np.full((3, 2), 0.5), np.array([[0], [2], [1]]))


def test_mismatched_record_counts_are_an_error() -> None:
    with pytest.raises(InputError, match=r"labels have 4 records.*outputs have 3"):
        melep(np.full((3, 2), 0.5), np.zeros((4, 1)))


def test_zero_records_is_an_error() -> None:
    with pytest.raises(InputError, match="no records"):
        melep(np.zeros((0, 2)), np.zeros((0, 1)))
    with pytest.raises(InputError, match="no records"):
        MelepAccumulator().compute()


def test_probabilities_outside_the_unit_interval_are_an_error() -> None:
    with pytest.raises(InputError, match=r"\[0, 1\]"):
        melep(np.array([[1.5], [0.2]]), np.array([[0], [1]]))


def test_wrong_dimensions_are_an_error() -> None:
    with pytest.raises(InputError, match="2-D"):
        melep(np.zeros((2, 2, 2)), np.zeros((2, 1)))


# Properties ---------------------------------------------------------------------------------


@st.composite
def problems(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray]:
    """Random (probabilities n x Z, labels n x Y) with every label informative."""
    n = draw(st.integers(4, 40))
    n_source = draw(st.integers(1, 5))
    n_target = draw(st.integers(1, 4))
    theta = draw(
        hnp.arrays(np.float64, (n, n_source), elements=st.floats(0, 1, allow_nan=False, allow_subnormal=False))
    )
    labels = draw(hnp.arrays(np.uint8, (n, n_target), elements=st.integers(0, 1)))
    labels[0, :] = 1
    labels[1, :] = 0
    return theta, labels


@settings(max_examples=60, deadline=None)
@given(problems(), st.randoms(use_true_random=False))
def test_permuting_records_changes_nothing(problem: tuple[np.ndarray, np.ndarray], random) -> None:
    theta, labels = problem
    order = np.array(random.sample(range(len(theta)), len(theta)))
    original = melep(theta, labels)
    permuted = melep(theta[order], labels[order])
    assert permuted.score == pytest.approx(original.score, rel=1e-9, abs=1e-12)
    np.testing.assert_allclose(permuted.phi, original.phi, rtol=1e-9, atol=1e-12)


@settings(max_examples=60, deadline=None)
@given(problems(), st.randoms(use_true_random=False))
def test_permuting_target_labels_permutes_the_per_label_vector(problem: tuple[np.ndarray, np.ndarray], random) -> None:
    theta, labels = problem
    order = np.array(random.sample(range(labels.shape[1]), labels.shape[1]))
    original = melep(theta, labels)
    permuted = melep(theta, labels[:, order])
    np.testing.assert_allclose(permuted.per_label, original.per_label[order], rtol=1e-9, atol=1e-12)
    assert permuted.score == pytest.approx(original.score, rel=1e-9, abs=1e-12)


@settings(max_examples=60, deadline=None)
@given(problems())
def test_outputs_of_exactly_zero_and_one_stay_finite(problem: tuple[np.ndarray, np.ndarray]) -> None:
    theta, labels = problem
    saturated = np.round(theta)
    result = melep(saturated, labels)
    assert np.isfinite(result.score)
    assert np.isfinite(result.phi).all()


@settings(max_examples=60, deadline=None)
@given(problems(), st.lists(st.integers(1, 10), min_size=1, max_size=8))
def test_accumulator_equals_the_one_shot_call_for_any_split(
    problem: tuple[np.ndarray, np.ndarray], sizes: list[int]
) -> None:
    theta, labels = problem
    accumulator = MelepAccumulator()
    start, index = 0, 0
    while start < len(theta):
        stop = start + sizes[index % len(sizes)]
        accumulator.update(theta[start:stop], labels[start:stop])
        start, index = stop, index + 1
    batched, one_shot = accumulator.compute(), melep(theta, labels)
    assert batched.score == one_shot.score
    np.testing.assert_array_equal(batched.phi, one_shot.phi)


@settings(max_examples=40, deadline=None)
@given(st.floats(0.05, 0.95), st.integers(0, 2**31 - 1))
def test_outputs_independent_of_a_label_give_its_binary_entropy(prevalence: float, seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 20_000
    labels = (rng.uniform(size=(n, 1)) < prevalence).astype(np.uint8)
    theta = rng.uniform(size=(n, 3))
    result = melep(theta, labels)
    entropy = binary_entropy(labels.mean())
    np.testing.assert_allclose(result.phi[0], entropy, atol=2e-3)


@settings(max_examples=40, deadline=None)
@given(problems())
def test_an_output_equal_to_the_label_gives_phi_close_to_zero(problem: tuple[np.ndarray, np.ndarray]) -> None:
    _, labels = problem
    result = melep(labels.astype(np.float64), labels)
    np.testing.assert_allclose(np.diag(result.phi[:, : labels.shape[1]]), 0.0, atol=1e-9)


def test_binary_entropy_is_zero_at_the_ends_and_log2_in_the_middle() -> None:
    np.testing.assert_allclose(binary_entropy([0.0, 0.5, 1.0]), [0.0, np.log(2), 0.0])


# ----- the fast kernel against the plain loops of MELEP.md (tests/reference_melep.py) --------------------
def _random_case(seed: int, n: int, y: int, z: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    theta = rng.uniform(0.01, 0.99, size=(n, z))
    labels = (rng.uniform(size=(n, y)) < rng.uniform(0.05, 0.6, size=y)).astype(np.uint8)
    return theta, labels


@pytest.mark.parametrize("weighting", ["prevalence", "paper", "uniform"])
@pytest.mark.parametrize(("seed", "n", "y", "z"), [(0, 7, 1, 1), (1, 40, 3, 5), (2, 200, 6, 2), (3, 31, 2, 9)])
def test_the_fast_kernel_equals_the_plain_definition(seed: int, n: int, y: int, z: int, weighting: str) -> None:
    from reference_melep import reference_melep

    theta, labels = _random_case(seed, n, y, z)
    expected, per_label = reference_melep(theta, labels, weighting)
    result = melep(theta, labels, activation="probabilities", weighting=weighting)
    assert result.score == pytest.approx(expected, rel=1e-12)
    for fast, plain in zip(result.per_label, per_label):
        assert (plain is None and np.isnan(fast)) or fast == pytest.approx(plain, rel=1e-12)


def test_edge_cases_equal_the_plain_definition() -> None:
    """Saturated outputs (clipped), a constant output column, a degenerate label, a single record per class."""
    from reference_melep import reference_melep

    theta = np.array([[0.0, 1.0, 0.5], [1.0, 1.0, 0.5], [1e-20, 1.0, 0.5], [1 - 1e-17, 0.0, 0.5], [0.3, 1.0, 0.5]])
    labels = np.array([[1, 0, 1], [1, 0, 0], [0, 0, 0], [0, 0, 1], [1, 0, 0]], dtype=np.uint8)  # label 1 degenerate
    for weighting in ("prevalence", "paper", "uniform"):
        expected, per_label = reference_melep(theta, labels, weighting)
        result = melep(theta, labels, activation="probabilities", weighting=weighting)
        assert result.score == pytest.approx(expected, rel=1e-9)
        assert per_label[1] is None and result.degenerate == ("y1",)


def test_the_direct_formula_used_without_clipping_equals_the_plain_definition() -> None:
    """eps = 0 turns the odds identity off (it needs 0 < theta < 1 after clipping): the block-wise direct
    formula of the log term runs instead, and must give the same numbers."""
    from reference_melep import reference_melep

    theta, labels = _random_case(5, 120, 4, 6)
    expected, _ = reference_melep(theta, labels)
    direct = melep(theta, labels, activation="probabilities", eps=0.0)
    assert direct.score == pytest.approx(expected, rel=1e-12)
    assert direct.score == pytest.approx(melep(theta, labels, activation="probabilities").score, rel=1e-12)
