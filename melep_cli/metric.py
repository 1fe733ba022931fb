"""MELEP, the pure core: arrays in, numbers out, no I/O.

MELEP (Nguyen, Duong & Do, J. Healthcare Informatics Research 2024) is LEEP applied to every
(target label y, source label z) pair of binary problems. Lower is better. The definition
followed here, step by step, is `shared/spec/MELEP.md`:

- joint tables P(t, s) for all pairs at once are small matrix products over blocks of records;
- the log term is accumulated over blocks of records (in an odds form that needs one log per
  element, see `_pair_scores`), blocks spread over threads, so nothing of size n x Y x Z is ever
  allocated and temporary memory stays O(block);
- everything is float64; theta is clipped into [eps, 1 - eps] so saturated outputs stay finite.

`melep()` is the one-shot call; `MelepAccumulator` takes a forward pass batch by batch and
gives the same result. With `influence=True` it also returns each record's influence on the score
(`_pair_influence`): the first-order change of the score when that record's weight changes, from which
`melep_cli.bootstrap` draws resampled scores without recomputing the metric.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Literal, get_args

import numpy as np

from melep_cli.errors import InputError

Weighting = Literal["prevalence", "paper", "uniform"]
Activation = Literal["logits", "probabilities", "softmax"]
WEIGHTINGS: tuple[str, ...] = get_args(Weighting)
ACTIVATIONS: tuple[str, ...] = get_args(Activation)

#: theta is clipped into [EPS, 1 - EPS]: P(s) can then never be 0 (the authors' code gives NaN).
EPS = 1e-12
#: Elements of one (records x source labels) work block in the log term: about 1 MiB of float64,
#: so a block and its gather buffer stay in a core's L2 cache; also bounds temporary memory.
_BLOCK_ELEMENTS = 1 << 17
#: Threads for the blocks: numpy releases the GIL in its loops, so blocks run in parallel.
_THREADS = max(1, min(8, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1))


@dataclass(frozen=True)
class MelepResult:
    """Everything one MELEP computation produces.

    `per_label` (m(y)) and the rows of `phi` are NaN for degenerate target labels (all 0 or
    all 1 over the records), which carry no information and are left out of `score`.
    `label_weights` are the effective weights, so `score == nansum(label_weights * per_label)`.
    """

    score: float
    per_label: np.ndarray
    phi: np.ndarray
    label_weights: np.ndarray
    source_weights: np.ndarray
    positives: np.ndarray
    records: int
    weighting: str
    label_names: tuple[str, ...]
    source_names: tuple[str, ...]
    degenerate: tuple[str, ...] = field(default=())
    #: With `influence=True`: (n,) and (n, Y) arrays, record i's influence on `score` and on each m(y), scaled
    #: so that a resample with record multiplicities w (summing to n) scores about score + mean(w * influence).
    #: They average to 0 over the records; columns of degenerate labels are 0.
    influence: np.ndarray | None = field(default=None, repr=False)
    per_label_influence: np.ndarray | None = field(default=None, repr=False)

    @property
    def prevalence(self) -> np.ndarray:
        """Fraction of records that carry each target label."""
        return self.positives / self.records

    @property
    def entropy(self) -> np.ndarray:
        """H(y): the value of phi(y, z) for an output carrying no information about y."""
        return binary_entropy(self.prevalence)


def binary_entropy(p: np.ndarray | float) -> np.ndarray:
    """Binary entropy in nats, 0 at p = 0 and p = 1."""
    p = np.asarray(p, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        h = -(p * np.log(p) + (1 - p) * np.log1p(-p))
    return np.where((p <= 0) | (p >= 1), 0.0, h)


def activate(outputs: np.ndarray, activation: str, *, what: str = "outputs") -> np.ndarray:
    """Turn raw checkpoint outputs into probabilities theta, in float64.

    `logits`: sigmoid, computed in float64 (a float32 sigmoid saturates to 1.0 above ~17);
    `probabilities`: used as they are (must lie in [0, 1]); `softmax`: multi-class logits.
    """
    if activation not in ACTIVATIONS:
        raise InputError(f"unknown activation {activation!r}: use one of {', '.join(ACTIVATIONS)}")
    values = _as_matrix(outputs, what)
    _check_finite(values, what)
    if activation == "logits":
        # In place when `values` is already our own float64 copy: saves one n x Z array.
        return sigmoid(values, out=values if not np.may_share_memory(values, outputs) else None)
    if activation == "softmax":
        return softmax(values)
    low, high = values.min(initial=0.0), values.max(initial=1.0)
    if low < 0 or high > 1:
        raise InputError(
            f"{what}: activation 'probabilities' needs values in [0, 1], found {low:g} .. {high:g}"
            " (pass 'logits' if these are raw scores)"
        )
    return values


def probabilities_declared_as(outputs: np.ndarray, activation: str) -> str | None:
    """Why outputs declared `logits` or `softmax` look like probabilities already, or None.

    Every row in [0, 1] summing to 1 is a softmax's output (a model whose last layer is a softmax: a second
    softmax would flatten it); every value in [0, 1] under `logits` is a sigmoid's (a second sigmoid squeezes
    it into [0.5, 0.73]). Raw logits spread over both signs, so neither happens by chance on real outputs.
    """
    if activation not in ("logits", "softmax"):
        return None
    values = np.asarray(outputs)
    if values.ndim != 2 or values.size == 0 or not np.issubdtype(values.dtype, np.floating):
        return None
    if not np.isfinite(values).all() or values.min() < 0 or values.max() > 1:
        return None
    if values.shape[1] > 1 and np.allclose(values.sum(axis=1, dtype=np.float64), 1.0, atol=1e-4):
        return f"every output row lies in [0, 1] and sums to 1, as a softmax's do, but they are declared {activation}"
    if activation == "logits":
        return "every output lies in [0, 1], as probabilities do, but they are declared logits (a sigmoid is applied)"
    return None


def _activate_in_place(values: np.ndarray, activation: str) -> np.ndarray:
    """`activate` of a float64 n x Z array the caller owns and no longer needs: the sigmoid overwrites it."""
    if activation != "logits" or values.dtype != np.float64 or values.ndim != 2:
        return activate(values, activation)
    _check_finite(values, "outputs")
    return sigmoid(values, out=values)


#: Rows of one block of `sigmoid`: its temporaries stay a few MiB whatever n is.
_SIGMOID_BLOCK_ROWS = 1 << 14


def sigmoid(logits: np.ndarray, *, out: np.ndarray | None = None) -> np.ndarray:
    """The logistic function of float64 `logits`, 1 / (1 + exp(-x)), written as exp(-|x|) / (1 + exp(-|x|))
    for negative x so that no exp overflows (the form scipy.special.expit uses, without its 0.13 s import,
    which every re-rank from stored outputs would pay). `out` may be `logits` itself."""
    result = np.empty_like(logits, dtype=np.float64) if out is None else out
    for start in range(0, len(logits), _SIGMOID_BLOCK_ROWS):
        block = np.asarray(logits[start : start + _SIGMOID_BLOCK_ROWS], dtype=np.float64)
        negative = block < 0
        decay = np.exp(-np.abs(block))  # in (0, 1]: never overflows
        result[start : start + _SIGMOID_BLOCK_ROWS] = np.where(negative, decay, 1.0) / (1.0 + decay)
    return result


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax of float64 `logits` (each row's maximum subtracted first, so no exp overflows)."""
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    shifted /= shifted.sum(axis=1, keepdims=True)
    return shifted


