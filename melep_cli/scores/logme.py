"""LogME on the penultimate features, one evidence per target label, averaged: higher is better.

K. You, Y. Liu, J. Wang, M. Long, "LogME: Practical Assessment of Pre-trained Models for Transfer Learning",
ICML 2021 (PMLR 139), and the fixed-point iteration of its JMLR version, K. You, Y. Liu, Z. Zhang, J. Wang,
M. I. Jordan, M. Long, "Ranking and Tuning Pre-trained Models: A New Paradigm for Exploiting Model Hubs",
JMLR 23 (2022), arXiv:2110.10545; code thuml/LogME, LogME.py, `LogME(regression=True)._fit_fixed_point`.

Each 0/1 target label y is a regression target (as thuml does for multi-label) of Bayesian linear regression on the
features F (n x D): y = F m + N(0, 1/beta), m ~ N(0, I/alpha). With A = alpha I + beta F'F, m = beta A^-1 F'y,
    L = D/2 log alpha + n/2 log beta - n/2 log 2pi - 1/2 log det A - beta/2 |y - F m|^2 - alpha/2 |m|^2
is maximised over (alpha, beta); LogME is L / n. With sigma_i the k = min(n, D) eigenvalues of F'F (the other
D - k are 0), t = alpha / beta, r_i = sigma_i / t: log det A = sum_i log(alpha + beta sigma_i) + (D - k) log alpha,
    L = n/2 log beta - 1/2 sum_i log(1 + r_i) - beta/2 res - alpha/2 |m|^2 - n/2 log 2pi,
    |m|^2 = sum_i sigma_i p_i / (t + sigma_i)^2,   res = rest + sum_i p_i / (1 + r_i)^2,
p_i the squared projection of y on the i-th left singular vector of F, rest = |y|^2 - sum_i p_i. The fixed point
(MacKay, Neural Computation 1992): gamma = sum r / (1 + r), alpha <- gamma / |m|^2, beta <- (n - gamma) / res.
Two corrections of thuml's `_fit_fixed_point`: (1) the (D - k)/2 log alpha of the zero eigenvalues is kept
(thuml/LogME issue 23; without it the fixed point is not even a stationary point of the formula evaluated);
(2) it iterates until alpha and beta change by less than 1e-10 relatively (at most 10,000 steps), not 11 steps.
No epsilon is added to the denominators. Everything is float64.

F'F is accumulated over blocks of records when n > D (one block of features in memory at a time); when n <= D the
n x n kernel F F' is used instead (over blocks of feature columns). One eigendecomposition serves every label; the
fixed points of all labels run together, vectorised over eigenvalues and labels.

Influence (`influence=True`): record weights v_j enter the sufficient statistics sum v_j f_j f_j', sum v_j y_j f_j,
sum v_j y_j^2 and n = sum v_j. alpha, beta maximise L and m minimises beta/2 |y - F m|^2 + alpha/2 |m|^2, so by
the envelope theorem nothing is differentiated through them: at v = 1,
    dL/dv_j = 1/2 log(beta / 2pi) - beta/2 h_j - beta/2 e_j^2,   h_j = f_j' A^-1 f_j,   e_j = y_j - f_j' m,
and n d(L/n)/dv_j = dL/dv_j - L/n. So record j's influence is -(beta h_j + beta e_j^2) / 2 plus a constant common
to all records, removed by centring (a resample's weights sum to n: a constant never moves it), where
beta h_j = sum_i (V'f_j)_i^2 / (t + sigma_i) with V the eigenvectors of F'F, = sum_i U_ji^2 r_i / (1 + r_i) with
U those of F F'.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import ClassVar

import numpy as np

from melep_cli.errors import InputError
from melep_cli.scores.base import Direction, ModelOutputs, Need, ScoreValue

#: Alpha and beta have converged when both change by less than this, relatively, in one step.
TOLERANCE = 1e-10
MAX_STEPS = 10_000
#: A label fitted by the features with a residual below this share of |y|^2, by fewer independent directions than
#: records, has unbounded evidence (beta -> infinity): no real features explain 0/1 labels that well by chance.
UNBOUNDED = 1e-9
#: Elements of one block of features (8 MiB of float64): all the memory the Gram accumulation adds.
_BLOCK_ELEMENTS = 1 << 20


@dataclass(frozen=True)
class LogmeResult:
    """LogME of every target label: `per_label` (evidence / n, NaN for degenerate labels) and their mean `score`,
    with the maximising `alpha`, `beta` (NaN for degenerate labels), the fixed-point `steps` and whether each
    label `converged` within MAX_STEPS. Influences as in `ScoreValue`."""

    score: float
    per_label: np.ndarray
    alpha: np.ndarray
    beta: np.ndarray
    steps: np.ndarray
    converged: np.ndarray
    records: int
    dimensions: int
    label_names: tuple[str, ...]
    degenerate: tuple[str, ...] = ()
    influence: np.ndarray | None = field(default=None, repr=False)
    per_label_influence: np.ndarray | None = field(default=None, repr=False)


@dataclass(frozen=True)
class LogmeScore:
    """LogME (You et al. 2021/2022) of the penultimate features, the mean over informative target labels."""

    name: ClassVar[str] = "logme"
    direction: ClassVar[Direction] = "higher"
    needs: ClassVar[frozenset[Need]] = frozenset({"features"})

    def compute(
        self, outputs: ModelOutputs, labels: np.ndarray, label_names: Sequence[str], *, influence: bool = False
    ) -> ScoreValue:
        if outputs.features is None:
            raise InputError(
                "logme needs the penultimate features, and the checkpoint declares no features output"
                " (metadata features_output; `melep annotate --features-output NAME` sets it)"
            )
        result = logme(outputs.features, labels, label_names=label_names, influence=influence)
        detail = replace(result, influence=None, per_label_influence=None)  # the influences are kept once, below
        return ScoreValue(
            self.name,
            self.direction,
            result.score,
            result.per_label,
            result.label_names,
            detail,
            influence=result.influence,
            per_label_influence=result.per_label_influence,
        )


def logme(
    features: np.ndarray, labels: np.ndarray, *, label_names: Sequence[str] | None = None, influence: bool = False
) -> LogmeResult:
    """LogME of `features` (n x D) for 0/1 `labels` (n x Y), each label's evidence / n and their mean."""
    features, y = np.asarray(features), np.asarray(labels)
    if features.ndim != 2 or 0 in features.shape or not np.issubdtype(features.dtype, np.number):
        raise InputError(f"features: expected a non-empty 2-D array of numbers, got shape {features.shape}")
    n, dims = features.shape
    if y.ndim != 2 or y.shape[0] != n or not np.isin(y, (0, 1)).all():
        raise InputError(f"labels: expected {n} rows of 0/1 (records x labels), got shape {y.shape}")
    names = tuple(map(str, label_names)) if label_names is not None else tuple(f"y{i}" for i in range(y.shape[1]))
    if len(names) != y.shape[1]:
        raise InputError(f"label names: {len(names)} given for {y.shape[1]} columns")
    positives = y.sum(axis=0, dtype=np.int64)
    informative = (positives > 0) & (positives < n)
    if not informative.any():
        raise InputError(f"every target label is degenerate (all 0 or all 1 over {n} records): LogME has no score")
    targets = y[:, informative].astype(np.float64)

    sigma, basis, projected, squares, rest = _spectrum(features, targets)
    rank = int(np.count_nonzero(sigma))
    exact = rest <= UNBOUNDED * positives[informative]  # |y|^2 = positives
    if rank < n and exact.any():
        label = np.asarray(names)[informative][exact][0]
        raise InputError(
            f"logme: the evidence of label {label} is unbounded: the features reproduce it exactly in {rank}"
            f" dimensions for {n} records (repeated records, or the label among the features); LogME has no value"
        )
    alpha, beta, steps, converged = _fixed_point(sigma, squares, rest, n)
    ratio = sigma[:, None] * (beta / alpha)  # r_i = sigma_i / t, 0 where alpha is infinite
    shrink = 1.0 / (1.0 + ratio)
    res = rest + (squares * shrink**2).sum(axis=0)
    alpha_m2 = beta * (squares * ratio * shrink**2).sum(axis=0)  # alpha |m|^2
    log_det = np.log1p(ratio).sum(axis=0)  # log det A - D log alpha, the zero eigenvalues included
    evidence = (n * np.log(beta) - log_det - beta * res - alpha_m2 - n * np.log(2 * np.pi)) / (2 * n)

    def spread(values: np.ndarray, fill: float) -> np.ndarray:
        full = np.full(y.shape[1], fill, dtype=values.dtype)
        full[informative] = values
        return full

    total_influence = per_label_influence = None
    if influence:
        per_label_influence = np.zeros((n, y.shape[1]))
        per_label_influence[:, informative] = _influence(features, targets, basis, projected, ratio, alpha, beta)
        total_influence = per_label_influence[:, informative].mean(axis=1)
    return LogmeResult(
        score=float(evidence.mean()),
        per_label=spread(evidence, np.nan),
        alpha=spread(alpha, np.nan),
        beta=spread(beta, np.nan),
        steps=spread(steps, 0),
        converged=spread(converged, True),
        records=n,
        dimensions=dims,
        label_names=names,
        degenerate=tuple(name for name, ok in zip(names, informative) if not ok),
        influence=total_influence,
        per_label_influence=per_label_influence,
    )


