"""MELEP written as plainly as shared/spec/MELEP.md states it: loops over (y, z) pairs and records, no
vectorisation, no tricks. Slow on purpose; the tests check the fast kernel of melep_cli.metric against it.
"""

from __future__ import annotations

import math

import numpy as np

EPS = 1e-12


def sigmoid(logit: float) -> float:
    return 1.0 / (1.0 + math.exp(-logit)) if logit >= 0 else math.exp(logit) / (1.0 + math.exp(logit))


def reference_melep(theta: np.ndarray, labels: np.ndarray, weighting: str = "prevalence") -> tuple[float, list]:
    """(MELEP, [m(y) or None for degenerate labels]) of probabilities `theta` (n x Z) and 0/1 `labels` (n x Y).

    Degenerate labels (all 0 or all 1) are left out of the aggregate, so Y counts the informative labels.
    """
    n, n_source = theta.shape
    n_target = labels.shape[1]
    per_label: list[float | None] = []
    for y in range(n_target):
        positives = int(sum(labels[i][y] for i in range(n)))
        if positives == 0 or positives == n:
            per_label.append(None)  # degenerate: no information, left out of the aggregate
            continue
        total = 0.0
        for z in range(n_source):
            theta1 = [min(max(float(theta[i][z]), EPS), 1 - EPS) for i in range(n)]
            theta0 = [1 - value for value in theta1]
            # 1. joint P(t, s); 2. marginal P(s); 3. conditional C(t | s)
            joint = {(t, s): 0.0 for t in (0, 1) for s in (0, 1)}
            for i in range(n):
                t = int(labels[i][y])
                joint[t, 0] += theta0[i] / n
                joint[t, 1] += theta1[i] / n
            conditional = {(t, s): joint[t, s] / (joint[0, s] + joint[1, s]) for t in (0, 1) for s in (0, 1)}
            # 4. pair score phi(y, z)
            phi = 0.0
            for i in range(n):
                t = int(labels[i][y])
                phi -= math.log(conditional[t, 0] * theta0[i] + conditional[t, 1] * theta1[i]) / n
            total += phi
        per_label.append(total / n_source)  # 5. m(y)
    kept = [(y, value) for y, value in enumerate(per_label) if value is not None]
    positives = [int(sum(labels[i][y] for i in range(n))) for y in range(n_target)]
    if weighting == "prevalence":  # 6. weights positives(y) / n, normalised
        weights = [positives[y] / n for y, _ in kept]
        score = sum(w * value for w, (_, value) in zip(weights, kept)) / sum(weights)
    elif weighting == "paper":  # (1/Y) sum r(y) m(y), r = positives / negatives, not normalised
        score = sum(positives[y] / (n - positives[y]) * value for y, value in kept) / len(kept)
    else:  # uniform
        score = sum(value for _, value in kept) / len(kept)
    return score, per_label