def melep(
    outputs: np.ndarray,
    labels: np.ndarray,
    *,
    activation: Activation = "probabilities",
    weighting: Weighting = "prevalence",
    source_weights: Sequence[float] | np.ndarray | None = None,
    label_names: Sequence[str] | None = None,
    source_names: Sequence[str] | None = None,
    eps: float = EPS,
    influence: bool = False,
) -> MelepResult:
    """MELEP of checkpoint `outputs` (n x Z) for target `labels` (n x Y, 0/1). Lower is better.

    `source_weights` (Z non-negative numbers, normalised here) replace the plain mean over
    source labels, e.g. the source label distribution when it is known. `influence`: also return
    each record's influence on the score and on m(y) (`MelepResult.influence`), for the bootstrap.
    """
    theta = activate(outputs, activation)
    label_matrix = _check_labels(labels, theta.shape[0])
    return _melep_from_probabilities(
        theta, label_matrix, weighting, source_weights, label_names, source_names, eps, influence=influence
    )


class MelepAccumulator:
    """MELEP fed batch by batch during a forward pass; `compute()` equals the one-shot `melep()`.

    Keeps the raw outputs (n x Z, their own dtype, so the float64 activation later is exact)
    and the labels (n x Y, one byte each); never the signals.
    """

    def __init__(
        self,
        *,
        activation: Activation = "probabilities",
        weighting: Weighting = "prevalence",
        source_weights: Sequence[float] | np.ndarray | None = None,
        label_names: Sequence[str] | None = None,
        source_names: Sequence[str] | None = None,
        eps: float = EPS,
    ) -> None:
        if activation not in ACTIVATIONS:
            raise InputError(f"unknown activation {activation!r}: use one of {', '.join(ACTIVATIONS)}")
        if weighting not in WEIGHTINGS:
            raise InputError(f"unknown weighting {weighting!r}: use one of {', '.join(WEIGHTINGS)}")
        self.activation = activation
        self.weighting = weighting
        self.source_weights = source_weights
        self.label_names = label_names
        self.source_names = source_names
        self.eps = eps
        self._outputs: list[np.ndarray] = []
        self._labels: list[np.ndarray] = []
        self._records = 0

    @property
    def records(self) -> int:
        """Records seen so far."""
        return self._records

    def update(self, outputs: np.ndarray, labels: np.ndarray) -> None:
        """Add one batch: outputs (b x Z) and labels (b x Y) of the same b records."""
        batch = _as_matrix(outputs, "outputs")
        _check_finite(batch, "outputs")
        batch_labels = _check_labels(labels, batch.shape[0])
        if self._outputs and batch.shape[1] != self._outputs[0].shape[1]:
            raise InputError(
                f"outputs: batch has {batch.shape[1]} columns, earlier batches had {self._outputs[0].shape[1]}"
            )
        if self._labels and batch_labels.shape[1] != self._labels[0].shape[1]:
            raise InputError(
                f"labels: batch has {batch_labels.shape[1]} columns, earlier batches had {self._labels[0].shape[1]}"
            )
        self._outputs.append(np.array(outputs, copy=True).reshape(batch.shape))
        self._labels.append(batch_labels)
        self._records += batch.shape[0]

    def compute(self) -> MelepResult:
        """MELEP over every record seen."""
        if not self._outputs:
            raise InputError("no records: MELEP needs at least one labelled record")
        # Straight into float64 (the values activate() would convert to), then activated in place: one n x Z
        # array instead of a concatenated copy plus an activated copy.
        outputs = np.concatenate(self._outputs, dtype=np.float64, casting="unsafe")  # as astype() casts
        labels = np.concatenate(self._labels)
        theta = _activate_in_place(outputs, self.activation)
        return _melep_from_probabilities(
            theta, labels, self.weighting, self.source_weights, self.label_names, self.source_names, self.eps
        )


