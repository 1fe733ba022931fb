"""`melep --help` and every command's help: read like uv's, ruff's or llm's help.

A one-line summary, paragraphs wrapped by the terminal (not where the docstring was wrapped), `Example:`
lines, metavars people know (PATH, FILE, DIR, N, HZ, LIST, table|json|csv; none for a flag), no Python
types, and bare groups (`melep`, `melep cache`) print their help and exit 0.
"""

from __future__ import annotations

import inspect
import os
import re
import shlex
import subprocess
import sys

import pytest
import typer

from melep_cli.cli import app, run
from melep_cli.cli.app import help_summary, reflow_help

ROOT = typer.main.get_command(app)
#: Every command and subcommand, as argv before --help.
COMMANDS = [[name] for name in ROOT.commands if name != "cache"] + [["cache"], ["cache", "list"], ["cache", "clear"]]
#: What Typer would show of a Python type, and the braces of its usage line.
PYTHON_TYPES = ("<bool>", "<list", "<str>", "<path>", "<file>", "<dir>", "<int", "<float", "<tuple", "{", "}")


def _help(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, argv: list[str], columns: int) -> str:
    """The help of `melep ARGV --help` rendered `columns` wide; it must exit 0 and print nothing on stderr."""
    monkeypatch.setenv("COLUMNS", str(columns))
    capsys.readouterr()
    assert run([*argv, "--help"]) == 0
    captured = capsys.readouterr()
    assert captured.err == ""
    return captured.out


def _command(argv: list[str]) -> typer.core.TyperCommand:
    command = ROOT
    for name in argv:
        command = command.commands[name]  # type: ignore[attr-defined]
    return command


def _ids(argv: list[str]) -> str:
    return " ".join(argv) or "melep"


