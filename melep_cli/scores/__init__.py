"""Stage 2: transferability scores computed from stored outputs (`ModelOutputs`) and target labels.

`SCORES` maps each score's name to its class; MELEP is the default.
"""

from melep_cli.scores.base import Direction, ModelOutputs, Score, ScoreValue
from melep_cli.scores.melep import MelepScore

SCORES: dict[str, type] = {MelepScore.name: MelepScore}

__all__ = ["SCORES", "Direction", "MelepScore", "ModelOutputs", "Score", "ScoreValue"]
