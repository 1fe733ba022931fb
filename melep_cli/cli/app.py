"""The Typer application and what every command shares: error mapping, logging, options.

Exit codes: 0 success; 1 at least one checkpoint failed (rank); 2 usage, input or target
errors; 3 an internal error (a bug: rerun with --debug and report it); 130 interrupted.
"""

from __future__ import annotations

import enum
import io
import logging
import sys
import traceback
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console, RenderableType
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from melep_cli.errors import MelepError, UsageError

EXIT_OK = 0
EXIT_CHECKPOINT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERNAL = 3
EXIT_INTERRUPTED = 130

app = typer.Typer(
    name="melep",
    help=(
        "Rank pre-trained ECG checkpoints for a new multi-label task with MELEP "
        "(one forward pass over the labelled target; lower is better).\n\n"
        "Exit codes: 0 success, 1 a checkpoint failed (the others are ranked), "
        "2 usage or input error, 3 internal error, 130 interrupted."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)

#: Results go to stdout; progress, warnings and errors go to stderr, so `--format json | jq` works.
stdout_console = Console(soft_wrap=True)
stderr_console = Console(stderr=True, soft_wrap=True)
#: Width of tables written to a pipe or a file.
PLAIN_TEXT_WIDTH = 200


class OutputFormat(str, enum.Enum):
    """How results are printed on stdout (or written with --output)."""

    table = "table"
    json = "json"
    csv = "csv"


DebugOption = Annotated[bool, typer.Option("--debug", help="Show the full traceback on errors.")]
QuietOption = Annotated[bool, typer.Option("--quiet", "-q", help="No progress or warnings on stderr.")]
FormatOption = Annotated[
    OutputFormat, typer.Option("--format", "-f", help="Output format on stdout.", case_sensitive=False)
]


class _StderrHandler(logging.Handler):
    """Library log records as one `melep: warning: ...` line each on stderr."""

    def emit(self, record: logging.LogRecord) -> None:
        level = "warning" if record.levelno >= logging.WARNING else "info"
        stderr_console.print(f"melep: {level}: {record.getMessage()}", markup=False, highlight=False)


def configure_logging(*, quiet: bool = False, verbose: bool = False) -> None:
    """Send the `melep` logger to stderr: warnings by default, nothing with --quiet."""
    logger = logging.getLogger("melep")
    logger.handlers[:] = [_StderrHandler()]
    logger.propagate = False
    logger.setLevel(logging.ERROR if quiet else logging.INFO if verbose else logging.WARNING)


def fail(message: str, code: int = EXIT_USAGE) -> typer.Exit:
    """Print one error line on stderr and return the Exit to raise."""
    stderr_console.print(f"melep: error: {message}", markup=False, highlight=False)
    return typer.Exit(code)


@contextmanager
def cli_errors(debug: bool) -> Iterator[None]:
    """Turn library exceptions into one stderr line and an exit code (a traceback with --debug)."""
    try:
        yield
    except typer.Exit:
        raise
    except MelepError as error:
        if debug:
            traceback.print_exc(file=sys.stderr)
        raise fail(str(error), error.exit_code) from None
    except KeyboardInterrupt:
        raise fail("interrupted", EXIT_INTERRUPTED) from None
    except Exception as error:
        if debug:
            traceback.print_exc(file=sys.stderr)
        raise fail(
            f"internal error: {type(error).__name__}: {error} (rerun with --debug for the traceback)",
            EXIT_INTERNAL,
        ) from None


def split_names(value: str | None) -> list[str] | None:
    """'a,b, c' -> ['a', 'b', 'c']; None stays None."""
    if value is None:
        return None
    names = [name.strip() for name in value.split(",")]
    return [name for name in names if name]


class ActivationName(str, enum.Enum):
    """How checkpoint outputs become probabilities."""

    logits = "logits"
    probabilities = "probabilities"
    softmax = "softmax"


class WeightingName(str, enum.Enum):
    """Mean over target labels."""

    prevalence = "prevalence"
    paper = "paper"
    uniform = "uniform"


WeightingOption = Annotated[
    WeightingName,
    typer.Option(
        "--weighting",
        "-w",
        help="Mean over target labels: prevalence (authors' code, default), paper (eq. 5 literally), uniform.",
        case_sensitive=False,
    ),
]
OutputFileOption = Annotated[
    Path | None,
    typer.Option("--output", "-o", help="Write the result to this file (atomically) instead of stdout."),
]


def emit(text: str | None, renderables: Sequence[RenderableType], output: Path | None) -> None:
    """Print machine-readable `text`, or else the Rich `renderables`, to stdout or to `output`."""
    from melep_cli.atomic import atomic_write_text

    if text is None:
        if output is None and stdout_console.is_terminal:
            for renderable in renderables:
                stdout_console.print(renderable)
            return
        # A pipe or a file: plain text, wide enough that no name is cut (a terminal uses its own width).
        file_console = Console(file=io.StringIO(), width=PLAIN_TEXT_WIDTH, color_system=None)
        for renderable in renderables:
            file_console.print(renderable)
        text = file_console.file.getvalue()  # type: ignore[attr-defined]
    if output is not None:
        atomic_write_text(output, text)
    else:
        sys.stdout.write(text)
        sys.stdout.flush()


def parse_floats(value: str | None, option: str) -> list[float] | None:
    """'0.1, 0.2' -> [0.1, 0.2], or a UsageError naming the option."""
    if value is None:
        return None
    try:
        return [float(part) for part in split_names(value) or []]
    except ValueError:
        raise UsageError(f"{option}: expected comma-separated numbers, got {value!r}") from None


def _version(value: bool) -> None:
    if value:
        from melep_cli import __version__

        typer.echo(f"melep {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Rank pre-trained ECG checkpoints for a new multi-label task with MELEP (lower is better)."""


def run(argv: Sequence[str] | None = None) -> int:
    """Run the CLI on `argv` and return its exit code; usage errors are one line on stderr."""
    command = typer.main.get_command(app)
    try:
        result = command.main(args=list(argv) if argv is not None else None, prog_name="melep", standalone_mode=False)
    except typer.Exit as exit_:
        return exit_.exit_code
    except typer.Abort:
        stderr_console.print("melep: error: interrupted", markup=False, highlight=False)
        return EXIT_INTERRUPTED
    except typer.TyperException as error:
        context = getattr(error, "ctx", None)
        hint = f" (see '{context.command_path} --help')" if context is not None else ""
        stderr_console.print(f"melep: error: {error.format_message()}{hint}", markup=False, highlight=False)
        return error.exit_code
    return result if isinstance(result, int) else EXIT_OK


@contextmanager
def progress_bar(description: str, *, quiet: bool) -> Iterator[Callable[[int, int], None]]:
    """A Rich bar on stderr (records done/total, records/s, ETA), fed by a `(done, total)` callback.

    Silent with --quiet or when stderr is not a terminal, so logs and pipes stay clean.
    """
    enabled = not quiet and stderr_console.is_terminal
    with Progress(
        TextColumn(f"[bold]{description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeRemainingColumn(),
        console=stderr_console,
        transient=True,
        disable=not enabled,
    ) as bar:
        task = bar.add_task(description, total=None, rate="")

        def update(done: int, total: int) -> None:
            elapsed = bar.tasks[0].elapsed or 0.0
            rate = f"{done / elapsed:.0f} records/s" if elapsed > 0 else ""
            bar.update(task, completed=done, total=total, rate=rate)

        yield update
