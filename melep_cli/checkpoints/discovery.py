"""Which files are checkpoints, and the unique names users see for them."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from melep_cli.errors import UsageError

ONNX_SUFFIXES = (".onnx",)
TORCHSCRIPT_SUFFIXES = (".pt", ".pth", ".ts", ".torchscript")
CHECKPOINT_SUFFIXES = ONNX_SUFFIXES + TORCHSCRIPT_SUFFIXES


def is_checkpoint_path(path: str | Path) -> bool:
    """True for an existing file with a checkpoint suffix (.onnx, .pt, .pth, .ts, .torchscript; any case).

    Cheap and content-blind on purpose: `melep inspect` uses it to send every other path (a target
    file or directory) elsewhere. `.json` sidecars are metadata, never checkpoints.
    """
    path = Path(path)
    return path.suffix.lower() in CHECKPOINT_SUFFIXES and path.is_file()


def discover_checkpoints(paths: Sequence[str | Path], *, recursive: bool = False) -> list[Path]:
    """Checkpoint files named by `paths`: files as given, directories searched (below too if `recursive`).

    Directory entries are sorted by path; duplicates (the same file reached twice) are kept once.
    A path that does not exist, a named file that is not a checkpoint, or no checkpoint at all is
    a UsageError.
    """
    found: list[Path] = []
    for given in paths:
        path = Path(given)
        if path.is_dir():
            pattern = path.rglob("*") if recursive else path.iterdir()
            inside = sorted(entry for entry in pattern if is_checkpoint_path(entry))
            if not inside:
                where = "in or below" if recursive else "in"
                raise UsageError(
                    f"{path}: no checkpoints ({', '.join(CHECKPOINT_SUFFIXES)} files) {where} it",
                    hint=None if recursive else "pass {recursive} to search subdirectories",
                )
            found.extend(inside)
        elif path.is_file():
            if path.suffix.lower() not in CHECKPOINT_SUFFIXES:
                raise UsageError(f"{path}: not a checkpoint file (expected one of {', '.join(CHECKPOINT_SUFFIXES)})")
            found.append(path)
        else:
            raise UsageError(f"{path}: no such file or directory")
    unique: dict[Path, Path] = {}
    for path in found:
        unique.setdefault(path.resolve(), path)
    if not unique:
        raise UsageError("no checkpoints given")
    return list(unique.values())


def unique_names(paths: Sequence[str | Path]) -> list[str]:
    """Short, unique display names: file stems, widened only where two checkpoints share one.

    A clash is resolved step by step: the file name with its suffix (`model.onnx`, `model.pt`),
    then the parent directory and stem (`a/model`), then the parent and file name, and so on.
    """
    resolved = [Path(path).resolve() for path in paths]
    levels = [0] * len(resolved)
    while True:
        names = [_name_at_level(path, level) for path, level in zip(resolved, levels)]
        counts = Counter(names)
        clashing = [index for index, name in enumerate(names) if counts[name] > 1]
        widenable = [index for index in clashing if levels[index] <= 2 * len(resolved[index].parent.parts)]
        if not widenable:
            break
        for index in widenable:
            levels[index] += 1
    # Only the same file given twice gets here with a clash left: number the repeats.
    seen: Counter[str] = Counter()
    for index, name in enumerate(names):
        seen[name] += 1
        if seen[name] > 1:
            names[index] = f"{name} ({seen[name]})"
    return names


def _name_at_level(path: Path, level: int) -> str:
    """Level 2k: k parent directories and the stem; level 2k+1: k parents and the file name."""
    parents = path.parent.parts
    depth = level // 2
    if depth >= len(parents):
        return str(path)
    leaf = path.name if level % 2 else path.stem
    return "/".join([*parents[len(parents) - depth :], leaf]) if depth else leaf
