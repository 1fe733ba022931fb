"""A cross-validated linear probe on the penultimate features: the cheapest stand-in for retraining the head.

The linear-evaluation protocol of representation learning (a linear model fitted on frozen features,
e.g. Kornblith, Shlens & Le, "Do Better ImageNet Models Transfer Better?", CVPR 2019), made a
transferability score for multi-label targets: higher is better.

1. Features standardised over the target records (mean 0, standard deviation 1; constant dimensions dropped).
2. Wide features (more than `projection_dims` = k = 1,024 dimensions left) are projected to k dimensions by a
   seeded Gaussian random projection, entries N(0, 1/k) (Johnson-Lindenstrauss; Achlioptas 2003), when the
   training folds also hold more than k records: it keeps inner products in expectation, and ridge
   predictions depend on the features through inner products only, so the same penalty keeps its meaning.
   With fewer records sklearn solves the (records x records) kernel system exactly and cheaply, unprojected.
   It is an approximation whose error depends on n_train / k. Measured on a real trained Bi-LSTM's flattened
   LSTM states (sample_data's ptbxl_superclass_bilstm, D = 6,400) of 2,992 PTB-XL records, 5 superclasses:
   exact 0.8469, k = 1,024 0.8461 / 0.8511 (projection seeds 0 / 1); but on 1,300 of them (n_train ~ k)
   k = 1,024 gave 0.810 / 0.806 against 0.824, and with n_train ~ 9k (k = 256, 2,992 records) 0.872 against
   0.847: far fewer dimensions than records regularise the probe, about as many let it overfit.
3. Ridge regression of every 0/1 target label at once (one multi-output `sklearn.linear_model.Ridge` fit per
   fold), with an intercept and penalty alpha = `alpha_per_record` x n_train (0.1 per record on
   standardised features), under 5-fold cross-validation (`sklearn.model_selection.KFold`, shuffled) repeated
   with the fixed seeds 0 and 1.
4. Per label, the AUROC (`sklearn.metrics.roc_auc_score`) of the out-of-fold predictions of all records,
   averaged over the repeats; the score is the plain mean over informative labels.

A label is informative when it has at least as many positives and as many negatives as there are folds (5):
with fewer, some folds hold none of them and the pooled out-of-fold AUROC mostly compares the intercepts
of different folds. Other labels get NaN and are left out of the mean.

Bounded cost at any size. Records beyond `max_records` (20,000) are left out: the probe is fitted on a
seeded subsample of that many (the same records for every checkpoint of a target with the same number of
records), so its cost does not grow with n. The features are read in row blocks (4M values for the mean and
variance, 32M for the projection), float32 until projected: memory beyond the caller's array is
O(block + max_records x min(D, projection_dims)), under 0.5 GiB. Measured on 2 cores shared with other work
(load about 4, 20 labels, influence included): n = 10^5 x D = 1,024 float32, 11 s (the 10 ridge fits of
16,000 x 1,024 are most of it); n = 2 x 10^4 x D = 16,000, 9 s (the projection about half); n = 10^5 x
D = 16,000 (6 GiB, memory-mapped from disk), 31 s, most of it reading the subsample's rows from disk.

With `influence=True`, each record's influence on the AUROCs: the out-of-fold predictions are held fixed and
each AUROC is linearised as the two-sample U-statistic it is (DeLong, DeLong & Clarke-Pearson, Biometrics
1988): a positive record i has influence n/n1 (V10_i - AUC), a negative record j n/n0 (V01_j - AUC), with
V10_i the share of negatives scored below i and V01_j the share of positives scored above j (ties 1/2),
n1 and n0 counted in the probe's records; records left out by the subsample have none. So the bootstrap
interval covers the variability of the AUROC given the fitted predictions, not that of the refitting
(folds, projection and subsample are fixed).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from melep_cli.errors import InputError
from melep_cli.scores.base import Direction, ModelOutputs, Need, ScoreValue

#: Feature values read at once (rows x D) for the mean and variance: 32 MiB as float64.
_STATS_VALUES = 1 << 22
#: ... and for the projection, 128 MiB as float32: fewer, taller products run the BLAS several times faster
#: (at D = 16,000, blocks of 262 rows ran at 11 GFLOPS, of 2,048 at about 45, on 2 cores).
_PROJECTION_VALUES = 1 << 25


@dataclass(frozen=True)
class ProbeDetail:
    """What the probe fitted: `records` of the target's `total_records`, `rows` the indices of those records
    (None: all), `dimensions` kept after dropping constant ones, `projected_to` (None: not projected), and
    `per_repeat` (repeats x Y) the AUROCs of each repeat of the cross-validation."""

    records: int
    total_records: int
    rows: np.ndarray | None
    dimensions: int
    projected_to: int | None
    folds: int
    seeds: tuple[int, ...]
    alpha_per_record: float
    per_repeat: np.ndarray
    degenerate: tuple[str, ...]


@dataclass(frozen=True)
class ProbeScore:
    """The cross-validated ridge probe's mean out-of-fold AUROC (see the module docstring); higher is better."""

    alpha_per_record: float = 0.1
    folds: int = 5
    seeds: tuple[int, ...] = (0, 1)
    projection_dims: int = 1024
    max_records: int = 20_000
    #: Seeds the subsample and the projection matrix.
    seed: int = 0

    name: ClassVar[str] = "probe"
    direction: ClassVar[Direction] = "higher"
    needs: ClassVar[frozenset[Need]] = frozenset({"features"})

    def compute(
        self, outputs: ModelOutputs, labels: np.ndarray, label_names: Sequence[str], *, influence: bool = False
    ) -> ScoreValue:
        features = outputs.features
        if features is None:
            raise InputError(
                "the checkpoint declares no features output, and the probe reads the penultimate features",
                hint="name it in the metadata's features_output (melep annotate --features-output NAME sets it)",
            )
        from sklearn.metrics import roc_auc_score  # imported only when a probe runs: 0.4 s of every start-up

        labels, names = _check(features, labels, label_names)
        n = labels.shape[0]
        rows = _subsample(n, self.max_records, self.seed)
        used = labels if rows is None else labels[rows]
        m = used.shape[0]
        positives = used.sum(axis=0, dtype=np.int64)
        informative = (positives >= self.folds) & (m - positives >= self.folds)
        if not informative.any():
            raise InputError(
                f"labels: every target label has fewer than {self.folds} positives or negatives over the {m} "
                "records the probe uses: the probe has no score"
            )
        # The ridge solve costs about n_train x D x min(n_train, D) per fold (sklearn solves the smaller of the
        # X^T X and X X^T systems): a projection is needed only when both exceed projection_dims.
        largest_train = m - m // self.folds
        width = self.projection_dims if largest_train > self.projection_dims else None
        design, dimensions = _design(features, rows, width, self.seed)
        targets = used[:, informative].astype(np.float64)
        per_repeat = np.full((len(self.seeds), labels.shape[1]), np.nan)
        used_influence = np.zeros((m, int(informative.sum())))
        for r, seed in enumerate(self.seeds):
            predictions = _out_of_fold(design, targets, self.folds, seed, self.alpha_per_record)
            per_repeat[r, informative] = [
                roc_auc_score(targets[:, j], predictions[:, j]) for j in range(targets.shape[1])
            ]
            if influence:
                used_influence += _auroc_influence(targets, predictions, per_repeat[r, informative])
        per_label = per_repeat.mean(axis=0)
        value = float(np.mean(per_label[informative]))
        total_influence = per_label_influence = None
        if influence:
            per_label_influence = np.zeros((n, labels.shape[1]))
            # n/m: the influence is n times the derivative in a record's weight, and only the m used records
            # carry weight here; _auroc_influence gave m times it.
            scaled = used_influence * (n / m / len(self.seeds))
            if rows is None:
                per_label_influence[:, informative] = scaled
            else:
                per_label_influence[np.ix_(rows, np.flatnonzero(informative))] = scaled
            per_label_influence -= per_label_influence.mean(axis=0)
            total_influence = per_label_influence[:, informative].mean(axis=1)
        detail = ProbeDetail(
            records=m,
            total_records=n,
            rows=rows,
            dimensions=dimensions,
            projected_to=design.shape[1] if width is not None and dimensions > width else None,
            folds=self.folds,
            seeds=tuple(self.seeds),
            alpha_per_record=self.alpha_per_record,
            per_repeat=per_repeat,
            degenerate=tuple(name for name, ok in zip(names, informative) if not ok),
        )
        return ScoreValue(
            self.name,
            self.direction,
            value,
            per_label,
            names,
            detail,
            influence=total_influence,
            per_label_influence=per_label_influence,
        )


