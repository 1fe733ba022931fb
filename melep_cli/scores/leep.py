"""`leep`: LEEP, the Log Expected Empirical Prediction (Nguyen, Hassner, Seeger & Archambeau, ICML 2020).

The single-label score MELEP extends: a checkpoint whose last layer is a softmax over Z source classes
(theta, n x Z, rows summing to 1) and a target of one class per record (y_i):

    P(y, z) = (1/n) sum over records i of class y of theta[i, z],   P(y | z) = P(y, z) / sum_y P(y, z),
    LEEP = (1/n) sum_i log( sum_z P(y_i | z) theta[i, z] ).

Higher is better. It applies only when both hold: a multi-label (sigmoid) checkpoint or a target with
several labels per record is an error for this score (MELEP is the multi-label form). `per_label` is
each class's own term: the mean of the log-likelihood over the records of that class.

Influence (for the bootstrap), with L_i = sum_z P(y_i | z) theta[i, z], P(z) = mean theta[:, z] and
g(y, z) = (1/n) sum over records of class y of theta[i, z] / L_i: n d LEEP / d w_j =
(log L_j - LEEP) + sum_z theta[j, z] / P(z) * (g(y_j, z) - sum_y P(y | z) g(y, z)).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from melep_cli.errors import InputError
from melep_cli.metric import EPS, activate
from melep_cli.scores.base import Direction, ModelOutputs, Need, ScoreValue, one_class_per_record


@dataclass(frozen=True)
class LeepScore:
    """LEEP of a softmax checkpoint on a single-label target."""

    name: ClassVar[str] = "leep"
    direction: ClassVar[Direction] = "higher"
    needs: ClassVar[frozenset[Need]] = frozenset({"scores"})

    def compute(
        self, outputs: ModelOutputs, labels: np.ndarray, label_names: Sequence[str], *, influence: bool = False
    ) -> ScoreValue:
        if outputs.activation == "logits":
            raise InputError(
                "leep needs a single-label (softmax) checkpoint; these outputs are multi-label logits (sigmoid):"
                " use melep"
            )
        theta = np.clip(activate(outputs.scores, outputs.activation), EPS, None)
        theta /= theta.sum(axis=1, keepdims=True)
        classes = one_class_per_record(labels, self.name)
        n, n_classes = len(classes), np.asarray(labels).shape[1]
        one_hot = np.zeros((n, n_classes))
        one_hot[np.arange(n), classes] = 1.0
        joint = one_hot.T @ theta / n  # P(y, z)
        source = theta.mean(axis=0)  # P(z)
        conditional = joint / source  # P(y | z)
        likelihood = np.einsum("iz,iz->i", conditional[classes], theta)
        logs = np.log(likelihood)
        value = float(logs.mean())
        counts = one_hot.sum(axis=0)
        with np.errstate(invalid="ignore", divide="ignore"):
            per_label = np.where(counts > 0, (one_hot.T @ logs) / counts, np.nan)
        total = per_class = None
        if influence:
            g = one_hot.T @ (theta / likelihood[:, None]) / n  # g(y, z)
            pull = (g - (conditional * g).sum(axis=0)) / source  # (Y, Z)
            total = logs - value + np.einsum("iz,iz->i", theta, pull[classes])
            # Each class's term: (n / n_y) [1{y_j = y} (log L_j - term_y)
            #                              + sum_z theta_jz g(y, z) (1{y_j = y} - P(y | z)) / P(z)]
            own = theta @ (g / source).T  # (n, Y)
            shared = theta @ (g * conditional / source).T
            with np.errstate(invalid="ignore", divide="ignore"):
                scale = np.where(counts > 0, n / counts, 0.0)
            per_class = scale * (one_hot * (logs[:, None] - np.nan_to_num(per_label)) + one_hot * own - shared)
            per_class -= per_class.mean(axis=0)
            total -= total.mean()
        return ScoreValue(
            self.name,
            self.direction,
            value,
            per_label,
            tuple(label_names),
            {"classes": n_classes},
            influence=total,
            per_label_influence=per_class,
        )