def _melep_from_probabilities(
    theta: np.ndarray,
    labels: np.ndarray,
    weighting: str,
    source_weights: Sequence[float] | np.ndarray | None,
    label_names: Sequence[str] | None,
    source_names: Sequence[str] | None,
    eps: float,
    *,
    influence: bool = False,
) -> MelepResult:
    if weighting not in WEIGHTINGS:
        raise InputError(f"unknown weighting {weighting!r}: use one of {', '.join(WEIGHTINGS)}")
    n, n_source = theta.shape
    n_target = labels.shape[1]
    target_names = _names(label_names, n_target, "y", "label names")
    output_names = _names(source_names, n_source, "out", "source label names")
    source_w = _source_weights(source_weights, n_source)

    positives = labels.sum(axis=0, dtype=np.int64)
    informative = (positives > 0) & (positives < n)
    if not informative.any():
        raise InputError(f"every target label is degenerate (all 0 or all 1 over {n} records): MELEP has no score")

    phi = np.full((n_target, n_source), np.nan)
    used = labels[:, informative]
    cond = _conditionals(theta, used, eps, 1.0 - eps, _blocks(n, n_source))
    phi[informative] = _pair_scores(theta, used, eps, cond)
    per_label = phi @ source_w

    label_weights = _label_weights(weighting, positives, n, informative)
    score = float(np.sum(label_weights[informative] * per_label[informative]))
    degenerate = tuple(name for name, ok in zip(target_names, informative) if not ok)
    total_influence = per_label_influence = None
    if influence:
        per_label_influence = np.zeros((n, n_target))
        per_label_influence[:, informative] = _pair_influence(theta, used, source_w, eps, cond)
        total_influence = per_label_influence @ label_weights + _weights_influence(
            weighting, labels, positives, informative, per_label, score
        )
    return MelepResult(
        score=score,
        per_label=per_label,
        phi=phi,
        label_weights=label_weights,
        source_weights=source_w,
        positives=positives,
        records=n,
        weighting=weighting,
        label_names=target_names,
        source_names=output_names,
        degenerate=degenerate,
        influence=total_influence,
        per_label_influence=per_label_influence,
    )