@pytest.mark.parametrize("argv", [[], *COMMANDS], ids=_ids)
def test_help_exits_0_and_fits_80_columns(
    argv: list[str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    text = _help(capsys, monkeypatch, argv, 80)
    assert text.lstrip().startswith(f"Usage: {' '.join(['melep', *argv])} [OPTIONS]")
    assert "Traceback" not in text
    too_wide = [line for line in text.splitlines() if len(line) > 80]
    assert not too_wide, too_wide


@pytest.mark.parametrize("argv", [[], *COMMANDS], ids=_ids)
def test_help_shows_no_python_types_and_no_braces(
    argv: list[str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    text = _help(capsys, monkeypatch, argv, 200)
    shown = [leak for leak in PYTHON_TYPES if leak in text]
    assert not shown, shown
    assert not re.search(r"<\w+( range)?>", text)


@pytest.mark.parametrize("argv", COMMANDS, ids=_ids)
def test_every_command_help_has_an_example_of_itself(
    argv: list[str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    text = _help(capsys, monkeypatch, argv, 200)
    assert "Example:" in text
    command = " ".join(["melep", *argv])
    assert any(line.strip().startswith(f"{command} ") for line in text.split("Example:", 1)[1].splitlines())


def _examples(text: str) -> list[str]:
    """The command lines of a rendered help's `Example:` paragraph."""
    if "Example:" not in text:
        return []
    examples: list[str] = []
    for line in text.split("Example:", 1)[1].splitlines()[1:]:
        if not line.strip():
            break
        examples.append(line.strip())
    return examples


@pytest.mark.parametrize("argv", [[], *COMMANDS], ids=_ids)
def test_every_example_names_options_that_exist(
    argv: list[str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each example line, run with --help appended, parses: its command and option names exist. And it fits
    an 80-column terminal on one line (indented under `Example:`)."""
    text = _help(capsys, monkeypatch, argv, 200)
    for line in _examples(text):
        assert len(line) <= 76, line
        words = shlex.split(line)
        assert words[0] == "melep", line
        assert run([*words[1:], "--help"]) == 0, (line, capsys.readouterr().err)
    capsys.readouterr()


@pytest.mark.parametrize("argv", COMMANDS, ids=_ids)
def test_the_summary_is_one_short_docstring_line(argv: list[str]) -> None:
    """The first docstring line is the whole first paragraph: what `melep --help` lists for the command."""
    command = _command(argv)
    summary = help_summary(command.help) or ""
    assert command.short_help == summary
    assert 0 < len(summary) <= 100, summary
    callback = getattr(command, "callback", None)
    if argv != ["cache"] and callback is not None:
        written = inspect.cleandoc(inspect.unwrap(callback).__doc__ or "")
        assert written.split("\n\n")[0] == summary


def test_the_root_help_lists_every_command_by_its_summary(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    text = _help(capsys, monkeypatch, [], 200)
    for name, command in ROOT.commands.items():
        summary = command.short_help or ""
        assert re.search(rf"│ {name}\s+{re.escape(summary)}", text), name


def test_a_sentence_written_over_two_docstring_lines_is_one_line_of_help(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    callback = _command(["rank"]).callback
    assert callback is not None
    paragraph = inspect.cleandoc(inspect.unwrap(callback).__doc__ or "").split("\n\n")[1]
    assert "\n" in paragraph  # written over two lines in rank's docstring
    sentence = " ".join(line.strip() for line in paragraph.splitlines())
    text = _help(capsys, monkeypatch, ["rank"], 200)
    assert any(sentence in line for line in text.splitlines()), sentence


@pytest.mark.parametrize(
    ("argv", "option", "metavar"),
    [
        (["rank"], "--checkpoints", "PATH"),
        (["rank"], "--target", "PATH"),
        (["rank"], "--cache", "DIR"),
        (["rank"], "--output", "FILE"),
        (["rank"], "--batch-size", "N"),
        (["rank"], "--top", "N"),
        (["rank"], "--sampling-rate", "HZ"),
        (["rank"], "--labels", "LIST"),
        (["rank"], "--labels-csv", "FILE"),
        (["rank"], "--lead-names", "LIST"),
        (["rank"], "--format", "table|json|csv|"),  # then "markdown" on the next line
        (["rank"], "--report", "FILE"),
        (["forward"], "--format", "table|json|csv"),
        (["report"], "--format", "html|markdown|png|"),
        (["rank"], "--target-format", "hdf5|wfdb|ptbxl"),
        (["forward"], "--cache", "DIR"),
        (["score"], "--label-names", "LIST"),
        (["score"], "--source-weights", "LIST"),
        (["convert"], "--resample", "HZ"),
        (["convert"], "--batch-size", "N"),
        (["cache", "list"], "--cache", "DIR"),
    ],
)
def test_options_show_plain_metavars(
    argv: list[str],
    option: str,
    metavar: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    text = _help(capsys, monkeypatch, argv, 200)
    assert re.search(rf"│\s+(\*\s+)?{option}\s+(-\w\s+)?{re.escape(metavar)}\s", text), (option, metavar)


@pytest.mark.parametrize(
    ("argv", "flag"),
    [
        (["rank"], "--recursive"),
        (["rank"], "--no-cache"),
        (["rank"], "--strict"),
        (["score"], "--pairs"),
        ([], "--help"),
        ([], "--version"),
    ],
)
def test_flags_show_no_value(
    argv: list[str], flag: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    text = _help(capsys, monkeypatch, argv, 200)
    line = next(line for line in text.splitlines() if re.search(rf"│\s+{flag}\s", line))
    # the option (and its short form), then straight to its help: no `<bool>`, no metavar
    assert re.search(rf"{flag}\s+(-\w\s+)?[A-Z][a-z]", line), line


def test_arguments_are_shown_by_name(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    text = _help(capsys, monkeypatch, ["score"], 200)
    assert "Usage: melep score [OPTIONS] OUTPUTS LABELS" in text
    assert re.search(r"\*\s+OUTPUTS\s+Model outputs", text)
    assert "Usage: melep inspect [OPTIONS] PATHS..." in _help(capsys, monkeypatch, ["inspect"], 200)


def test_a_missing_argument_is_named_as_in_the_usage_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["score", "outputs.npy"]) == 2
    assert "'LABELS'" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [[], ["cache"]], ids=_ids)
def test_a_group_without_a_command_prints_its_help_and_exits_0(
    argv: list[str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    assert run(argv) == 0
    captured = capsys.readouterr()
    assert captured.out.lstrip().startswith(f"Usage: {' '.join(['melep', *argv])} [OPTIONS] COMMAND [ARGS]...")
    assert "Commands" in captured.out
    assert captured.err == ""


def test_the_real_melep_without_arguments_exits_0() -> None:
    finished = subprocess.run(
        [sys.executable, "-m", "melep_cli"],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "COLUMNS": "80"},
    )
    assert finished.returncode == 0, finished.stderr
    assert "Usage: melep [OPTIONS] COMMAND [ARGS]..." in finished.stdout
    assert finished.stderr == ""


def test_shell_completion_is_offered_and_works(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    text = _help(capsys, monkeypatch, [], 200)
    assert "--install-completion" in text and "--show-completion" in text
    finished = subprocess.run(
        [sys.executable, "-m", "melep_cli"],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "_MELEP_COMPLETE": "complete_bash", "COMP_WORDS": "melep ra", "COMP_CWORD": "1"},
    )
    assert finished.returncode == 0, finished.stderr
    assert finished.stdout.split() == ["rank"]


def test_reflow_keeps_paragraphs_examples_and_list_items() -> None:
    text = """Summary line.

    A sentence written
    over two lines.

    - one item
      continued
    - another

    Example: melep rank -c a/ -t b.h5
        melep rank --labels '[bold]x'
    """
    assert reflow_help(text) == (
        "Summary line.\n\n"
        "A sentence written over two lines.\n\n"
        "- one item continued\n- another\n\n"
        "Example:\n  melep rank -c a/ -t b.h5\n  melep rank --labels '\\[bold]x'"
    )
    assert help_summary(text) == "Summary line."
