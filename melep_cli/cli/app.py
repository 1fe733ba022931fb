"""The Typer application and what every command shares: error mapping, logging, options.

Exit codes: 0 success; 1 at least one checkpoint failed (rank); 2 usage, input or target
errors; 3 an internal error (a bug: rerun with --debug and report it); 130 interrupted.
"""

from __future__ import annotations

import contextvars
import enum
import functools
import inspect
import io
import logging
import os
import re
import shlex
import sys
import textwrap
import traceback
import types
import typing
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console, RenderableType
from rich.markup import escape as rich_escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from typer.core import TyperArgument, TyperCommand, TyperGroup, TyperOption

from melep_cli.errors import MelepError, UsageError
from melep_cli.metric import ACTIVATIONS, WEIGHTINGS

EXIT_OK = 0
EXIT_CHECKPOINT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERNAL = 3
EXIT_INTERRUPTED = 130

_Function = TypeVar("_Function", bound=Callable[..., Any])


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
    markdown = "markdown"  # only commands whose --format is MarkdownFormatOption (rank) offer it

    def __str__(self) -> str:
        # The value, as on the command line: Typer versions that convert str(value) back find the member.
        return self.value


class _PlainFormat(str, enum.Enum):
    """The --format choices of a command without a Markdown rendering (OutputCheckedCommand makes them
    OutputFormat members before the command runs)."""

    table = "table"
    json = "json"
    csv = "csv"

    def __str__(self) -> str:
        return self.value


#: --output extensions that choose the format when --format is not given. .md/.markdown files get
#: Markdown from a command that offers it (rank), else the table as plain text, like .txt.
EXTENSION_FORMATS = {
    ".json": OutputFormat.json,
    ".csv": OutputFormat.csv,
    ".txt": OutputFormat.table,
    ".md": OutputFormat.markdown,
    ".markdown": OutputFormat.markdown,
}
#: Extensions that promise one format, so another explicit --format contradicts them (a .txt or .md
#: file can hold any text).
_STRICT_EXTENSIONS = (".json", ".csv")
#: Files a command reads from a directory input: checkpoints, WFDB/Challenge records, PTB-XL tables.
RECORD_SUFFIXES = (".hea", ".dat", ".mat", ".csv")


DebugOption = Annotated[bool, typer.Option("--debug", help="Show the full traceback on errors.")]
QuietOption = Annotated[bool, typer.Option("--quiet", "-q", help="No progress or warnings on stderr.")]
FormatOption = Annotated[
    _PlainFormat,
    typer.Option(
        "--format",
        "-f",
        help="Output format. With --output and no --format: json for .json, csv for .csv, else table.",
        case_sensitive=False,
    ),
]
#: --format of a command that also renders Markdown (a GitHub-flavoured table, e.g. for a CI summary).
MarkdownFormatOption = Annotated[
    OutputFormat,
    typer.Option(
        "--format",
        "-f",
        help="Output format. With --output and no --format: json for .json, csv for .csv, markdown for .md, "
        "else table.",
        case_sensitive=False,
    ),
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
        raise fail(error_message(error), error.exit_code) from None
    except KeyboardInterrupt:
        raise fail("interrupted", EXIT_INTERRUPTED) from None
    except Exception as error:
        if debug:
            traceback.print_exc(file=sys.stderr)
        raise fail(
            f"internal error: {type(error).__name__}: {error} (rerun with --debug for the traceback)",
            EXIT_INTERNAL,
        ) from None


def error_message(error: MelepError) -> str:
    """The error's message for the command line: the parameters it names called by the command's flags."""
    return error.naming(flag_of)


def flag_of(parameter: str) -> str:
    """The running command's name for a library parameter: its option's first flag (`folds` -> `--folds`)
    or its argument's metavar (`output` -> `OUTPUT`); the parameter's own name where the command has none."""
    command = _RUNNING.get()
    for param in command.params if command is not None else ():
        if param.name == parameter:
            return param.opts[0] if isinstance(param, TyperOption) else param.human_readable_name
    return parameter


def split_names(value: str | None) -> list[str] | None:
    """'a,b, c' -> ['a', 'b', 'c']; None stays None."""
    if value is None:
        return None
    names = [name.strip() for name in value.split(",")]
    return [name for name in names if name]


def choice_enum(name: str, values: Iterable[str], doc: str) -> Any:
    """A str Enum whose members are `values` (member name = value): a CLI choice built from a library tuple."""
    choices = enum.Enum(name, {value: value for value in values}, type=str, module=__name__, qualname=name)
    choices.__doc__ = doc
    return choices


#: How checkpoint outputs become probabilities (`melep_cli.metric.ACTIVATIONS`).
ActivationName = choice_enum("ActivationName", ACTIVATIONS, "How checkpoint outputs become probabilities.")
#: Mean over target labels (`melep_cli.metric.WEIGHTINGS`).
WeightingName = choice_enum("WeightingName", WEIGHTINGS, "Mean over target labels.")


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
    typer.Option(
        "--output",
        "-o",
        metavar="FILE",
        help="Write the result to this file (atomically) instead of stdout. Its directory must exist, and it "
        "may not be one of the command's inputs.",
    ),
]