def _pair_scores(theta: np.ndarray, labels: np.ndarray, eps: float, cond: np.ndarray | None = None) -> np.ndarray:
    """phi(y, z) for informative labels: Y x Z, from theta (n x Z, clipped here) and labels (n x Y).

    `cond`: the conditionals C(t | s) of pass 1 when the caller has them (`_conditionals`).

    Two passes over blocks of records, so temporaries stay O(block) whatever n is:
    1. the joint tables n * P(t, s) of every (y, z) pair: small matrix products per block;
    2. the log term, sum over records of log(C(t|0) * (1 - theta) + C(t|1) * theta) with t the
       record's label. Written as log(1 - theta) + log C(t|1) + log(k_t + odds), with
       k_t = C(t|0) / C(t|1) and odds = theta / (1 - theta): log(1 - theta) does not depend on
       y and is summed once per block, log C(t|1) is a constant per (y, t), and what is left per
       element is one addition and one log. Records are gathered by label value (not selected
       with np.where) so each (y, t) applies one row of k_t by broadcasting. Every term is a sum
       or product of positive numbers, so nothing cancels and float64 keeps ~1e-15 relative error.
       Blocks are spread over threads (numpy releases the GIL in these loops); their partial
       sums are added in block order, so the result does not depend on the thread count.
    The log identity needs 0 < theta < 1 after clipping, i.e. 0 < eps with 1 - eps < 1 in
    float64 (the default eps is 1e-12); otherwise the direct formula is used block by block.
    """
    n, n_source = theta.shape
    blocks = _blocks(n, n_source)
    low, high = eps, 1.0 - eps
    if cond is None:
        cond = _conditionals(theta, labels, low, high, blocks)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = cond[:, 0] / cond[:, 1]  # k_t: [t, y, z]
        log_c1 = np.log(cond[:, 1])  # log C(t | 1): [t, y, z]

    fast = low > 0.0 and high < 1.0 and bool(np.all(np.isfinite(ratio)) and np.all(np.isfinite(log_c1)))
    if fast:
        # Transposed (Z x records) so each k_t row broadcasts as a column over contiguous records.
        ratio_columns = np.ascontiguousarray(ratio[:, :, :, None])  # [t, y, z, 1]

        def log_block(block: slice) -> np.ndarray:
            return _log_sums_by_odds(theta[block], labels[block], low, high, ratio_columns)

    else:

        def log_block(block: slice) -> np.ndarray:
            return _log_sums_direct(theta[block], labels[block], low, high, cond)

    # Pass 2: the log term, block partial sums added in block order (deterministic).
    log_sum = np.zeros((labels.shape[1], n_source))
    for partial in _map_blocks(log_block, blocks):
        log_sum += partial
    if fast:
        positives = labels.sum(axis=0, dtype=np.int64).astype(np.float64)
        counts = np.stack([n - positives, positives])[:, :, None]  # [t, y, 1]
        log_sum += (counts * log_c1).sum(axis=0)
    return -log_sum / n


