"""`melep cache list|clear`, and the --cache / --no-cache options of `rank` and `forward`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from melep_cli import report
from melep_cli.cli.app import (
    DebugOption,
    FormatOption,
    MelepTyper,
    OutputFormat,
    QuietOption,
    app,
    cli_errors,
    configure_logging,
    emit,
    stderr_console,
)
from melep_cli.errors import UsageError
from melep_cli.forward_pass import DEFAULT_CACHE, resolve_cache
from melep_cli.store import CACHE_ENV, OutputsStore

CacheOption = Annotated[
    Path | None,
    typer.Option(
        "--cache",
        metavar="DIR",
        help=f"Where forward-pass outputs are stored and read back (default: ${CACHE_ENV}, "
        "else $XDG_CACHE_HOME/melep, else ~/.cache/melep).",
        show_default=False,
    ),
]
NoCacheOption = Annotated[
    bool, typer.Option("--no-cache", help="Run every forward pass, and store nothing.", show_default=False)
]


def cache_choice(cache: Path | None, no_cache: bool) -> Path | str | None:
    """The library's `cache` argument for --cache DIR / --no-cache."""
    if no_cache and cache is not None:
        raise UsageError("--cache and --no-cache contradict each other: give one")
    if no_cache:
        return None
    return cache if cache is not None else DEFAULT_CACHE


cache_app = MelepTyper(
    help="Show or empty the store of forward-pass outputs.\n\n"
    "`melep rank` and `melep forward` store every checkpoint's outputs on a target there (--cache DIR, else "
    f"${CACHE_ENV}, else $XDG_CACHE_HOME/melep, else ~/.cache/melep), so that no forward pass runs twice.\n\n"
    "Example:\n"
    "melep cache list\n"
    "melep cache clear --cache /scratch/melep-cache",
    no_args_is_help=True,
)
app.add_typer(cache_app, name="cache")


def _store(cache: Path | None) -> OutputsStore:
    directory = resolve_cache(cache if cache is not None else DEFAULT_CACHE)
    assert directory is not None
    return OutputsStore(directory)


@cache_app.command("list")
def cache_list(
    cache: CacheOption = None,
    output_format: FormatOption = OutputFormat.table,
    quiet: QuietOption = False,
    debug: DebugOption = False,
) -> None:
    """List the stored outputs: size, checkpoint, target, records, when.

    One row per checkpoint and target whose outputs are stored; entries that cannot be read are listed
    with their status.

    Example:
        melep cache list
        melep cache list --cache /scratch/melep-cache --format json
    """
    configure_logging(quiet=quiet)
    with cli_errors(debug):
        store = _store(cache)
        entries = store.describe()
        if output_format is OutputFormat.json:
            text = report.to_json({"cache": str(store.directory), "entries": entries})
        elif output_format is OutputFormat.csv:
            columns = ["entry", "bytes", "checkpoint", "target", "records", "outputs", "precision", "created", "status"]
            text = report.rows_to_csv([columns, *([entry.get(name, "") for name in columns] for entry in entries)])
        else:
            text = None
        emit(text, [_entries_table(store, entries)], None)


@cache_app.command("clear")
def cache_clear(cache: CacheOption = None, quiet: QuietOption = False, debug: DebugOption = False) -> None:
    """Remove every stored output.

    The next `melep rank` runs its forward passes again. Only the store's entries (and temporary files
    left by interrupted runs) are removed, nothing else in the directory.

    Example:
        melep cache clear
        melep cache clear --cache /scratch/melep-cache
    """
    configure_logging(quiet=quiet)
    with cli_errors(debug):
        store = _store(cache)
        count, freed = store.clear()
        if not quiet:
            entries = f"{count} cache entr{'y' if count == 1 else 'ies'}"
            stderr_console.print(
                f"melep: removed {entries} ({_size(freed)}) from {store.directory}",
                markup=False,
                highlight=False,
            )


def _entries_table(store: OutputsStore, entries: list[dict]) -> Table:
    """One row per stored entry; paths are the user's: literal, and folded rather than cut when long."""
    table = Table(header_style="bold")
    for column in ("checkpoint", "target", "records", "outputs", "precision", "size", "created", "status"):
        table.add_column(
            column,
            justify="right" if column in ("records", "outputs", "size") else "left",
            overflow="fold" if column in ("checkpoint", "target", "status") else "ellipsis",
        )
    for entry in entries:
        cells = [str(entry.get(key, "")) for key in ("checkpoint", "target", "records", "outputs", "precision")]
        cells += [_size(entry["bytes"]), str(entry.get("created", "")), str(entry.get("status", ""))]
        table.add_row(*(report.literal(cell) for cell in cells))
    total = sum(entry["bytes"] for entry in entries)
    caption = f"{len(entries)} entr{'y' if len(entries) == 1 else 'ies'}, {_size(total)}"
    return report.set_annotations(table, f"melep cache {store.directory}", caption)


def _size(count: int) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if count < 1000 or unit == "GB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1000  # type: ignore[assignment]
    return f"{count} B"
