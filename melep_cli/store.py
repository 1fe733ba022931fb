"""The outputs store: what the forward stage computed, kept on disk so that no forward pass is run twice.

One HDF5 file per (checkpoint bytes, target files, selected records, precision), named by a digest of
those (`EntryKey`). Datasets `outputs` (n x Z, as the model emitted them, before any activation),
`record_ids` (n,), `features` (n x D, when the checkpoint declares a features output), `skipped_ids` and
`skipped_reasons` (records that could not be decoded); attributes say what the entry belongs to
(docs/cache.md). The input spec is a function of the checkpoint's bytes (its metadata is embedded or in
the sidecar, both digested) and of the target, so the key covers it; the entry records it.

Entries are written to a temporary file and renamed into place, so a reader sees a complete entry or
none, and two processes filling the same entry both finish (the last rename wins; both wrote the same
outputs). An entry that cannot be read, or that does not match its key, is a miss with one warning.

An entry may be partial: the records an adaptive rank fed that checkpoint before it stopped (attribute
`partial`). `lookup(..., partial=True)` returns such an entry, so that the forward stage runs the model only on
the records it lacks; a plain `lookup` returns complete entries only.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from melep_cli.checkpoints.metadata import sidecar_path
from melep_cli.errors import CheckpointError, UsageError

log = logging.getLogger("melep")

#: The environment variable naming the cache directory.
CACHE_ENV = "MELEP_CACHE"
#: Layout version of an entry: entries of another version are misses (and `melep cache clear` removes them).
STORE_FORMAT = 1
#: Entries live in this subdirectory of the cache directory, as `<key>.h5`.
ENTRIES = "outputs"
ENTRY_SUFFIX = ".h5"

_STRINGS = h5py.string_dtype("utf-8")


def default_cache_dir() -> Path:
    """$MELEP_CACHE, else $XDG_CACHE_HOME/melep, else ~/.cache/melep."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]).expanduser() / "melep"
    return Path.home() / ".cache" / "melep"


def file_digest(path: Path) -> str:
    """SHA-256 of a checkpoint's bytes and of its sidecar's (metadata there changes what the model is fed)."""
    digest = hashlib.sha256()
    try:
        with path.open("rb") as handle:
            digest.update(hashlib.file_digest(handle, "sha256").digest())
        sidecar = sidecar_path(path)
        if sidecar.is_file():
            digest.update(b"sidecar")
            digest.update(sidecar.read_bytes())
    except OSError as error:
        raise CheckpointError(f"{path}: cannot read ({error.strerror or error})") from None
    return digest.hexdigest()


def files_fingerprint(paths: Iterable[Path]) -> str:
    """A digest of every file's path, size and modification time (a missing file counts as missing).

    Cheap (one stat per file) and never stale in practice: rewriting a file changes its mtime.
    """
    digest = hashlib.sha256()
    for path in paths:
        try:
            status = os.stat(path)
            digest.update(f"{os.path.abspath(path)}\0{status.st_size}\0{status.st_mtime_ns}\n".encode())
        except OSError:
            digest.update(f"{os.path.abspath(path)}\0missing\n".encode())
    return digest.hexdigest()


def ids_digest(record_ids: Sequence[str]) -> str:
    """A digest of the selected record ids, in order: folds, CSV joins and exclusions change it."""
    return hashlib.sha256("\0".join(record_ids).encode()).hexdigest()


@dataclass(frozen=True)
class EntryKey:
    """What an entry's outputs depend on. Labels are not part of it: re-ranking on other labels is a hit."""

    checkpoint_digest: str
    target_fingerprint: str
    records_digest: str
    reading: str  # JSON of the reading options that change decoded signals (the rate of the files read)
    precision: str

    @property
    def digest(self) -> str:
        text = json.dumps([STORE_FORMAT, *self.__dict__.values()])
        return hashlib.sha256(text.encode()).hexdigest()[:40]