def pair_influence(
    outputs: np.ndarray,
    labels: np.ndarray,
    pair_weights: np.ndarray,
    *,
    activation: Activation = "probabilities",
    eps: float = EPS,
) -> np.ndarray:
    """Each record's influence on sum_z pair_weights[y, z] * phi(y, z), for every target label: (n, Y).

    For scores built on the phi matrix (e.g. the best source output per label): a resample with record
    multiplicities w scores about that sum + mean((w - 1) * influence). Columns of degenerate labels are 0.
    """
    theta = activate(outputs, activation)
    label_matrix = _check_labels(labels, theta.shape[0])
    weights = np.asarray(pair_weights, dtype=np.float64)
    if weights.shape != (label_matrix.shape[1], theta.shape[1]):
        raise InputError(f"pair weights: expected shape {(label_matrix.shape[1], theta.shape[1])}, got {weights.shape}")
    positives = label_matrix.sum(axis=0, dtype=np.int64)
    informative = (positives > 0) & (positives < theta.shape[0])
    influence = np.zeros((theta.shape[0], label_matrix.shape[1]))
    if informative.any():
        influence[:, informative] = _pair_influence(theta, label_matrix[:, informative], weights[informative], eps)
    return influence


def _blocks(n: int, n_source: int) -> list[slice]:
    """Blocks of records of about `_BLOCK_ELEMENTS` elements of an n x Z array."""
    rows = max(64, _BLOCK_ELEMENTS // max(n_source, 1))
    return [slice(start, min(start + rows, n)) for start in range(0, n, rows)]


def _conditionals(theta: np.ndarray, labels: np.ndarray, low: float, high: float, blocks: list[slice]) -> np.ndarray:
    """C(t | s) for every (y, z) pair: [t, s, y, z], from the joint sums n * P(t, s) over blocks of records."""
    n_target, n_source = labels.shape[1], theta.shape[1]
    joint = np.zeros((n_target, 2, 2 * n_source))  # [y, t, (s, z)]
    for partial in _map_blocks(lambda block: _joint_sums(theta[block], labels[block], low, high), blocks):
        joint += partial
    joint = joint.reshape(n_target, 2, 2, n_source).transpose(1, 2, 0, 3)  # [t, s, y, z]
    marginal = joint.sum(axis=0)  # [s, y, z]: n * P(s), the same for every y
    with np.errstate(divide="ignore", invalid="ignore"):
        return joint / marginal


def _pair_influence(
    theta: np.ndarray, labels: np.ndarray, source_weights: np.ndarray, eps: float, cond: np.ndarray | None = None
) -> np.ndarray:
    """Each record's influence on m(y) = sum_z source_weights[z] * phi(y, z): n x Y, for informative labels.

    `source_weights`: (Z,), the same for every label, or (Y, Z), one row per label.

    phi(y, z) is a smooth function of record weights v (all 1 here): with L_i = C(t_i|0) theta0_i + C(t_i|1)
    theta1_i and the conditionals C built from v-weighted joint sums, n * d phi / d v_j is
        -(log L_j + phi) - sum_s theta_s[j] / P(s) * (g(t_j, s) - sum_t C(t|s) g(t, s)),
        g(t, s) = (1/n) sum over records i with label t of theta_s[i] / L_i,
    the first term the record's own log term, the second its pull on the conditionals. A resample with
    multiplicities w then scores phi + mean((w - 1) * d), the linear (influence-function) bootstrap.
    One pass over blocks of records gives each record's source-weighted log term and the sums of 1/L and
    theta/L; the second term is then two (n x Z) @ (Z x Y) products. Temporaries stay O(block).
    """
    n, n_source = theta.shape
    n_target = labels.shape[1]
    blocks = _blocks(n, n_source)
    low, high = eps, 1.0 - eps
    if cond is None:
        cond = _conditionals(theta, labels, low, high, blocks)  # [t, s, y, z]
    intercept = np.ascontiguousarray(cond[:, 0, :, :, None])  # L = C(t|0) + (C(t|1) - C(t|0)) theta: [t, y, z, 1]
    slope = np.ascontiguousarray((cond[:, 1] - cond[:, 0])[:, :, :, None])
    record_logs = np.empty((n, n_target))  # sum_z w_z log L_iyz
    label_weights = np.broadcast_to(source_weights, (n_target, n_source))

    def block_sums(block: slice) -> tuple[np.ndarray, np.ndarray]:
        clipped = np.clip(theta[block].T, low, high)  # Z x b
        carries = labels[block].astype(bool)
        reciprocal = np.zeros((2, n_target, n_source))  # sum over records with label t of 1 / L
        weighted = np.zeros((2, n_target, n_source))  # ... of theta / L
        for y in range(n_target):
            negatives = np.flatnonzero(~carries[:, y])
            order = np.concatenate([negatives, np.flatnonzero(carries[:, y])])
            gathered = np.take(clipped, order, axis=1)
            for t, group in enumerate((slice(None, negatives.size), slice(negatives.size, None))):
                values = gathered[:, group]
                likelihood = values * slope[t, y] + intercept[t, y]
                inverse = np.reciprocal(likelihood)
                reciprocal[t, y] = inverse.sum(axis=1)
                weighted[t, y] = np.einsum("zb,zb->z", inverse, values)
                np.log(likelihood, out=likelihood)
                record_logs[block.start + order[group], y] = label_weights[y] @ likelihood
        return reciprocal, weighted

    inverse_sums = np.zeros((2, n_target, n_source))
    theta_sums = np.zeros((2, n_target, n_source))
    for reciprocal, weighted in _map_blocks(block_sums, blocks):
        inverse_sums += reciprocal
        theta_sums += weighted
    g = np.stack([inverse_sums - theta_sums, theta_sums], axis=1) / n  # g(t, s): [t, s, y, z]
    theta1_mean = np.clip(theta, low, high).mean(axis=0)
    source_mean = np.stack([1.0 - theta1_mean, theta1_mean])[:, None, :]  # P(s): [s, 1, z]
    pull = (g - (cond * g).sum(axis=0)) / source_mean  # [t, s, y, z]
    pull *= source_weights
    clipped = np.clip(theta, low, high)
    second = np.where(
        labels.astype(bool),
        pull[1, 0].sum(axis=1) + clipped @ (pull[1, 1] - pull[1, 0]).T,
        pull[0, 0].sum(axis=1) + clipped @ (pull[0, 1] - pull[0, 0]).T,
    )
    influence = -record_logs - second
    influence -= influence.mean(axis=0)
    return influence


def _weights_influence(
    weighting: str,
    labels: np.ndarray,
    positives: np.ndarray,
    informative: np.ndarray,
    per_label: np.ndarray,
    score: float,
) -> np.ndarray:
    """Each record's influence on the score through the label weights (they follow the resampled prevalence)."""
    n = labels.shape[0]
    carries = labels[:, informative].astype(np.float64)
    values = per_label[informative]
    pos = positives[informative].astype(np.float64)
    if weighting == "prevalence":  # w(y) = P(y) / sum P
        return (n / pos.sum()) * (carries @ values - score * carries.sum(axis=1))
    if weighting == "paper":  # w(y) = (P(y) / (N - P(y))) / Y
        return n * ((carries * n - pos) @ (values / ((n - pos) ** 2 * informative.sum())))
    return np.zeros(n)


def _joint_sums(theta: np.ndarray, labels: np.ndarray, low: float, high: float) -> np.ndarray:
    """One block's joint sums [y, t, (s, z)]: records with label t summed over theta_s, s = 0 then 1.

    One small (2 x b) @ (b x 2Z) product per target label rather than one (2Y x b) @ (b x 2Z):
    OpenBLAS runs products this small on the calling thread, so the blocks can be spread over
    threads; a multi-threaded BLAS inside each call slows to a crawl when the cores are shared.
    """
    clipped = np.clip(theta, low, high)
    both = np.concatenate([1.0 - clipped, clipped], axis=1)
    positive = labels.astype(np.float64)
    selectors = np.stack([1.0 - positive, positive])  # [t, record, y]
    sums = np.empty((labels.shape[1], 2, both.shape[1]))
    for y in range(labels.shape[1]):
        np.matmul(selectors[:, :, y], both, out=sums[y])
    return sums


def _map_blocks(function: Callable[[slice], np.ndarray], blocks: list[slice]) -> Iterator[np.ndarray]:
    """`function` of each block, yielded in block order; computed on up to `_THREADS` threads."""
    workers = min(_THREADS, len(blocks))
    if workers <= 1:
        yield from map(function, blocks)
        return
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="melep-metric") as pool:
        yield from pool.map(function, blocks)


