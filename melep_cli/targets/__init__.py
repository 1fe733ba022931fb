"""Targets: the user's labelled ECG set, read from HDF5, WFDB/Challenge directories or PTB-XL, streamed.

`open_target(path, TargetOptions(...))` detects the format from the path, reads the labels (known before any
signal is decoded) and returns a Target whose `batches(batch_size)` decodes records in bounded
memory, again on every call. `convert` writes any target to one HDF5 file; `inspect_target`
describes one.
"""

from __future__ import annotations

from melep_cli.targets.base import Batch, Target, parse_folds
from melep_cli.targets.convert import ConvertResult, convert
from melep_cli.targets.hdf5 import Hdf5Target
from melep_cli.targets.inspection import inspect_target
from melep_cli.targets.opener import TARGET_FORMATS, TargetOptions, detect_format, open_target, target_of
from melep_cli.targets.ptbxl import LABEL_LEVELS, PtbxlTarget
from melep_cli.targets.wfdb_dir import WfdbTarget

__all__ = [
    "LABEL_LEVELS",
    "TARGET_FORMATS",
    "Batch",
    "ConvertResult",
    "Hdf5Target",
    "PtbxlTarget",
    "Target",
    "TargetOptions",
    "WfdbTarget",
    "convert",
    "detect_format",
    "inspect_target",
    "open_target",
    "parse_folds",
    "target_of",
]
