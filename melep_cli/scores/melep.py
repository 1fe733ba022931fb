"""MELEP as a stage-2 score (Nguyen, Duong & Do, J. Healthcare Informatics Research 2024): lower is better.

The computation is `melep_cli.metric.melep`; this class only adapts it to the scoring interface.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import ClassVar

import numpy as np

from melep_cli.metric import Weighting, melep
from melep_cli.scores.base import Direction, ModelOutputs, Need, ScoreValue


@dataclass(frozen=True)
class MelepScore:
    """MELEP with a target-label `weighting`; `source_weighted` averages over source labels by the checkpoint's
    source label distribution where its metadata gives one (the plain mean otherwise)."""

    weighting: Weighting = "prevalence"
    source_weighted: bool = False

    name: ClassVar[str] = "melep"
    direction: ClassVar[Direction] = "lower"
    needs: ClassVar[frozenset[Need]] = frozenset({"scores"})

    def compute(
        self, outputs: ModelOutputs, labels: np.ndarray, label_names: Sequence[str], *, influence: bool = False
    ) -> ScoreValue:
        source_weights = outputs.source_prevalence if self.source_weighted else None
        result = melep(
            outputs.scores,
            labels,
            activation=outputs.activation,  # type: ignore[arg-type]
            weighting=self.weighting,
            source_weights=source_weights,
            label_names=label_names,
            source_names=outputs.source_names,
            influence=influence,
        )
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
