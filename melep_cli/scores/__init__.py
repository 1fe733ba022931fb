"""Stage 2: transferability scores computed from stored outputs (`ModelOutputs`) and target labels.

`SCORES` maps each score's name to its class; MELEP is the default. Adding a score is adding its module
and one line here.
"""

from melep_cli.scores.base import Direction, ModelOutputs, Score, ScoreValue
from melep_cli.scores.gain import GainScore
from melep_cli.scores.leep import LeepScore
from melep_cli.scores.logme import LogmeScore
from melep_cli.scores.melep import MelepScore
from melep_cli.scores.nce import NceScore
from melep_cli.scores.probe import ProbeScore

SCORES: dict[str, type] = {
    MelepScore.name: MelepScore,
    GainScore.name: GainScore,
    LeepScore.name: LeepScore,
    LogmeScore.name: LogmeScore,
    NceScore.name: NceScore,
    ProbeScore.name: ProbeScore,
}

__all__ = [
    "SCORES",
    "Direction",
    "GainScore",
    "LeepScore",
    "LogmeScore",
    "MelepScore",
    "ModelOutputs",
    "NceScore",
    "ProbeScore",
    "Score",
    "ScoreValue",
]