def _log_sums_by_odds(
    theta: np.ndarray, labels: np.ndarray, low: float, high: float, ratio_columns: np.ndarray
) -> np.ndarray:
    """One block's sums over records of log(1 - theta) + log(k_t + theta / (1 - theta)): Y x Z."""
    n_target = labels.shape[1]
    odds = np.empty((theta.shape[1], theta.shape[0]))  # Z x b, C-contiguous: records run along rows
    np.clip(theta.T, low, high, out=odds)
    one_minus = 1.0 - odds
    np.divide(odds, one_minus, out=odds)
    np.log(one_minus, out=one_minus)
    log_one_minus = one_minus.sum(axis=1)
    gathered = one_minus  # reused as the gather buffer
    sums = np.empty((n_target, odds.shape[0]))
    carries = labels.astype(bool)
    for y in range(n_target):
        # Records with label 0 first, then label 1: one gather, then each group gets its own k_t.
        negatives = np.flatnonzero(~carries[:, y])
        order = np.concatenate([negatives, np.flatnonzero(carries[:, y])])
        np.take(odds, order, axis=1, out=gathered, mode="clip")
        split = negatives.size
        np.add(gathered[:, :split], ratio_columns[0, y], out=gathered[:, :split])
        np.add(gathered[:, split:], ratio_columns[1, y], out=gathered[:, split:])
        np.log(gathered, out=gathered)
        np.add(log_one_minus, gathered.sum(axis=1), out=sums[y])
    return sums


