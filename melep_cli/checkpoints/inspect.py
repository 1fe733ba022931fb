"""`inspect_checkpoint`: what a checkpoint is, expects and produces, and which device would run it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from melep_cli.checkpoints.checkpoint import DEFAULT_PROBE_SAMPLES, load_checkpoint
from melep_cli.checkpoints.metadata import KNOWN_KEYS
from melep_cli.errors import CheckpointError


def inspect_checkpoint(path: str | Path, *, device: str = "auto", strict_device: bool = False) -> dict[str, Any]:
    """A JSON-ready description: format, input (name, shape, dtype), output width, metadata, device.

    `metadata` holds every key's value (defaults filled in where they are known without a target),
    `defaulted` maps each key that took a default to the value assumed. When neither metadata nor
    the model fixes the layout or output width, one zero record is run to find them; if that fails,
    `notes` says why and the values stay null.
    """
    checkpoint = load_checkpoint(path, device=device, strict_device=strict_device, warn_defaults=False)
    notes: list[str] = []
    metadata = checkpoint.metadata
    if checkpoint.needs_probe or checkpoint.output_width is None:
        samples = metadata.samples or (
            round(10 * metadata.sampling_rate) if metadata.sampling_rate else DEFAULT_PROBE_SAMPLES
        )
        example = np.zeros((1, len(metadata.leads), samples), dtype=metadata.dtype or "float32")
        try:
            if checkpoint.needs_probe:
                checkpoint.probe_layout(example)
            if checkpoint.output_width is None:
                layout_example = example if checkpoint.layout == "NCT" else example.transpose(0, 2, 1)
                checkpoint.predict(layout_example, batch_size=1)
        except CheckpointError as error:
            notes.append(f"a zero record of {samples} samples did not run: {error}")
        else:
            if metadata.samples is None:
                notes.append(f"layout and output width found by running a zero record of {samples} samples")
    metadata = checkpoint.metadata
    values: dict[str, Any] = {}
    for key in KNOWN_KEYS:
        value = getattr(metadata, key)
        values[key] = list(value) if isinstance(value, tuple) else value
    if values["labels"] is None and checkpoint.labels is not None:
        values["labels"] = list(checkpoint.labels)
    if values["name"] is None:
        values["name"] = checkpoint.path.stem
    if checkpoint.output_count > 1:
        notes.append(f"the model has several outputs; melep uses the first, {checkpoint.output_name!r}")
    return {
        "path": str(checkpoint.path),
        "name": checkpoint.name,
        "format": checkpoint.format,
        "input": checkpoint.input_info,
        "output": {"name": checkpoint.output_name, "width": checkpoint.output_width},
        "metadata": values,
        "defaulted": checkpoint.default_notes(),
        "metadata_origin": metadata.origin,
        "unknown_keys": sorted(metadata.extra),
        "device": checkpoint.device,
        "provider": checkpoint.provider,
        "notes": notes,
    }