class _Reads:
    """`Annotated` marker of a str parameter naming a file the command reads (FILE or FILE:DATASET).

    Path parameters are inputs anyway; this marks the ones typed str, such as `score`'s arrays.
    """

    def __repr__(self) -> str:
        return "READS"


READS = _Reads()


class _Writes:
    """`Annotated` marker of a parameter naming a further file the command writes (`rank --report`): checked
    before the command runs as --output is (`check_output_path`), and never counted as an input."""

    def __repr__(self) -> str:
        return "WRITES"


WRITES = _Writes()


def output_format_for(explicit: OutputFormat | None, output: Path | None, *, markdown: bool = False) -> OutputFormat:
    """The format to write: `explicit` (--format) if given, else the one `output`'s extension names, else table.

    `markdown`: whether the command renders Markdown (else a .md file gets the table as plain text). An
    explicit format that contradicts a .json or .csv extension is a UsageError.
    """
    suffix = output.suffix.lower() if output is not None else ""
    implied = EXTENSION_FORMATS.get(suffix)
    if implied is OutputFormat.markdown and not markdown:
        implied = OutputFormat.table
    if explicit is None:
        return implied or OutputFormat.table
    if implied is not None and implied is not explicit and suffix in _STRICT_EXTENSIONS:
        raise UsageError(
            f"--format {explicit.value} contradicts --output {output} (a {suffix} file is {implied.value}); "
            "drop --format or change the extension"
        )
    return explicit


def check_output_path(output: str | Path, inputs: Iterable[Any], *, option: str = "--output") -> None:
    """Refuse, as a UsageError, an output file that cannot be written or would replace an input.

    Refused: an existing directory; a parent directory that does not exist (none is created); a
    file that is one of `inputs` - the same path once resolved, or the same file through a symlink
    or hard link - or the `<stem>.json` metadata sidecar of an input checkpoint. An input that is
    a directory protects the existing files in or below it that a command reads there (checkpoint
    suffixes, `.hea`/`.dat`/`.mat`/`.csv` records and tables, checkpoint sidecars); other files
    in it, such as an earlier result, may be replaced. `inputs` holds paths, FILE:DATASET strings
    (FILE is the input) or lists of them; None is skipped. Cheap, so commands run it before any work.
    """
    output = Path(output)
    if output.is_dir():
        raise UsageError(f"{output}: is a directory; {option} needs a file name")
    parent = output.parent
    if not parent.is_dir():
        problem = "not a directory" if parent.exists() else "no such directory"
        raise UsageError(f"{parent}: {problem} (for {option} {output}); create it first")
    for given in _input_paths(inputs):
        reason = _read_by_command(output, given)
        if reason is not None:
            raise UsageError(f"{output}: {reason}; choose another {option}")


def _input_paths(value: Any) -> Iterator[Path]:
    """Every path `value` names: itself, the FILE of a FILE:DATASET string, each item of a list."""
    if value is None:
        return
    if isinstance(value, str | PurePath):
        text = str(value)
        yield Path(text)
        head, colon, _ = text.rpartition(":")
        if colon and head:
            yield Path(head)
    elif isinstance(value, Iterable):
        for item in value:
            yield from _input_paths(item)


