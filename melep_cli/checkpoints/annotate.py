"""`annotate_checkpoint`: write melep metadata into a checkpoint users already have.

ONNX: the `metadata_props` entry `melep` (through the onnx package). TorchScript: the extra file
`melep.json` (torch.jit.load with _extra_files, then torch.jit.save; other extra files are kept).
Existing metadata (embedded, else the sidecar) is merged, the given keys win; the file is replaced
atomically (a temporary file in the same directory, then a rename). The merged metadata is checked
against the model first, with the checks `melep rank` and `melep inspect` run (`load_checkpoint` with
that metadata, then one zero record where only a forward pass tells): what the model contradicts is a
MetadataConflict and nothing is written.
"""

from __future__ import annotations

import json
import logging
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from melep_cli.atomic import atomic_path
from melep_cli.checkpoints.backends import one_line, quiet_torch_jit
from melep_cli.checkpoints.checkpoint import MetadataConflict, load_checkpoint
from melep_cli.checkpoints.discovery import ONNX_SUFFIXES, TORCHSCRIPT_SUFFIXES
from melep_cli.checkpoints.inspect import needs_zero_record, run_zero_record
from melep_cli.checkpoints.metadata import (
    EXTRA_FILE,
    KNOWN_KEYS,
    METADATA_KEY,
    CheckpointMetadata,
    parse_metadata,
    sidecar_path,
    to_json_value,
    validate_metadata,
)
from melep_cli.checkpoints.safety import detect_format
from melep_cli.errors import CheckpointError, UsageError
from melep_cli.preprocess import BandFilter, Scaler, Windows

logger = logging.getLogger("melep")


@dataclass(frozen=True)
class Annotation:
    """What `annotate_checkpoint` wrote: the file, the JSON object stored, and where the old one came from."""

    path: Path
    document: dict[str, Any]
    metadata: CheckpointMetadata
    previous_origin: str


def annotate_checkpoint(
    path: str | Path,
    *,
    output: str | Path | None = None,
    labels: Sequence[str] | None = None,
    sampling_rate: float | None = None,
    samples: int | None = None,
    leads: Sequence[str] | None = None,
    layout: str | None = None,
    activation: str | None = None,
    normalization: str | None = None,
    dtype: str | None = None,
    source_prevalence: Sequence[float] | None = None,
    name: str | None = None,
    description: str | None = None,
    scores_output: str | int | None = None,
    features_output: str | int | None = None,
    crop: str | None = None,
    windows: Windows | Mapping[str, Any] | None = None,
    filter: BandFilter | Mapping[str, Any] | None = None,
    scale: float | None = None,
    scaler: Scaler | Mapping[str, Any] | None = None,
    missing_leads: str | None = None,
    metadata: Mapping[str, Any] | None = None,
    remove: Sequence[str] = (),
    replace: bool = False,
) -> Annotation:
    """Merge the given keys into the checkpoint's metadata and store it in the file (or in `output`).

    `activation` is the metadata key `output` (logits, probabilities, softmax); `scores_output` and
    `features_output` name (or index) the outputs holding the scores and the penultimate features;
    `crop`, `windows` ({"stride", "aggregate"}), `filter` ({"highpass", "lowpass", "order"}), `scale` and
    `missing_leads` are the metadata keys of those names; `scaler` ({"mean", "std"}, one per lead) is the
    metadata key `normalization` as a fitted scaler (give it or `normalization`, not both);
    `metadata` is a whole JSON object to merge first (e.g. a sidecar's); `remove` drops keys; `replace`
    starts from nothing instead of the existing metadata. Invalid values are UsageErrors naming the key
    (a `remove` key that is not a metadata key is one too: a typo would otherwise keep the key);
    values the model contradicts (a label count its output width rules out, leads or samples its input
    shape rules out, a layout it does not run, an output it does not have) are MetadataConflicts, and
    nothing is written.
    """
    if scaler is not None and normalization is not None:
        raise UsageError("give a normalization or a fitted scaler, not both", parameter="scaler")
    unknown = [key for key in remove if key not in KNOWN_KEYS]
    if unknown:
        raise UsageError(f"unknown metadata key {unknown[0]!r} (known: {', '.join(KNOWN_KEYS)})", parameter="remove")
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    checkpoint_format = detect_format(path)
    destination = Path(output) if output is not None else path
    suffixes = ONNX_SUFFIXES if checkpoint_format == "onnx" else TORCHSCRIPT_SUFFIXES
    if destination.suffix.lower() not in suffixes:
        raise UsageError(
            f"{destination}: a {checkpoint_format} checkpoint needs one of {', '.join(suffixes)}", parameter="output"
        )
    where = str(path)

    if checkpoint_format == "onnx":
        import onnx

        try:
            model = onnx.load(str(path), load_external_data=False)
        except Exception as error:
            raise CheckpointError(f"{path}: not a loadable ONNX model ({one_line(error)})") from None
        if destination.resolve().parent != path.resolve().parent and _uses_external_data(model):
            raise CheckpointError(
                f"{path}: keeps its weights in external files", hint="write {output} in the same directory"
            )
        embedded = next((prop.value for prop in model.metadata_props if prop.key == METADATA_KEY), None)
        embedded_origin = f"ONNX metadata_props[{METADATA_KEY!r}]"
    else:
        embedded = _torchscript_extra_files(path).get(EXTRA_FILE) or None
        embedded_origin = f"TorchScript extra file {EXTRA_FILE}"

    document: dict[str, Any] = {}
    previous_origin = "none"
    if not replace:
        document, previous_origin = _existing_document(path, embedded, embedded_origin)
    if metadata is not None:
        document.update(validate_metadata(metadata, where=where, origin="the given metadata", error=UsageError))
    updates = {
        "labels": list(labels) if labels is not None else None,
        "sampling_rate": sampling_rate,
        "samples": samples,
        "leads": list(leads) if leads is not None else None,
        "layout": layout,
        "output": activation,
        "normalization": to_json_value(scaler) if scaler is not None else normalization,
        "dtype": dtype,
        "source_prevalence": list(source_prevalence) if source_prevalence is not None else None,
        "name": name,
        "description": description,
        "scores_output": scores_output,
        "features_output": features_output,
        "crop": crop,
        "windows": to_json_value(windows),
        "filter": to_json_value(filter),
        "scale": scale,
        "missing_leads": missing_leads,
    }
    document.update(validate_metadata(updates, where=where, origin="the options", error=UsageError))
    for key in remove:
        document.pop(key, None)
    document = {key: to_json_value(value) for key, value in document.items()}
    # Known keys first, in the documented order, then any unknown ones as they were.
    ordered = {key: document[key] for key in KNOWN_KEYS if key in document}
    ordered.update({key: value for key, value in document.items() if key not in ordered})
    parsed = parse_metadata(ordered, where=where, origin="the merged metadata")
    text = json.dumps(ordered, ensure_ascii=False)

    _check_against_model(path, parsed, destination)
    if checkpoint_format == "onnx":
        kept = [(prop.key, prop.value) for prop in model.metadata_props if prop.key != METADATA_KEY]
        del model.metadata_props[:]  # rebuilt: the other properties as they were, then ours
        for key, value in kept:
            model.metadata_props.add(key=key, value=value)
        model.metadata_props.add(key=METADATA_KEY, value=text)
        data = model.SerializeToString()
        with atomic_path(destination) as temporary:
            temporary.write_bytes(data)
    else:
        _annotate_torchscript(path, destination, text)
    if previous_origin.startswith("sidecar"):
        logger.warning(
            "%s: metadata from the %s merged into the file; the sidecar is now ignored", destination, previous_origin
        )
    return Annotation(path=destination, document=ordered, metadata=parsed, previous_origin=previous_origin)


