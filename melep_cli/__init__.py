"""melep: rank pre-trained ECG checkpoints for a new multi-label task with MELEP.

The Python API mirrors the CLI, command for command:

- `melep_cli.rank(checkpoints, target, ...)` is `melep rank` (a `RankReport`): stage 1 then stage 2;
- `melep_cli.forward(checkpoints, target, ...)` is `melep forward` (a `ForwardReport`): stage 1 alone, the
  forward passes, their outputs kept in the outputs store (`OutputsStore`, `melep cache`); `executor="ray"`
  with `RayOptions(...)` runs them on a Ray cluster (`EXECUTORS`; ray is imported only then);
- `melep_cli.scores`: stage 2, scores from stored outputs (`MelepScore`, `ModelOutputs`);
- `melep_cli.score(outputs, labels, ...)` is `melep score`;
- `melep_cli.inspect_path(path)` is `melep inspect` (`inspect_checkpoint` / `inspect_target` for one kind);
- `melep_cli.annotate_checkpoint(path, ...)` is `melep annotate`;
- `melep_cli.convert(source, output, ...)` is `melep convert`;
- `melep_cli.TargetOptions(...)` is the target options every command shares (`target_options=`);
- `melep_cli.BootstrapSettings(...)` is rank's `--bootstrap/--confidence/--seed` (`bootstrap=`), and
  `melep_cli.paired_bootstrap` the bootstrap itself;
- `melep_cli.evaluate(results_csv, rank_jsons, ...)` is `melep evaluate` (an `Evaluation`);
- `melep_cli.write_report(RankDocument.from_rank(report), "report.html")` is `melep rank --report`, and
  `write_report(read_rank_file("RANK.json"), path)` is `melep report` (`.html`, `.md`, `.png`/`.svg`/`.pdf`);
- the metric itself is `melep_cli.melep(outputs, labels)` and `melep_cli.MelepAccumulator`.

torch and onnxruntime are imported only when a checkpoint is loaded.
"""

from melep_cli.adaptive import AdaptiveSettings
from melep_cli.bootstrap import BootstrapSettings, Estimate, Uncertainty, paired_bootstrap
from melep_cli.checkpoints import (
    Checkpoint,
    annotate_checkpoint,
    discover_checkpoints,
    inspect_checkpoint,
    load_checkpoint,
)
from melep_cli.errors import CheckpointError, InputError, MelepError, TargetError, UsageError
from melep_cli.evaluation_io import Evaluation, evaluate
from melep_cli.executors import EXECUTORS, RayOptions
from melep_cli.forward_pass import DEFAULT_CACHE, ForwardReport, ForwardResult, ForwardSession, forward
from melep_cli.inspecting import inspect_path
from melep_cli.metric import MelepAccumulator, MelepResult, activate, binary_entropy, melep
from melep_cli.preprocess import InputSpec, prepare
from melep_cli.ranking import RankReport, rank
from melep_cli.render import RankDocument, read_rank_file, write_report
from melep_cli.scores import SCORES, MelepScore, ModelOutputs, ScoreValue
from melep_cli.scoring import score
from melep_cli.store import OutputsStore, default_cache_dir
from melep_cli.targets import Batch, Target, TargetOptions, convert, inspect_target, open_target

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_CACHE",
    "EXECUTORS",
    "SCORES",
    "AdaptiveSettings",
    "Batch",
    "BootstrapSettings",
    "Checkpoint",
    "CheckpointError",
    "Estimate",
    "Evaluation",
    "ForwardReport",
    "ForwardResult",
    "ForwardSession",
    "InputError",
    "InputSpec",
    "MelepAccumulator",
    "MelepError",
    "MelepResult",
    "MelepScore",
    "ModelOutputs",
    "OutputsStore",
    "RankDocument",
    "RankReport",
    "RayOptions",
    "ScoreValue",
    "Target",
    "TargetError",
    "TargetOptions",
    "Uncertainty",
    "UsageError",
    "__version__",
    "activate",
    "annotate_checkpoint",
    "binary_entropy",
    "convert",
    "default_cache_dir",
    "discover_checkpoints",
    "evaluate",
    "forward",
    "inspect_checkpoint",
    "inspect_path",
    "inspect_target",
    "load_checkpoint",
    "melep",
    "open_target",
    "paired_bootstrap",
    "prepare",
    "rank",
    "read_rank_file",
    "score",
    "write_report",
]
