"""The scoring interface of stage 2: stored outputs and target labels in, a total and a per-label vector out.

A score is pure (no files, no models, no logging): `compute(outputs, labels, label_names)` with the
outputs one checkpoint's forward pass stored and the target's 0/1 labels of the same records, in the
same order. With `influence=True` it also gives each record's influence on its total and per-label
values, from which `melep_cli.bootstrap` draws the resampled values of the paired bootstrap.
A new score is a module with one class like `MelepScore` plus one line in `SCORES`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, Protocol

import numpy as np

Direction = Literal["lower", "higher"]
#: What a score reads: the source-label scores, or the penultimate features as well.
Need = Literal["scores", "features"]


@dataclass(frozen=True)
class ModelOutputs:
    """One checkpoint's stored outputs as a score sees them."""

    scores: np.ndarray  # (n, Z) as the model emitted them, before any activation
    activation: str  # how `scores` become probabilities: logits, probabilities or softmax
    source_names: tuple[str, ...] | None = None
    source_prevalence: tuple[float, ...] | None = None  # the source label distribution, when the metadata has it
    features: np.ndarray | None = None  # (n, D), when the checkpoint declares a features output


@dataclass(frozen=True)
class ScoreValue:
    """A score's result: its total, one value per target label, and its own detailed result (`detail`)."""

    name: str
    direction: Direction
    value: float
    per_label: np.ndarray  # (Y,), NaN where the label carries no information
    label_names: tuple[str, ...]
    detail: Any = None
    influence: np.ndarray | None = None  # (n,): each record's influence on `value` (see melep_cli.bootstrap)
    per_label_influence: np.ndarray | None = None  # (n, Y): the same for each of `per_label`

    def better_than(self, other: ScoreValue) -> bool:
        return self.value < other.value if self.direction == "lower" else self.value > other.value


class Score(Protocol):
    """What every score provides."""

    name: ClassVar[str]
    direction: ClassVar[Direction]
    needs: ClassVar[frozenset[Need]]

    def compute(
        self, outputs: ModelOutputs, labels: np.ndarray, label_names: Sequence[str], *, influence: bool = False
    ) -> ScoreValue: ...


def one_class_per_record(labels: np.ndarray, score: str) -> np.ndarray:
    """The class index of each record when every row of the 0/1 `labels` has exactly one 1 (a single-label
    target, as LEEP and NCE define it), else an InputError naming `score`."""
    from melep_cli.errors import TargetUnsuitedError

    matrix = np.asarray(labels)
    counts = matrix.sum(axis=1)
    if matrix.ndim != 2 or not np.all(counts == 1):
        wrong = int(np.sum(counts != 1)) if matrix.ndim == 2 else len(matrix)
        raise TargetUnsuitedError(
            f"{score} needs one target class per record (exactly one label set in every row); {wrong} of"
            f" {len(matrix)} records have none or several: it applies to single-label targets only"
        )
    return np.argmax(matrix, axis=1)