def _existing_document(path: Path, embedded: str | bytes | None, origin: str) -> tuple[dict[str, Any], str]:
    """The current JSON object (embedded, else the sidecar) as given, and where it came from."""
    text: str | bytes | None = embedded
    if not text:
        sidecar = sidecar_path(path)
        if not sidecar.is_file():
            return {}, "none"
        text, origin = sidecar.read_bytes(), f"sidecar {sidecar}"
    try:
        document = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise CheckpointError(
            f"{path}: existing metadata in {origin} is not valid JSON ({error})", hint="pass {replace} to overwrite it"
        ) from None
    if not isinstance(document, dict):
        raise CheckpointError(
            f"{path}: existing metadata in {origin} is not a JSON object", hint="pass {replace} to overwrite it"
        )
    return document, origin


def _uses_external_data(model: Any) -> bool:
    from onnx import TensorProto

    return any(tensor.data_location == TensorProto.EXTERNAL for tensor in model.graph.initializer)


#: Keys only a forward pass can check when the model does not declare what they describe.
_RUN_CHECKED_KEYS = ("labels", "layout", "scores_output", "features_output")


def _check_against_model(path: Path, metadata: CheckpointMetadata, destination: Path) -> None:
    """Check `metadata` against the model in `path` as `melep rank` would: a MetadataConflict if it contradicts it.

    The checkpoint is loaded on the CPU with this metadata (the input shape, declared outputs and widths are
    checked then); when only a forward pass tells the rest, one zero record runs (`run_zero_record`). If that
    record cannot run (the model needs metadata not given yet), the metadata is written with a warning naming
    what could not be checked.
    """
    try:
        checkpoint = load_checkpoint(path, device="cpu", warn_defaults=False, metadata=metadata)
        if not needs_zero_record(checkpoint):
            return
        samples, error = run_zero_record(checkpoint)
    except MetadataConflict as conflict:
        raise MetadataConflict(f"{conflict}; {destination} not written") from None
    unchecked = [key for key in _RUN_CHECKED_KEYS if getattr(metadata, key) is not None]
    if error is not None and unchecked:
        logger.warning(
            "%s: %s not checked against the model: a zero record of %d samples did not run (%s)",
            path,
            " and ".join(unchecked),
            samples,
            error,
        )


def _torchscript_extra_files(path: Path) -> dict[str, bytes]:
    """Extra files of a TorchScript archive, read straight from the zip (`<archive>/extra/<name>`)."""
    with zipfile.ZipFile(path) as archive:
        files = {}
        for entry in archive.namelist():
            parts = entry.split("/")
            if len(parts) == 3 and parts[1] == "extra" and parts[2]:
                files[parts[2]] = archive.read(entry)
        return files


def _annotate_torchscript(path: Path, destination: Path, text: str) -> None:
    import torch

    extra_files: dict[str, Any] = dict.fromkeys(_torchscript_extra_files(path), "")
    try:
        with quiet_torch_jit():
            module = torch.jit.load(str(path), map_location="cpu", _extra_files=extra_files)
    except Exception as error:
        raise CheckpointError(f"{path}: not a loadable TorchScript archive ({one_line(error)})") from None
    extra_files[EXTRA_FILE] = text

    with atomic_path(destination) as temporary, quiet_torch_jit():
        torch.jit.save(module, str(temporary), _extra_files=extra_files)