def _spectrum(features: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, ...]:
    """sigma (the k = min(n, D) eigenvalues of F'F, tiny ones set to 0), their eigenvectors (V: D x k when n > D,
    U: n x n otherwise), the projections (V'F'y or U'y), the squared projections p and `rest` of each label."""
    n, dims = features.shape
    if n > dims:  # D x D Gram matrix, streamed over blocks of records
        gram, cross = np.zeros((dims, dims)), np.zeros((dims, targets.shape[1]))
        for rows, block in _row_blocks(features):
            gram += block.T @ block
            cross += block.T @ targets[rows]
        sigma, basis = np.linalg.eigh(gram)
        projected = basis.T @ cross
    else:  # n x n kernel, streamed over blocks of feature columns
        kernel = np.zeros((n, n))
        for block in _column_blocks(features):
            kernel += block @ block.T
        sigma, basis = np.linalg.eigh(kernel)
        projected = basis.T @ targets
    null = sigma <= max(sigma.max(), 0.0) * max(n, dims) * np.finfo(np.float64).eps
    sigma = np.where(null, 0.0, sigma)
    with np.errstate(divide="ignore", invalid="ignore"):
        squares = projected**2 if n <= dims else projected**2 / sigma[:, None]  # (V'F'y)^2 / sigma = (U'y)^2
    if n > dims:
        squares[null] = 0.0
        rest = np.maximum((targets**2).sum(axis=0) - squares.sum(axis=0), 0.0)  # the least-squares residual
    else:  # U is complete: the part of y outside the span is on the null eigenvectors
        rest = squares[null].sum(axis=0)
        squares[null] = 0.0
    return sigma, basis, projected, squares, rest


