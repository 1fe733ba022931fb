"""Tell a checkpoint's format from its bytes, and refuse pickles before anything is unpickled.

`torch.load` of a pickle runs whatever code the file names, so melep never calls it. A file is
classified from its first bytes and, for zip archives, from the entry names alone:

- TorchScript (`torch.jit.save`): a zip archive with `code/` entries (and `constants.pkl`);
  `torch.jit.load` reads it with TorchScript's own unpickler, which builds no Python objects.
- `torch.save` (a state_dict or a pickled nn.Module): a zip archive with `data.pkl` but no `code/`.
- Legacy `torch.save` / plain pickles: the pickle protocol byte 0x80 first.
- ONNX: a protobuf message, parsed by onnx / onnxruntime (no code runs).

The refusal names what the pickle holds, read with `pickletools.genops`, which only tokenises the
opcodes and never executes them.
"""

from __future__ import annotations

import pickletools
import zipfile
from pathlib import Path

from melep_cli.checkpoints.discovery import ONNX_SUFFIXES
from melep_cli.errors import CheckpointError, RefusedPickleError

_ZIP_MAGIC = b"PK\x03\x04"
_PICKLE_PROTOCOL = 0x80

EXPORT_HINT = (
    "export it for melep with torch.jit.save(torch.jit.trace(model.eval(), example_input), 'model.pt') "
    "or torch.onnx.export(model.eval(), (example_input,), 'model.onnx')"
)


def detect_format(path: str | Path) -> str:
    """'onnx' or 'torchscript' from the file's content, or a CheckpointError (pickles included)."""
    path = Path(path)
    try:
        with path.open("rb") as handle:
            head = handle.read(4)
    except OSError as error:
        raise CheckpointError(f"{path}: cannot read the checkpoint ({error.strerror or error})") from None
    if not head:
        raise CheckpointError(f"{path}: empty file, not a checkpoint")
    if head == _ZIP_MAGIC:
        return _classify_zip(path)
    if head[0] == _PICKLE_PROTOCOL:
        what = _describe_pickle(path.read_bytes())
        raise RefusedPickleError(
            f"{path}: refused to load {what} saved with torch.save/pickle (unpickling can run arbitrary code); "
            f"{EXPORT_HINT}"
        )
    if path.suffix.lower() in ONNX_SUFFIXES:
        return "onnx"
    raise CheckpointError(f"{path}: not a TorchScript archive (not a zip file) nor a pickle; {EXPORT_HINT}")


def _classify_zip(path: Path) -> str:
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            parts = [name.split("/") for name in names]
            if any(len(part) > 2 and part[1] == "code" for part in parts):
                return "torchscript"
            pickles = [name for name, part in zip(names, parts) if len(part) == 2 and part[1] == "data.pkl"]
            if pickles:
                what = _describe_pickle(archive.read(pickles[0]))
                raise RefusedPickleError(
                    f"{path}: refused to load {what} saved with torch.save (a pickle, not TorchScript; "
                    f"unpickling can run arbitrary code); {EXPORT_HINT}"
                )
    except zipfile.BadZipFile as error:
        raise CheckpointError(f"{path}: damaged zip archive ({error})") from None
    raise CheckpointError(f"{path}: a zip archive without TorchScript code/ entries, not a checkpoint")


def _describe_pickle(data: bytes) -> str:
    """'a state_dict', 'a pickled object (module.Class)' or 'a pickle', from the opcodes only (nothing runs).

    Legacy torch.save files are several pickles in a row (magic number, version, system info, data),
    so up to a few consecutive pickles are read.
    """
    globals_: list[str] = []
    offset = 0
    try:
        for _ in range(8):
            strings: list[str] = []
            end = None
            for opcode, argument, position in pickletools.genops(data[offset:]):
                if opcode.name in ("GLOBAL", "INST") and isinstance(argument, str):
                    globals_.append(argument.replace(" ", "."))
                elif opcode.name == "STACK_GLOBAL" and len(strings) >= 2:
                    globals_.append(f"{strings[-2]}.{strings[-1]}")
                if isinstance(argument, str):
                    strings.append(argument)
                if opcode.name == "STOP":
                    end = offset + position + 1
            if end is None or end >= len(data) or data[end] != _PICKLE_PROTOCOL:
                break
            offset = end
    except Exception:  # a truncated or odd pickle: still refused, just described less precisely
        pass
    classes = [name for name in globals_ if not _is_tensor_plumbing(name) and name != "collections.OrderedDict"]
    if classes:
        return f"a pickled object ({classes[0]})"
    return "a state_dict (weights without the model's code)" if globals_ else "a pickle"


def _is_tensor_plumbing(name: str) -> bool:
    """Globals every torch.save archive of plain tensors names (rebuild helpers, storages, dtypes)."""
    return name.startswith(("torch._utils.", "torch.serialization.")) or (
        name.startswith("torch.") and name.endswith(("Storage", "dtype", "Size"))
    )
