"""The few exception types the library raises; the CLI maps them to exit codes.

Every message is one line that names the file (or array) and the problem, so the
CLI can print it as it is.
"""

from __future__ import annotations

from collections.abc import Callable


class MelepError(Exception):
    """Base of every error the library raises on purpose.

    It names the library's parameters, never a CLI flag: `parameter`, the one at fault, starts the
    message ("folds: no fold in ''"); `hint`, what to do, ends it, with {name} for each parameter it
    names ("pass {labels_csv} with the labels": a constant template, never text from a file).
    `naming(name_of)` is the message with every parameter called `name_of(parameter)` instead: the CLI
    passes the running command's flags ("--folds: ...", "pass --labels-csv with the labels").
    """

    exit_code = 2
    #: Where the problem lies when it stops one checkpoint in `rank`: "checkpoint" (its own), or "target" /
    #: "machine" (every checkpoint that meets it fails alike: when it stops them all, it is one error).
    scope = "checkpoint"
    #: The problem without the file it was met in, for that one error.
    reason: str | None = None

    def __init__(self, message: str, *, parameter: str | None = None, hint: str | None = None) -> None:
        #: The message without the parameter's name and the hint.
        self.detail = message
        self.parameter = parameter
        self.hint = hint
        super().__init__(self.naming())

    def naming(self, name_of: Callable[[str], str] = str) -> str:
        """The message, each parameter it names called `name_of(parameter)` (default: the parameter's name)."""
        text = f"{name_of(self.parameter)}: {self.detail}" if self.parameter else self.detail
        return f"{text}; {fill_names(self.hint, name_of)}" if self.hint else text


def fill_names(template: str, name_of: Callable[[str], str] = str) -> str:
    """`template` with each {parameter} replaced by `name_of(parameter)`."""
    return template.format_map(_Names(name_of))


class _Names(dict):
    """`str.format_map`'s names: every {parameter} is what `name_of` returns for it."""

    def __init__(self, name_of: Callable[[str], str]) -> None:
        super().__init__()
        self.name_of = name_of

    def __missing__(self, key: str) -> str:
        return self.name_of(key)


class UsageError(MelepError):
    """Options that contradict each other or name things that do not exist."""


class InputError(MelepError, ValueError):
    """Arrays or files given to the metric or `melep score` that it cannot use."""


class TargetError(MelepError):
    """A target (HDF5 file, WFDB directory, PTB-XL tree, labels CSV) that cannot be read."""


class CheckpointError(MelepError):
    """A checkpoint that cannot be loaded, described or run.

    In `melep rank` this fails that one checkpoint (an error row, exit 1), never the run.
    """

    exit_code = 1


class MissingLeadsError(InputError):
    """The target lacks leads a checkpoint needs: a problem of the target when no checkpoint finds its leads."""

    scope = "target"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.reason = message


class DeviceUnavailableError(CheckpointError):
    """The device asked for (with no fallback) cannot run this checkpoint's runtime: a problem of the machine."""

    scope = "machine"

    def __init__(self, where: str, reason: str) -> None:
        super().__init__(f"{where}: {reason}")
        self.reason = reason


class RefusedPickleError(CheckpointError):
    """A pickled file (torch.save, pickle) given as a checkpoint: refused unread (unpickling can run code)."""


class TargetUnsuitedError(InputError):
    """The target does not suit a score (a single-label score on a multi-label target): the same for every
    checkpoint, so `rank` reports it once."""

    scope = "target"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.reason = message
