"""`nce`: Negative Conditional Entropy (Tran, Nguyen & Hassner, ICCV 2019).

The target class y given the checkpoint's most likely source label z = argmax of its outputs (hard
labels: the outputs' other values are not used):

    NCE = -H(Y | Z) = sum over (y, z) of P(y, z) log P(y | z),   P from the counts of the n records.

Higher is better. It needs a target of one class per record; the source may be any checkpoint (its
argmax is taken), though it is meant for single-label (softmax) checkpoints. `per_label` is each class's
own term: the mean of log P(y | z_i) over the records of that class.

Influence (for the bootstrap): n d NCE / d w_i = log P(y_i | z_i) - NCE.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from melep_cli.scores.base import Direction, ModelOutputs, Need, ScoreValue, one_class_per_record


@dataclass(frozen=True)
class NceScore:
    """NCE of the argmax source label on a single-label target."""

    name: ClassVar[str] = "nce"
    direction: ClassVar[Direction] = "higher"
    needs: ClassVar[frozenset[Need]] = frozenset({"scores"})

    def compute(
        self, outputs: ModelOutputs, labels: np.ndarray, label_names: Sequence[str], *, influence: bool = False
    ) -> ScoreValue:
        classes = one_class_per_record(labels, self.name)
        n, n_classes = len(classes), np.asarray(labels).shape[1]
        source = np.argmax(np.asarray(outputs.scores), axis=1)
        n_source = np.asarray(outputs.scores).shape[1]
        joint = np.zeros((n_classes, n_source))
        np.add.at(joint, (classes, source), 1.0)
        conditional = joint / joint.sum(axis=0, keepdims=True).clip(min=1.0)  # P(y | z); empty z columns unused
        logs = np.log(conditional[classes, source])  # every record's own (y, z) cell holds at least itself
        value = float(logs.mean())
        counts = np.bincount(classes, minlength=n_classes).astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            per_label = np.where(counts > 0, np.bincount(classes, weights=logs, minlength=n_classes) / counts, np.nan)
        total = per_class = None
        if influence:
            total = logs - value
            own = np.zeros((n, n_classes))
            own[np.arange(n), classes] = 1.0
            with np.errstate(invalid="ignore", divide="ignore"):
                scale = np.where(counts > 0, n / counts, 0.0)
            # Each class's term: (n / n_y) [1{y_j = y} (log P(y | z_j) - term_y) + 1{y_j = y} - P(y | z_j)]
            per_class = scale * (own * (logs[:, None] - np.nan_to_num(per_label)) + own - conditional[:, source].T)
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