def _log_sums_direct(theta: np.ndarray, labels: np.ndarray, low: float, high: float, cond: np.ndarray) -> np.ndarray:
    """One block's sums over records of log(C(t|0) * (1 - theta) + C(t|1) * theta): Y x Z.

    The plain formula, for an eps that lets theta reach 0 or 1 (where the odds form breaks).
    """
    clipped = np.clip(theta, low, high)
    one_minus = 1.0 - clipped
    sums = np.empty((labels.shape[1], theta.shape[1]))
    for y in range(labels.shape[1]):
        carries = labels[:, y].astype(bool)[:, None]
        likelihood = np.where(carries, cond[1, 0, y], cond[0, 0, y]) * one_minus
        likelihood += np.where(carries, cond[1, 1, y], cond[0, 1, y]) * clipped
        np.log(likelihood, out=likelihood)
        sums[y] = likelihood.sum(axis=0)
    return sums


def _label_weights(weighting: str, positives: np.ndarray, n: int, informative: np.ndarray) -> np.ndarray:
    """Effective per-target-label weights (0 for degenerate labels), summing the score directly."""
    weights = np.zeros(positives.shape, dtype=np.float64)
    pos = positives[informative].astype(np.float64)
    count = int(informative.sum())
    if weighting == "prevalence":
        prevalence = pos / n
        weights[informative] = prevalence / prevalence.sum()
    elif weighting == "paper":
        weights[informative] = (pos / (n - pos)) / count
    else:
        weights[informative] = 1.0 / count
    return weights