def _read_by_command(output: Path, given: Path) -> str | None:
    """Why writing `output` would replace something read through the input `given`, or None."""
    from melep_cli.checkpoints.discovery import CHECKPOINT_SUFFIXES
    from melep_cli.checkpoints.metadata import sidecar_path

    if given.is_dir():
        if not output.is_file() or not output.resolve().is_relative_to(given.resolve()):
            return None
        if output.suffix.lower() in CHECKPOINT_SUFFIXES + RECORD_SUFFIXES:
            return f"is an input of this command (read from {given})"
        if output.suffix.lower() == ".json":
            for suffix in CHECKPOINT_SUFFIXES:
                for spelling in (suffix, suffix.upper()):
                    if output.with_suffix(spelling).is_file():
                        return f"is the metadata sidecar of {output.with_suffix(spelling)}, an input of this command"
        return None
    if _same_file(output, given):
        return "is an input of this command"
    if given.suffix.lower() in CHECKPOINT_SUFFIXES and _same_file(output, sidecar_path(given)):
        return f"is the metadata sidecar of {given}, an input of this command"
    return None


def _same_file(a: Path, b: Path) -> bool:
    """The same path once resolved, or (both existing) the same file by device and inode."""
    if a.resolve() == b.resolve():
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


@dataclass(frozen=True)
class _Roles:
    """Which parameters of a command function are its --output, --format, --quiet and inputs."""

    output: str | None = None
    format: str | None = None
    quiet: str | None = None
    inputs: tuple[str, ...] = field(default=())
    writes: tuple[str, ...] = field(default=())  # further output files (WRITES), checked as --output is
    markdown: bool = False  # --format offers markdown (MarkdownFormatOption)


def _option_info(alias: Any) -> Any:
    """The typer.Option object of a shared `Annotated` alias: a parameter uses the alias if it holds that object."""
    return alias.__metadata__[0]


@functools.cache
def _roles(function: Callable[..., Any]) -> _Roles:
    """Read the roles off the function's annotations: the shared Annotated aliases, READS, Path types."""
    output = format_ = quiet = None
    inputs: list[str] = []
    writes: list[str] = []
    markdown = False
    for name, hint in typing.get_type_hints(function, include_extras=True).items():
        metadata = getattr(hint, "__metadata__", ())
        if any(item is _option_info(OutputFileOption) for item in metadata):
            output = name
        elif any(item is _option_info(FormatOption) for item in metadata):
            format_ = name
        elif any(item is _option_info(MarkdownFormatOption) for item in metadata):
            format_, markdown = name, True
        elif WRITES in metadata:
            writes.append(name)
        elif any(item is _option_info(QuietOption) for item in metadata):
            quiet = name
        elif name != "return" and (READS in metadata or _names_paths(typing.get_args(hint)[0] if metadata else hint)):
            inputs.append(name)
    return _Roles(
        output=output, format=format_, quiet=quiet, inputs=tuple(inputs), writes=tuple(writes), markdown=markdown
    )