@dataclass
class StoredOutputs:
    """One entry as read back: the outputs, their record ids, and what the forward stage recorded."""

    path: Path
    outputs: np.ndarray
    record_ids: list[str]
    features: np.ndarray | None
    skipped: list[tuple[str, str]]
    attributes: dict[str, Any] = field(default_factory=dict)
    complete: bool = True  # every record of the target's selection is scored or skipped

    @property
    def covered(self) -> set[str]:
        """The record ids the entry accounts for: scored or skipped."""
        return {*self.record_ids, *(record for record, _ in self.skipped)}

    @property
    def metadata(self) -> dict[str, Any]:
        """The checkpoint's resolved metadata as the forward stage saw it (labels, output, source_prevalence)."""
        return json.loads(self.attributes.get("metadata", "{}"))


class OutputsStore:
    """The cache directory: `lookup` an entry by key, `save` one, `entries` / `clear` for `melep cache`."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory).expanduser()
        if self.directory.exists() and not self.directory.is_dir():
            raise UsageError(f"{self.directory}: the cache is not a directory")

    @property
    def entries_dir(self) -> Path:
        return self.directory / ENTRIES

    def path_for(self, key: EntryKey) -> Path:
        return self.entries_dir / f"{key.digest}{ENTRY_SUFFIX}"

    def lookup(self, key: EntryKey, expected_ids: Sequence[str], *, partial: bool = False) -> StoredOutputs | None:
        """The stored outputs for `key`, or None. A damaged entry, or one whose records are not exactly
        `expected_ids` (scored or skipped), is a miss with a warning; the next save replaces it. With `partial`,
        an entry covering some of `expected_ids` (and no other record) is returned too (`StoredOutputs.complete`
        says which); without it, a partial entry is a miss without a warning."""
        path = self.path_for(key)
        if not path.is_file():
            return None
        try:
            stored = read_entry(path)
            problem = _mismatch(stored, key, expected_ids, partial=True)
            if problem is None:
                stored.complete = _covers(stored, expected_ids)
                if not stored.complete and not partial:
                    return None
        except Exception as error:  # h5py raises OSError, KeyError, ValueError, ... for damaged files
            problem = f"{type(error).__name__}: {error}"
        if problem is not None:
            log.warning(f"{path}: damaged cache entry ({problem}); running the forward pass again")
            return None
        return stored

    def save(
        self,
        key: EntryKey,
        *,
        outputs: np.ndarray,
        record_ids: Sequence[str],
        features: np.ndarray | None,
        skipped: Sequence[tuple[str, str]],
        attributes: dict[str, Any],
    ) -> Path:
        """Write one entry atomically (a temporary file renamed into place) and return its path."""
        path = self.path_for(key)
        try:
            self.entries_dir.mkdir(parents=True, exist_ok=True)
            descriptor, name = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".tmp", dir=self.entries_dir)
        except OSError as error:
            raise UsageError(f"{self.directory}: cannot write to the cache ({error.strerror or error})") from None
        os.close(descriptor)
        temporary = Path(name)
        try:
            with h5py.File(temporary, "w") as handle:
                handle.create_dataset("outputs", data=outputs)
                handle.create_dataset("record_ids", data=list(record_ids), dtype=_STRINGS)
                if features is not None:
                    handle.create_dataset("features", data=features)
                handle.create_dataset("skipped_ids", data=[record for record, _ in skipped], dtype=_STRINGS)
                handle.create_dataset("skipped_reasons", data=[reason for _, reason in skipped], dtype=_STRINGS)
                handle.attrs.update(
                    {
                        "store_format": STORE_FORMAT,
                        "key": key.digest,
                        "checkpoint_digest": key.checkpoint_digest,
                        "target_fingerprint": key.target_fingerprint,
                        "records_digest": key.records_digest,
                        "target_reading": key.reading,
                        "requested_precision": key.precision,
                        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                        **attributes,
                    }
                )
            os.chmod(temporary, 0o644)
            os.replace(temporary, path)
        except OSError as error:
            raise UsageError(f"{self.directory}: cannot write to the cache ({error.strerror or error})") from None
        finally:
            temporary.unlink(missing_ok=True)
        return path

    def entries(self) -> list[Path]:
        """Every entry file, oldest first."""
        if not self.entries_dir.is_dir():
            return []
        found = [path for path in self.entries_dir.iterdir() if path.suffix == ENTRY_SUFFIX and path.is_file()]
        return sorted(found, key=lambda path: (path.stat().st_mtime, path.name))

    def describe(self) -> list[dict[str, Any]]:
        """One dict per entry for `melep cache list`: file, size, what it belongs to; damaged ones say so."""
        described = []
        for path in self.entries():
            info: dict[str, Any] = {"entry": str(path), "bytes": path.stat().st_size}
            try:
                with h5py.File(path, "r", locking=False) as handle:
                    attributes = dict(handle.attrs)
                    shape = handle["outputs"].shape
                info.update(
                    checkpoint=str(attributes.get("checkpoint_path", "")),
                    target=str(attributes.get("target_path", "")),
                    records=int(shape[0]),
                    outputs=int(shape[1]) if len(shape) > 1 else 0,
                    precision=str(attributes.get("precision", "")),
                    device=str(attributes.get("device", "")),
                    created=str(attributes.get("created", "")),
                    melep_version=str(attributes.get("melep_version", "")),
                    status="ok" if int(attributes.get("store_format", -1)) == STORE_FORMAT else "old format",
                )
            except Exception as error:  # a damaged entry is listed, never fatal
                info.update(status=f"damaged ({type(error).__name__})")
            described.append(info)
        return described

    def clear(self) -> tuple[int, int]:
        """Remove every entry (and leftover temporary files); (entries removed, bytes freed)."""
        count = freed = 0
        if not self.entries_dir.is_dir():
            return 0, 0
        for path in list(self.entries_dir.iterdir()):
            if path.is_file() and (path.suffix == ENTRY_SUFFIX or path.name.endswith(".tmp")):
                size = path.stat().st_size
                with contextlib.suppress(FileNotFoundError):  # another process removed or replaced it
                    path.unlink()
                    count += path.suffix == ENTRY_SUFFIX
                    freed += size
        return count, freed


def read_entry(path: Path) -> StoredOutputs:
    """Read one entry whole (outputs are n x Z: small beside the signals they came from)."""
    with h5py.File(path, "r", locking=False) as handle:
        outputs = np.asarray(handle["outputs"][()])
        record_ids = [_text(value) for value in handle["record_ids"][()]]
        features = np.asarray(handle["features"][()]) if "features" in handle else None
        skipped_ids = [_text(value) for value in handle["skipped_ids"][()]]
        reasons = [_text(value) for value in handle["skipped_reasons"][()]]
        attributes = {name: _attribute(value) for name, value in handle.attrs.items()}
    return StoredOutputs(path, outputs, record_ids, features, list(zip(skipped_ids, reasons)), attributes)


def _mismatch(
    stored: StoredOutputs, key: EntryKey, expected_ids: Sequence[str], *, partial: bool = False
) -> str | None:
    """Why a stored entry cannot stand for `key`, or None. With `partial`, a subset of `expected_ids` will do."""
    attributes = stored.attributes
    if attributes.get("store_format") != STORE_FORMAT:
        return f"layout version {attributes.get('store_format')}, this melep writes {STORE_FORMAT}"
    if attributes.get("key") != key.digest:
        return "its key attribute does not match its name"
    outputs, ids = stored.outputs, stored.record_ids
    if outputs.ndim != 2 or outputs.shape[0] != len(ids) or not np.issubdtype(outputs.dtype, np.floating):
        return f"outputs of shape {outputs.shape} and type {outputs.dtype} for {len(ids)} record ids"
    if not np.isfinite(outputs).all():
        return "non-finite outputs"
    if stored.features is not None and (stored.features.ndim != 2 or stored.features.shape[0] != len(ids)):
        return f"features of shape {stored.features.shape} for {len(ids)} record ids"
    covered = [*ids, *(record for record, _ in stored.skipped)]
    described = f"{len(ids)} scored and {len(stored.skipped)} skipped records, the target selects {len(expected_ids)}"
    if partial:
        if len(set(covered)) != len(covered) or not set(covered) <= set(expected_ids):
            return described
    elif len(covered) != len(expected_ids) or set(covered) != set(expected_ids):
        return described
    return None


def _covers(stored: StoredOutputs, expected_ids: Sequence[str]) -> bool:
    return len(stored.record_ids) + len(stored.skipped) == len(set(expected_ids))


def _text(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _attribute(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, np.generic):
        return value.item()
    return value