def _source_weights(source_weights: Sequence[float] | np.ndarray | None, n_source: int) -> np.ndarray:
    if source_weights is None:
        return np.full(n_source, 1.0 / n_source)
    weights = np.asarray(source_weights, dtype=np.float64).reshape(-1)
    if weights.shape != (n_source,):
        raise InputError(f"source weights: {weights.size} values given for {n_source} source labels")
    if not np.all(np.isfinite(weights)) or np.any(weights < 0) or weights.sum() <= 0:
        raise InputError("source weights: need finite, non-negative numbers with a positive sum")
    return weights / weights.sum()


def _names(names: Sequence[str] | None, count: int, prefix: str, what: str) -> tuple[str, ...]:
    if names is None:
        return tuple(f"{prefix}{i}" for i in range(count))
    names = tuple(str(name) for name in names)
    if len(names) != count:
        raise InputError(f"{what}: {len(names)} given for {count} columns")
    if len(set(names)) != len(names):
        duplicated = sorted({name for name in names if names.count(name) > 1})
        raise InputError(f"{what}: duplicated {', '.join(duplicated)}")
    return names


def _as_matrix(values: np.ndarray, what: str) -> np.ndarray:
    """A float64 n x k view of `values` (a 1-D array is one column)."""
    array = np.asarray(values)
    if array.dtype == object or not (np.issubdtype(array.dtype, np.number) or np.issubdtype(array.dtype, np.bool_)):
        raise InputError(f"{what}: expected numbers, got dtype {array.dtype}")
    if array.ndim == 1:
        array = array[:, None]
    if array.ndim != 2:
        raise InputError(f"{what}: expected a 2-D array (records x columns), got shape {array.shape}")
    if array.shape[0] == 0:
        raise InputError(f"{what}: no records (shape {array.shape}): MELEP needs at least one")
    if array.shape[1] == 0:
        raise InputError(f"{what}: no columns (shape {array.shape})")
    return array.astype(np.float64, copy=False)


def _check_finite(values: np.ndarray, what: str) -> None:
    finite = np.isfinite(values)
    if not finite.all():
        row, col = np.argwhere(~finite)[0]
        bad = int((~finite).sum())
        raise InputError(
            f"{what}: {bad} non-finite value(s) in shape {values.shape}, first {values[row, col]} "
            f"at record {row}, column {col}"
        )


def _check_labels(labels: np.ndarray, n: int) -> np.ndarray:
    """Labels as an n x Y uint8 matrix of 0/1, or an InputError naming what is wrong."""
    matrix = _as_matrix(labels, "labels")
    if matrix.shape[0] != n:
        raise InputError(f"labels have {matrix.shape[0]} records (shape {matrix.shape}) but outputs have {n}")
    binary = (matrix == 0) | (matrix == 1)
    if not binary.all():
        row, col = np.argwhere(~binary)[0]
        raise InputError(
            f"labels must be 0 or 1: found {matrix[row, col]} at record {row}, column {col} (shape {matrix.shape})"
        )
    return matrix.astype(np.uint8)
