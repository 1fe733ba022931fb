"""`inspect_path`: describe one path, a checkpoint or a target, as `melep inspect` does.

The one place that tells the two apart: a path with a checkpoint suffix is a checkpoint
(`inspect_checkpoint`), any other is a target (`inspect_target`); a path that is neither is a
UsageError saying what was expected.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from melep_cli.checkpoints import CHECKPOINT_SUFFIXES, inspect_checkpoint, is_checkpoint_path
from melep_cli.errors import TargetError, UsageError
from melep_cli.preprocess import match_leads
from melep_cli.targets import TargetOptions, detect_format, inspect_target


def inspect_path(
    path: str | Path,
    *,
    device: str = "auto",
    strict_device: bool = False,
    target_options: TargetOptions | None = None,
) -> dict[str, Any]:
    """Describe `path`: `{"kind": "checkpoint", ...inspect_checkpoint}` or `{"kind": "target", ...inspect_target}`.

    `device` and `strict_device` apply to a checkpoint, `target_options` to a target (a target whose
    format it names is read as that format, whatever the path looks like).
    """
    path = Path(path)
    if is_checkpoint_path(path):
        return {"kind": "checkpoint", **inspect_checkpoint(path, device=device, strict_device=strict_device)}
    if not path.exists():
        raise UsageError(f"{path}: no such file or directory")
    if target_options is None or target_options.target_format is None:
        try:
            detect_format(path)
        except TargetError:
            raise UsageError(
                f"{path}: neither a checkpoint ({', '.join(CHECKPOINT_SUFFIXES)}) nor a target "
                "(an HDF5 file, a WFDB directory with *.hea records, or a PTB-XL directory)"
            ) from None
    return {"kind": "target", **inspect_target(path, target_options=target_options)}


def match_checkpoint_leads(checkpoint: dict[str, Any], target: dict[str, Any]) -> dict[str, Any]:
    """How the leads a checkpoint needs (an `inspect_checkpoint` dict) are found in a target (an `inspect_target`
    dict): each lead with the target's lead that matched it by name or alias, or how it is fed when none does
    (zeros with metadata missing_leads=zero, else an error), for every lead set the target has."""
    metadata = checkpoint["metadata"]
    wanted = metadata["leads"]
    missing = "zeros" if metadata.get("missing_leads") == "zero" else "error"
    sets = [entry["leads"] if isinstance(entry, dict) else entry for entry in target.get("leads") or []]
    if sets and not isinstance(sets[0], list):
        sets = [sets]
    matches = []
    for available in sets:
        matched = match_leads(available, wanted)
        matches.append(
            [
                {"lead": lead, "target_lead": found, "fed": "the target's lead" if found is not None else missing}
                for lead, found in matched
            ]
        )
    return {"target": target["path"], "lead_sets": matches}
