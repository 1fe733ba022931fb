"""Atomic file writes: a temporary file beside the target, renamed over it only when complete.

An interrupted or failed run therefore leaves either no output file or a complete one.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from melep_cli.errors import UsageError


@contextmanager
def atomic_path(target: str | Path, *, make_parents: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside `target`; rename it over `target` when the block succeeds.

    The result keeps `target`'s permissions when it exists, else the usual umask ones (mkstemp
    alone would leave 0600). A missing directory is created, unless `make_parents` is False (the
    CLI's --output: a typo in a path is an error there, as in most tools, not a new directory tree);
    then, like a `target` that is a directory, it is a UsageError before anything is written.
    """
    target = Path(target)
    directory = target.parent
    if target.is_dir():
        raise UsageError(f"{target}: is a directory")
    if make_parents:
        directory.mkdir(parents=True, exist_ok=True)
    elif not directory.is_dir():
        raise UsageError(f"{directory}: no such directory (to write {target.name} in)")
    descriptor, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=directory)
    os.close(descriptor)
    temporary = Path(name)
    try:
        yield temporary
        mode = target.stat().st_mode & 0o777 if target.exists() else 0o666 & ~_umask()
        os.chmod(temporary, mode)
        os.replace(temporary, target)
    finally:
        temporary.unlink(missing_ok=True)


def atomic_write_text(path: str | Path, text: str, *, make_parents: bool = True) -> None:
    """Write `text` (UTF-8) to `path` atomically (`make_parents` as for `atomic_path`)."""
    with (
        atomic_path(path, make_parents=make_parents) as temporary,
        temporary.open("w", encoding="utf-8", newline="") as handle,
    ):
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
