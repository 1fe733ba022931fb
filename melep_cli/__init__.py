"""melep: rank pre-trained ECG checkpoints for a new multi-label task with MELEP.

The Python API mirrors the CLI: `melep_cli.score(...)` is `melep score`, and the metric itself
is `melep_cli.melep(outputs, labels)` / `melep_cli.MelepAccumulator`.
"""

from melep_cli.errors import CheckpointError, InputError, MelepError, TargetError, UsageError
from melep_cli.metric import MelepAccumulator, MelepResult, activate, binary_entropy, melep
from melep_cli.score import score

__version__ = "0.1.0"

__all__ = [
    "CheckpointError",
    "InputError",
    "MelepAccumulator",
    "MelepError",
    "MelepResult",
    "TargetError",
    "UsageError",
    "__version__",
    "activate",
    "binary_entropy",
    "melep",
    "score",
]
