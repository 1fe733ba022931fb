"""`inspect_checkpoint`: what a checkpoint is, expects and produces, and which device would run it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from melep_cli.checkpoints.checkpoint import DEFAULT_PROBE_SAMPLES, Checkpoint, MetadataConflict, load_checkpoint
from melep_cli.checkpoints.metadata import KNOWN_KEYS, to_json_value
from melep_cli.errors import CheckpointError
from melep_cli.preprocess import describe_steps


def needs_zero_record(checkpoint: Checkpoint) -> bool:
    """Whether only a forward pass tells the rest: the layout, the output width, or a TorchScript model's outputs
    (and, for TorchScript, whether the metadata's layout runs)."""
    return checkpoint.needs_probe or checkpoint.output_width is None or checkpoint.format != "onnx"


def run_zero_record(checkpoint: Checkpoint) -> tuple[int, CheckpointError | None]:
    """Run one zero record through `checkpoint` (probing the layout first if needed): its samples and any error.

    Finds what only a forward pass tells (layout, output width, a TorchScript model's outputs) with the checks
    `melep rank` runs (`probe_layout`, `predict_outputs`). What contradicts the metadata is raised (a
    MetadataConflict: the label count vs the output width, a layout that does not run where the other does,
    outputs the model lacks); a record that merely did not run (a guessed length, NaN on zeros) is returned.
    The length is the metadata's `samples`, else 10 s at its rate, else DEFAULT_PROBE_SAMPLES.
    """
    metadata = checkpoint.metadata
    samples = metadata.samples or (
        round(10 * metadata.sampling_rate) if metadata.sampling_rate else DEFAULT_PROBE_SAMPLES
    )
    example = np.zeros((1, len(metadata.leads), samples), dtype=metadata.dtype or "float32")
    try:
        if checkpoint.needs_probe:
            checkpoint.probe_layout(example)
        features_unknown = checkpoint.metadata.features_output is not None and checkpoint.features_width is None
        if checkpoint.output_width is None or features_unknown:
            layout_example = {"NCT": example, "NTC": example.transpose(0, 2, 1), "NT": example.reshape(1, -1)}[
                checkpoint.layout or "NCT"
            ]
            checkpoint.predict_outputs(layout_example, batch_size=1)
    except MetadataConflict:
        raise
    except CheckpointError as error:
        return samples, error
    return samples, None


def inspect_checkpoint(path: str | Path, *, device: str = "auto", strict_device: bool = False) -> dict[str, Any]:
    """A JSON-ready description: format, input (name, shape, dtype), outputs, metadata, preprocessing, device.

    `preprocessing` is the chain of steps the records go through, in order (`describe_steps`).

    `outputs` lists every model output (name, shape, dtype, role "scores" / "features" / None);
    `output` is the scores output's name and width. `metadata` holds every key's value (defaults
    filled in where they are known without a target), `defaulted` maps each key that took a default
    to the value assumed. When neither metadata nor the model fixes the layout or output width (and
    always for TorchScript, whose outputs are only known when it runs), one zero record is run to find
    them; if it does not run, `notes` says why and the values stay null. What contradicts the metadata (see
    `MetadataConflict`) is raised, as `melep rank` would fail on it.
    """
    checkpoint = load_checkpoint(path, device=device, strict_device=strict_device, warn_defaults=False)
    notes: list[str] = []
    metadata = checkpoint.metadata
    if needs_zero_record(checkpoint):
        samples, error = run_zero_record(checkpoint)
        if error is not None:
            notes.append(f"a zero record of {samples} samples did not run: {error}")
        elif metadata.samples is None:
            notes.append(f"layout and output width found by running a zero record of {samples} samples")
        if checkpoint.format != "onnx" and checkpoint.output_names is not None:
            notes.append("output shapes are those of a forward pass of one record")
    metadata = checkpoint.metadata
    values: dict[str, Any] = {}
    for key in KNOWN_KEYS:
        value = getattr(metadata, key)
        values[key] = list(value) if isinstance(value, tuple) else value
    if values["labels"] is None and checkpoint.labels is not None:
        values["labels"] = list(checkpoint.labels)
    if values["name"] is None:
        values["name"] = checkpoint.path.stem
    for key, value in values.items():
        values[key] = to_json_value(value)
    spec = checkpoint.input_spec(sampling_rate=None, samples=None)
    preprocessing = [{"step": step, "what": what} for step, what in describe_steps(spec)]
    return {
        "path": str(checkpoint.path),
        "name": checkpoint.name,
        "format": checkpoint.format,
        "input": checkpoint.input_info,
        "output": {"name": checkpoint.scores_output, "width": checkpoint.output_width},
        "outputs": checkpoint.outputs_info,
        "scores_output": checkpoint.scores_output,
        "features_output": checkpoint.features_output,
        "metadata": values,
        "preprocessing": preprocessing,
        "defaulted": checkpoint.default_notes(),
        "metadata_origin": metadata.origin,
        "unknown_keys": sorted(metadata.extra),
        "device": checkpoint.device,
        "provider": checkpoint.provider,
        "notes": notes,
    }
