"""The few exception types the library raises; the CLI maps them to exit codes.

Every message is one line that names the file (or array) and the problem, so the
CLI can print it as it is.
"""

from __future__ import annotations


class MelepError(Exception):
    """Base of every error the library raises on purpose."""

    exit_code = 2
    #: Where the problem lies when it stops one checkpoint in `rank`: "checkpoint" (its own), or "target" /
    #: "machine" (every checkpoint that meets it fails alike: when it stops them all, it is one error).
    scope = "checkpoint"
    #: The problem without the file it was met in, for that one error.
    reason: str | None = None


class UsageError(MelepError):
    """Options that contradict each other or name things that do not exist.

    `parameter`: the Python parameter at fault, when there is one; the message then starts with it
    ("folds: no fold in ''"), and the CLI names the option the user typed instead ("--folds: ...").
    """

    def __init__(self, message: str, *, parameter: str | None = None) -> None:
        #: The message without the parameter's name.
        self.detail = message
        self.parameter = parameter
        super().__init__(self.naming(parameter) if parameter else message)

    def naming(self, name: str) -> str:
        """The message with `name` (a CLI flag, say) for the parameter."""
        return f"{name}: {self.detail}"


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
