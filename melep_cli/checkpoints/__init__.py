"""Checkpoints: discovery, safe loading (TorchScript, ONNX), metadata, inspection and annotation.

torch and onnxruntime are imported only when a checkpoint is loaded, inspected or annotated.
"""

from melep_cli.checkpoints.annotate import Annotation, annotate_checkpoint
from melep_cli.checkpoints.checkpoint import (
    DEFAULT_BATCH_SIZE,
    Checkpoint,
    MetadataConflict,
    Prediction,
    load_checkpoint,
)
from melep_cli.checkpoints.devices import parse_device
from melep_cli.checkpoints.discovery import (
    CHECKPOINT_SUFFIXES,
    discover_checkpoints,
    is_checkpoint_path,
    unique_names,
)
from melep_cli.checkpoints.inspect import inspect_checkpoint
from melep_cli.checkpoints.metadata import CheckpointMetadata, parse_metadata
from melep_cli.checkpoints.safety import detect_format

__all__ = [
    "CHECKPOINT_SUFFIXES",
    "DEFAULT_BATCH_SIZE",
    "Annotation",
    "Checkpoint",
    "CheckpointMetadata",
    "MetadataConflict",
    "Prediction",
    "annotate_checkpoint",
    "detect_format",
    "discover_checkpoints",
    "inspect_checkpoint",
    "is_checkpoint_path",
    "load_checkpoint",
    "parse_device",
    "parse_metadata",
    "unique_names",
]