def _fixed_point(
    sigma: np.ndarray, squares: np.ndarray, rest: np.ndarray, n: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """alpha, beta, steps and convergence of every label (columns of `squares`), from alpha = beta = 1.

    A label with no projection on F (|m|^2 = 0) has its maximum at alpha = infinity (m = 0): it is taken there,
    also when alpha runs away until |m|^2 underflows (a label the features barely explain)."""
    labels = squares.shape[1]
    alpha, beta = np.ones(labels), np.ones(labels)
    steps, converged = np.zeros(labels, dtype=np.int64), np.zeros(labels, dtype=bool)
    active = np.arange(labels)
    column = sigma[:, None]
    for step in range(1, MAX_STEPS + 1):
        t, part = alpha[active] / beta[active], squares[:, active]
        with np.errstate(over="ignore"):
            gamma = (column / (column + t)).sum(axis=0)
            m2 = (column * part / (column + t) ** 2).sum(axis=0)
            res = rest[active] + (part * (t / (column + t)) ** 2).sum(axis=0)
        unexplained = m2 == 0.0
        with np.errstate(divide="ignore", invalid="ignore"):
            new_alpha = np.where(unexplained, np.inf, gamma / m2)
        new_beta = np.where(unexplained, n / (rest[active] + part.sum(axis=0)), (n - gamma) / res)
        finished = unexplained | (
            (np.abs(new_alpha - alpha[active]) <= TOLERANCE * alpha[active])
            & (np.abs(new_beta - beta[active]) <= TOLERANCE * beta[active])
        )
        alpha[active], beta[active], steps[active] = new_alpha, new_beta, step
        converged[active[finished]] = True
        active = active[~finished]
        if not active.size:
            break
    return alpha, beta, steps, converged


def _influence(
    features: np.ndarray,
    targets: np.ndarray,
    basis: np.ndarray,
    projected: np.ndarray,
    ratio: np.ndarray,
    alpha: np.ndarray,
    beta: np.ndarray,
) -> np.ndarray:
    """Each record's influence on each informative label's evidence / n (n x Y'), centred; see the module doc."""
    n = features.shape[0]
    influence = np.empty(targets.shape)
    if n > features.shape[1]:
        inverse = (beta / alpha) / (1.0 + ratio)  # beta / (alpha + beta sigma_i) = 1 / (t + sigma_i): D x Y'
        coefficients = inverse * projected  # V'm = diag(1 / (t + sigma)) V'F'y
        for rows, block in _row_blocks(features):
            rotated = block @ basis  # V'f_j of each record
            error = targets[rows] - rotated @ coefficients
            influence[rows] = -(rotated**2 @ inverse + beta * error**2) / 2
    else:
        shrink = ratio / (1.0 + ratio)
        error = basis @ (projected / (1.0 + ratio))  # y - F m = U diag(1 / (1 + r)) U'y
        step = max(1, _BLOCK_ELEMENTS // n)  # rows of U squared at a time
        for start in range(0, n, step):
            rows = slice(start, start + step)
            influence[rows] = -(basis[rows] ** 2 @ shrink + beta * error[rows] ** 2) / 2
    return influence - influence.mean(axis=0)


def _row_blocks(features: np.ndarray) -> Iterator[tuple[slice, np.ndarray]]:
    """Blocks of records of `features` in float64, each checked finite."""
    n, dims = features.shape
    step = max(64, _BLOCK_ELEMENTS // dims)
    for start in range(0, n, step):
        rows = slice(start, min(start + step, n))
        yield rows, _finite(np.asarray(features[rows], dtype=np.float64), start, 0)


def _column_blocks(features: np.ndarray) -> Iterator[np.ndarray]:
    """Blocks of feature columns of `features` in float64, each checked finite."""
    n, dims = features.shape
    step = max(1, _BLOCK_ELEMENTS // n)
    for start in range(0, dims, step):
        yield _finite(np.asarray(features[:, start : start + step], dtype=np.float64), 0, start)


def _finite(block: np.ndarray, row: int, column: int) -> np.ndarray:
    bad = ~np.isfinite(block)
    if bad.any():
        i, j = np.argwhere(bad)[0]
        raise InputError(
            f"features: {int(bad.sum())} non-finite value(s) in a block, first {block[i, j]}"
            f" at record {row + i}, column {column + j}"
        )
    return block