def _check(features: np.ndarray, labels: np.ndarray, label_names: Sequence[str]) -> tuple[np.ndarray, tuple]:
    """Labels as n x Y uint8 0/1 matching `features` (n x D) and `label_names`, or an InputError."""
    if features.ndim != 2 or features.shape[0] == 0 or features.shape[1] == 0:
        raise InputError(f"features: expected a non-empty records x dimensions matrix, got shape {features.shape}")
    labels = np.asarray(labels)
    if labels.ndim != 2 or labels.shape[0] != features.shape[0]:
        raise InputError(f"labels: expected {features.shape[0]} records x labels, got shape {labels.shape}")
    if not ((labels == 0) | (labels == 1)).all():
        raise InputError("labels: must be 0 or 1")
    names = tuple(label_names)
    if len(names) != labels.shape[1]:
        raise InputError(f"label names: {len(names)} given for {labels.shape[1]} labels")
    return labels.astype(np.uint8), names


def _subsample(n: int, most: int, seed: int) -> np.ndarray | None:
    """The sorted record indices the probe uses, or None for all `n`."""
    if n <= most:
        return None
    return np.sort(np.random.default_rng(seed).choice(n, size=most, replace=False))


def _blocks(features: np.ndarray, rows: np.ndarray | None, values: int) -> list[tuple[slice, np.ndarray]]:
    """(where in the design, which records) for row blocks of about `values` feature values."""
    m = features.shape[0] if rows is None else rows.size
    step = max(1, values // features.shape[1])
    blocks = []
    for start in range(0, m, step):
        where = slice(start, min(start + step, m))
        blocks.append((where, np.arange(where.start, where.stop) if rows is None else rows[where]))
    return blocks


def _read(features: np.ndarray, records: np.ndarray, dtype: type = np.float64) -> np.ndarray:
    """A new array of the block of `records` (sorted) as `dtype`: a slice where they are contiguous, else a gather."""
    if records[-1] - records[0] + 1 == records.size:
        return np.array(features[records[0] : records[-1] + 1], dtype=dtype)  # a copy: never the caller's array
    return np.asarray(features[records], dtype=dtype)


def _design(features: np.ndarray, rows: np.ndarray | None, width: int | None, seed: int) -> tuple[np.ndarray, int]:
    """The probe's inputs (m x min(D', width), float64): standardised features, projected when D' > width
    (never when `width` is None).

    D' counts the non-constant dimensions. Two passes over row blocks: the mean and variance (Chan, Golub &
    LeVeque's pairwise update, float64), then the standardised, projected block.
    """
    count = 0
    mean = np.zeros(features.shape[1])
    squares = np.zeros(features.shape[1])
    for _, records in _blocks(features, rows, _STATS_VALUES):
        block = _read(features, records)
        if not np.isfinite(block).all():
            raise InputError("features: not all finite (NaN or infinity)")
        block_mean = block.mean(axis=0)
        block_squares = ((block - block_mean) ** 2).sum(axis=0)
        total = count + block.shape[0]
        delta = block_mean - mean
        squares += block_squares + delta**2 * (count * block.shape[0] / total)
        mean += delta * (block.shape[0] / total)
        count = total
    std = np.sqrt(squares / count)
    keep = np.flatnonzero(std > 1e-9 * np.abs(mean))  # constant up to rounding of the mean
    if keep.size == 0:
        raise InputError("features: every dimension is constant over the target records: the probe has nothing")
    every = keep.size == features.shape[1]
    mean, std = mean[keep], std[keep]
    if width is None or keep.size <= width:
        design = np.empty((count, keep.size))
        for where, records in _blocks(features, rows, _STATS_VALUES):
            block = _read(features, records)
            design[where] = ((block if every else block[:, keep]) - mean) / std
        return design, int(keep.size)
    # Wide: float32 from the caller's array to the projected block (the projection's product is most of the cost).
    projection = np.random.default_rng(seed).standard_normal((keep.size, width), dtype=np.float32)
    projection /= np.float32(np.sqrt(width))
    mean32, scale32 = mean.astype(np.float32), (1.0 / std).astype(np.float32)
    design = np.empty((count, width))
    for where, records in _blocks(features, rows, _PROJECTION_VALUES):
        block = _read(features, records, np.float32)
        if not every:
            block = block[:, keep]
        block -= mean32
        block *= scale32
        design[where] = block @ projection
    return design, int(keep.size)


def _out_of_fold(design: np.ndarray, targets: np.ndarray, folds: int, seed: int, alpha: float) -> np.ndarray:
    """Each record's ridge prediction of every target column from the folds that leave it out."""
    from sklearn.linear_model import Ridge  # scikit-learn is imported only when a probe runs: 0.4 s of start-up
    from sklearn.model_selection import KFold

    predictions = np.empty_like(targets)
    for train, test in KFold(n_splits=folds, shuffle=True, random_state=seed).split(design):
        model = Ridge(alpha=alpha * train.size, fit_intercept=True, solver="cholesky", copy_X=False)
        model.fit(design[train], targets[train])
        predictions[test] = model.predict(design[test]).reshape(test.size, -1)
    return predictions


def _auroc_influence(targets: np.ndarray, predictions: np.ndarray, aurocs: np.ndarray) -> np.ndarray:
    """m x Y: m times each record's derivative of each column's AUROC in its weight, predictions fixed.

    DeLong's placements from midranks: for a positive, rank among all minus rank among positives is the number
    of negatives below it (ties 1/2); for a negative, rank among all minus rank among negatives is the number
    of positives below it, so n1 minus that is the number above.
    """
    from scipy.stats import rankdata

    m = targets.shape[0]
    influence = np.empty_like(predictions)
    for j in range(targets.shape[1]):
        positive = targets[:, j] == 1
        n1 = int(positive.sum())
        n0 = m - n1
        scores = predictions[:, j]
        ranks = rankdata(scores)
        below_positive = ranks[positive] - rankdata(scores[positive])
        positives_below = ranks[~positive] - rankdata(scores[~positive])
        influence[positive, j] = m / n1 * (below_positive / n0 - aurocs[j])
        influence[~positive, j] = m / n0 * ((n1 - positives_below) / n1 - aurocs[j])
    return influence