def _names_paths(hint: Any) -> bool:
    """True for Path, Path | None, list[Path] and the like."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType, list, tuple, Sequence):
        return any(_names_paths(argument) for argument in typing.get_args(hint) if argument is not type(None))
    return isinstance(hint, type) and issubclass(hint, PurePath)


@dataclass(frozen=True)
class _Writing:
    """What `emit` needs to announce a written file: the resolved format, and whether --quiet was given."""

    format: OutputFormat | None
    quiet: bool


_WRITING: contextvars.ContextVar[_Writing | None] = contextvars.ContextVar("melep_writing", default=None)
#: The command running (`flag_of` reads its options).
_RUNNING: contextvars.ContextVar[TyperCommand | None] = contextvars.ContextVar("melep_running", default=None)


#: An `Example:` (or `Examples:`) paragraph: one command per line, maybe one on the heading line.
_EXAMPLE_HEADING = re.compile(r"(Examples?):[ \t]*(.*)")
#: A line that starts a list item and so keeps its line break: "- item", "* item", "1. item".
_LIST_ITEM = re.compile(r"(?:[-*]|\d+[.)])\s")
#: Longest line of a choices metavar; longer lists break after a "|" rather than in the middle of a name.
_CHOICES_WIDTH = 20


def reflow_help(text: str | None) -> str | None:
    """Help text as the terminal should wrap it: the docstring's line breaks inside a paragraph removed.

    Rich help wraps at the terminal's width, so a docstring line break inside a sentence would break it
    mid-line. Blank lines still separate paragraphs; `Example:` paragraphs keep one command per line,
    indented by two spaces; list items ("- ...") keep their lines; a paragraph starting with \\b is kept as
    written (Click's convention); text after a form feed (\\f) is left for Click to drop.
    """
    if not text:
        return text
    shown, feed, hidden = inspect.cleandoc(text).partition("\f")
    paragraphs = re.split(r"\n[ \t]*\n", shown.strip())
    return "\n\n".join(_reflow_paragraph(paragraph) for paragraph in paragraphs if paragraph.strip()) + feed + hidden


def _reflow_paragraph(paragraph: str) -> str:
    if paragraph.startswith("\b"):
        return paragraph
    first, *rest = paragraph.splitlines()
    heading = _EXAMPLE_HEADING.fullmatch(first.strip())
    if heading is not None:
        commands = [heading.group(2), *textwrap.dedent("\n".join(rest)).splitlines()]
        # Escaped: an example is shown as typed, a `[...]` in it is not Rich markup.
        return "\n".join([f"{heading.group(1)}:", *(f"  {rich_escape(line)}" for line in commands if line.strip())])
    lines: list[str] = []
    for line in paragraph.splitlines():
        line = line.strip()
        if lines and not _LIST_ITEM.match(line):
            lines[-1] = f"{lines[-1]} {line}"
        else:
            lines.append(line)
    return "\n".join(lines)


def help_summary(text: str | None) -> str | None:
    """The one-line summary of a command's help (its first paragraph): what `melep --help` lists."""
    reflowed = reflow_help(text)
    return reflowed.split("\n\n", 1)[0].replace("\n", " ") if reflowed else reflowed


def plain_metavar(param: Any) -> str:
    """What a value of `param` is, in the words of the CLIs users know: PATH, FILE, DIR, N, TEXT, a|b|c.

    Typer would show Python types (`<list[Path]>`, `<int range>`) and `<bool>` for flags, which take no
    value: a flag gets none. A str option whose help says "comma-separated" takes a LIST; a float option
    named "...-rate" a rate in HZ.
    """
    if getattr(param, "is_flag", False) or getattr(param, "count", False):
        return ""
    descriptor = param.type_descriptor
    if descriptor.is_choice:
        return _choices_metavar(descriptor.choices or ())
    annotation = descriptor.annotation
    arguments = typing.get_args(annotation)
    if descriptor.is_tuple:
        return " ".join(_type_word(argument, param) for argument in arguments)
    if descriptor.is_list and arguments:
        annotation = arguments[0]
    return _type_word(annotation, param)


def _type_word(annotation: Any, param: Any) -> str:
    if param.type_descriptor.is_path or (isinstance(annotation, type) and issubclass(annotation, PurePath)):
        return {"file": "FILE", "dir": "DIR"}.get(param.type_descriptor.path_type, "PATH")
    if annotation is int:
        return "N"
    if annotation is float:
        return "HZ" if (param.name or "").endswith("rate") else "NUMBER"
    if annotation is str:
        return "LIST" if "comma-separated" in (param.help or "").lower() else "TEXT"
    return getattr(annotation, "__name__", str(annotation)).upper()


def _choices_metavar(choices: Iterable[Any]) -> str:
    """'table|json|csv'; a long list on several lines, each break after a '|'."""
    names = [str(choice.value if isinstance(choice, enum.Enum) else choice) for choice in choices]
    lines = [""]
    for index, name in enumerate(names):
        piece = name if index == len(names) - 1 else f"{name}|"
        if lines[-1] and len(lines[-1]) + len(piece) > _CHOICES_WIDTH:
            lines.append("")
        lines[-1] += piece
    return "\n".join(lines)


class _PlainArgument(TyperArgument):
    """A positional argument shown as its NAME (`melep score [OPTIONS] OUTPUTS LABELS`): no `{outputs}` in the
    usage line, no `<str>` type column (its help says what it is)."""

    def display_type_rich(self, ctx: typer.Context) -> str | None:
        return None

    def get_usage_pieces(self, ctx: typer.Context) -> list[str]:
        name = self.metavar or (self.name or "").upper()
        return [name if self.required else f"[{name}]"]


def _plain_params(params: list[Any]) -> list[Any]:
    """`params` with a `plain_metavar` for every option that has none, and arguments as `_PlainArgument`s.

    Done when a command's params are asked for, so it also reaches the --help option and Typer's
    completion options, which are added after the command is made. Idempotent.
    """
    for param in params:
        if isinstance(param, TyperOption) and param.metavar is None:
            param.metavar = plain_metavar(param)
        elif type(param) is TyperArgument:
            param.__class__ = _PlainArgument  # same fields; only how it is shown changes
            if param.metavar is None:
                param.metavar = (param.name or "").upper() + ("..." if param.nargs != 1 else "")
    return params


def _help_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    """A command's or group's constructor arguments with its help reflowed and its summary set."""
    help_text = kwargs.get("help")
    kwargs["help"] = reflow_help(help_text)
    if not kwargs.get("short_help"):
        kwargs["short_help"] = help_summary(help_text)
    return kwargs


class HelpCommand(TyperCommand):
    """A command whose help reads like uv's or ruff's: a one-line summary (also what `melep --help` lists), the
    paragraphs as the terminal wraps them, `Example:` lines kept, and metavars people know (`plain_metavar`)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **_help_kwargs(kwargs))

    def get_params(self, ctx: typer.Context) -> list[Any]:
        return _plain_params(super().get_params(ctx))


class HelpGroup(TyperGroup):
    """A group (`melep`, `melep cache`) with `HelpCommand`'s help; run without a subcommand it prints its help
    and exits 0, as `--help` does (Click's no_args_is_help would exit 2 with an empty error)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **_help_kwargs(kwargs))

    def get_params(self, ctx: typer.Context) -> list[Any]:
        return _plain_params(super().get_params(ctx))

    def parse_args(self, ctx: typer.Context, args: list[str]) -> list[str]:
        if not args and self.no_args_is_help and not ctx.resilient_parsing:
            typer.echo(ctx.get_help(), color=ctx.color)
            ctx.exit(EXIT_OK)
        return super().parse_args(ctx, args)


class OutputCheckedCommand(HelpCommand):
    """A command whose `OutputFileOption` is checked, and its format resolved, before the command runs.

    Every command of `app` is one, so no command repeats this: `check_output_path` against the
    command's inputs (its Path parameters and those marked READS), the same for each further file it
    writes (marked WRITES, such as `rank --report`; not the --output file either), then `output_format_for`
    from --format only if it was given on the command line, else from the extension. A problem is one
    error line and exit 2 before any work (a long `rank` never starts).
    """

    def invoke(self, ctx: typer.Context) -> Any:
        token = _RUNNING.set(self)
        try:
            return self._checked_invoke(ctx)
        finally:
            _RUNNING.reset(token)

    def _checked_invoke(self, ctx: typer.Context) -> Any:
        roles = _roles(inspect.unwrap(self.callback)) if self.callback is not None else _Roles()
        if roles.output is None:
            if roles.format is not None and ctx.params.get(roles.format) is not None:
                # --format as the command compares it (an OutputFormat), whichever choices it offered
                ctx.params[roles.format] = OutputFormat(ctx.params[roles.format])
            return super().invoke(ctx)
        output = ctx.params.get(roles.output)
        output = Path(output) if output is not None else None
        resolved = None
        try:
            inputs = [ctx.params.get(name) for name in roles.inputs]
            if output is not None:
                check_output_path(output, inputs)
            for name in roles.writes:
                written = ctx.params.get(name)
                if written is not None:
                    flag = flag_of(name)
                    check_output_path(written, inputs, option=flag)
                    if output is not None and _same_file(Path(written), output):
                        raise UsageError(f"{written}: is also the --output file; choose another {flag}")
            if roles.format is not None:
                given = ctx.params.get(roles.format)
                defaulted = getattr(ctx.get_parameter_source(roles.format), "name", "DEFAULT") == "DEFAULT"
                explicit = None if given is None or defaulted else OutputFormat(given)
                resolved = output_format_for(explicit, output, markdown=roles.markdown)
                ctx.params[roles.format] = resolved
        except MelepError as error:
            raise fail(error_message(error), error.exit_code) from None
        quiet = bool(ctx.params.get(roles.quiet)) if roles.quiet is not None else False
        token = _WRITING.set(_Writing(format=resolved, quiet=quiet))
        try:
            return super().invoke(ctx)
        finally:
            _WRITING.reset(token)


class MelepTyper(typer.Typer):
    """typer.Typer whose groups are `HelpGroup`s and whose commands are `OutputCheckedCommand`s.

    So every command and group, the root `melep` and `melep cache` included, gets the same help (see
    `HelpCommand`) and every `--output` is checked before a command runs.
    """

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("cls", HelpGroup)
        kwargs.setdefault("rich_markup_mode", "rich")
        kwargs.setdefault("pretty_exceptions_enable", False)
        super().__init__(**kwargs)

    def command(  # type: ignore[override]
        self, name: str | None = None, *, cls: type[TyperCommand] | None = None, **kwargs: Any
    ) -> Callable[[_Function], _Function]:
        return super().command(name, cls=cls or OutputCheckedCommand, **kwargs)


app = MelepTyper(
    name="melep",
    help=(
        "Rank pre-trained ECG checkpoints for a new multi-label task with MELEP (lower is better).\n\n"
        "One forward pass over the labelled target per checkpoint, stored in a cache: ranking the same "
        "target again, with other labels or weightings, runs none. Run `melep COMMAND --help` for a "
        "command's options and examples.\n\n"
        "Exit codes: 0 success, 1 a checkpoint failed (the others are ranked), 2 usage or input error, "
        "3 internal error, 130 interrupted.\n\n"
        "Example:\n"
        "melep rank -c ckpts/ -t data.h5\n"
        "melep inspect ckpts/model.onnx data.h5\n"
        "melep rank --help"
    ),
    no_args_is_help=True,
)


def emit(text: str | None, renderables: Sequence[RenderableType], output: Path | None) -> None:
    """Print machine-readable `text`, or else the Rich `renderables`, to stdout or to `output`.

    Writing `output` ends with one stderr line `melep: wrote FILE (FORMAT)` (none with --quiet), so
    a run with -o does not end silently.
    """
    from melep_cli.atomic import atomic_write_text

    kind = "table" if text is None else None
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
    if output is None:
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    try:
        atomic_write_text(output, text, make_parents=False)  # check_output_path found the directory
    except OSError as error:
        raise UsageError(f"{output}: cannot write ({error.strerror or error})") from None
    writing = _WRITING.get()
    if writing is not None and writing.quiet:
        return
    if kind is None and writing is not None and writing.format is not None:
        kind = writing.format.value
    stderr_console.print(f"melep: wrote {output}" + (f" ({kind})" if kind else ""), markup=False, highlight=False)


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


#: The arguments of the running command (without the program name), for reports that say how they were made.
invocation: contextvars.ContextVar[tuple[str, ...]] = contextvars.ContextVar("invocation", default=())


def command_line() -> str:
    """The running command as a shell would take it: `melep rank -c ... -t ...`."""
    return shlex.join(["melep", *invocation.get()])


def run(argv: Sequence[str] | None = None) -> int:
    """Run the CLI on `argv` and return its exit code; usage errors are one line on stderr."""
    command = typer.main.get_command(app)
    invocation.set(tuple(argv) if argv is not None else tuple(sys.argv[1:]))
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
    except SystemExit as exit_:
        # Typer's shell completion (--install-completion, --show-completion, the _MELEP_COMPLETE requests)
        # ends with sys.exit: its code is this run's.
        return exit_.code if isinstance(exit_.code, int) else EXIT_OK if exit_.code is None else EXIT_USAGE
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
