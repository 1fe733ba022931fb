"""Rich rendering: user-supplied strings are shown literally (never read as markup), and tables fit the terminal."""

from __future__ import annotations

import importlib
import io
import itertools
import json
import re
import shutil
from dataclasses import replace
from pathlib import Path

import h5py
import numpy as np
import pytest
from rich.console import Console, RenderableType

import melep_cli
from melep_cli import report
from melep_cli.cli import run
from melep_cli.ranking import CheckpointOutcome, RankReport

SAMPLE = Path(__file__).resolve().parents[1] / "sample_data"
TARGET = SAMPLE / "ptbxl_target.h5"
CHECKPOINTS = SAMPLE / "checkpoints"
ONNX = CHECKPOINTS / "ptbxl_superclass_resnet1d.onnx"
#: Names Rich would read as markup: a style tag, a closing tag, an unknown tag, an unbalanced close.
BRACKETED_LABELS = ["NORM[v2]", "MI[red]x", "[bold]STTC", "HYP[/]", "CD[/red]", "IMI", "LVH", "AFIB", "PVC"]
ALL_RANK_COLUMNS = [
    "rank", "checkpoint", "format", "score", "interval", "P(best)", "Δ best", "source labels", "records", "seconds"
]  # fmt: skip
HEADERS = {"interval": "95% interval", "score": "MELEP"}


def render(renderable: RenderableType, width: int, *, soft_wrap: bool = False) -> str:
    """Plain text as emit writes it for a pipe (soft_wrap=False) or as the stdout console prints it (True)."""
    console = Console(width=width, file=io.StringIO(), color_system=None, soft_wrap=soft_wrap)
    console.print(renderable)
    return console.file.getvalue()  # type: ignore[attr-defined]


@pytest.fixture(scope="module")
def sample_ranking() -> RankReport:
    """The ranking of every sample checkpoint on the sample target (module-scoped: forward passes are slow)."""
    return melep_cli.rank([str(CHECKPOINTS)], str(TARGET), cache=None)


def _annotation_lines(text: str) -> tuple[list[str], list[str]]:
    """(title lines, caption lines) of one rendered table: the lines above its top border and below its bottom."""
    lines = text.rstrip("\n").splitlines()
    top = next(index for index, line in enumerate(lines) if line.lstrip().startswith("┏"))
    bottom = max(index for index, line in enumerate(lines) if line.lstrip().startswith("└"))
    return lines[:top], lines[bottom + 1 :]


def _words(lines: list[str]) -> list[str]:
    return " ".join(lines).split()


def _squeezed(text: str) -> str:
    return "".join(text.split())


def _column(text: str, index: int) -> str:
    """The cells of column `index` of every table row, joined: a value folded over lines reads whole again."""
    rows = [line.strip().strip("│").split("│") for line in text.splitlines() if line.lstrip().startswith("│")]
    return "".join(row[index].strip() for row in rows if len(row) > index)


# Square brackets: shown literally -----------------------------------------------------------------


def test_bracketed_checkpoint_names_rank_literally(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "ckpts"
    folder.mkdir()
    for name in ("model[v2].onnx", "model[red]x.onnx", ONNX.name):
        shutil.copy(ONNX, folder / name)
    code = run(["rank", "-c", str(folder), "-t", str(TARGET), "--no-cache", "--per-label", "--pairs", "-q"])
    out = capsys.readouterr().out
    assert code == 0
    for name in ("model[v2]", "model[red]x", ONNX.stem):
        assert re.search(rf"│ +\d │ {re.escape(name)} +│", out), f"{name} is not a ranked row:\n{out}"
        assert f"phi(y, z) of {name}" in out  # --pairs titles
    header = next(line for line in out.splitlines() if line.startswith("┃ label"))
    assert "model[v2]" in header and "model[red]x" in header  # --per-label column headers


def test_bracketed_label_names_of_an_hdf5_target_show_literally(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "target[v2].h5"
    shutil.copy(TARGET, target)
    with h5py.File(target, "r+") as handle:
        handle["labels"].attrs["label_names"] = BRACKETED_LABELS
    code = run(["rank", "-c", str(ONNX), "-t", str(target), "--no-cache", "--per-label", "-q"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert str(target) in out  # the title
    per_label_at = out.index("Per target label")
    caption = " ".join(_words(_annotation_lines(out[:per_label_at])[1]))
    per_label = out[per_label_at:]
    for name in BRACKETED_LABELS:
        assert f" {name} " in caption, f"{name} not in the caption: {caption}"
        assert re.search(rf"│ {re.escape(name)} +│", per_label), f"{name} not a per-label row:\n{per_label}"


def test_an_error_message_with_brackets_shows_literally(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "ckpts"
    folder.mkdir()
    shutil.copy(ONNX, folder / ONNX.name)
    (folder / "broken[red]x.onnx").write_bytes(ONNX.read_bytes()[:2000])
    assert run(["rank", "-c", str(folder), "-t", str(TARGET), "--no-cache", "-q", "-f", "json"]) == 1
    error = json.loads(capsys.readouterr().out)["results"][-1]["error"]
    assert "broken[red]x.onnx" in error
    assert run(["rank", "-c", str(folder), "-t", str(TARGET), "--no-cache", "-q"]) == 1
    out = capsys.readouterr().out
    assert re.search(r"│ +— │ broken\[red\]x +│", out), out  # the error row of the ranking
    errors = out[out.index("Checkpoints that failed") :]  # name and message, literally (folded when long)
    assert _column(errors, 0) == "broken[red]x"
    assert _squeezed(_column(errors, 1)) == _squeezed(error)


def test_bracketed_errors_names_and_styles_in_the_tables(sample_ranking: RankReport) -> None:
    failed = CheckpointOutcome(
        name="bad[bold]one",
        path=Path("bad[bold]one.onnx"),
        format="onnx",
        status="error",
        error="bad[bold]one.onnx: cannot [red]load[/red] it [/]",
    )
    ranking = replace(sample_ranking, outcomes=[*sample_ranking.outcomes, failed])
    ranked = render(report.rank_table(ranking), 200)
    assert "│ bad[bold]one " in ranked and " error " in ranked
    errors = render(report.rank_errors_table(ranking), 200)  # type: ignore[arg-type]
    assert "bad[bold]one.onnx: cannot [red]load[/red] it [/]" in errors
    # deliberate styling is a style, not markup: the best value of each row is bold in a terminal
    console = Console(width=200, file=io.StringIO(), color_system="standard", force_terminal=True)
    console.print(report.rank_table(ranking))
    assert "\x1b[1" in console.file.getvalue() and "\x1b[31m" in console.file.getvalue()  # type: ignore[attr-defined]


def test_score_table_shows_bracketed_names_and_paths_literally(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 2, size=(80, 3)).astype(np.uint8)
    np.save(tmp_path / "logits[v2].npy", rng.normal(size=(80, 4)) + labels[:, [0, 1, 2, 0]])
    np.save(tmp_path / "labels[red].npy", labels)
    monkeypatch.chdir(tmp_path)
    label_names, source_names = "AF[x],IAVB[red]y,[bold]RBBB", "s[1],s[red]2,[/]s3,s4[/red]"
    arguments = ["logits[v2].npy", "labels[red].npy", "--label-names", label_names, "--source-names", source_names]
    code = run(["score", *arguments, "--per-label", "--pairs"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "logits[v2].npy vs labels[red].npy" in out
    for name in label_names.split(","):
        assert re.search(rf"│ {re.escape(name)} +│", out), f"{name}:\n{out}"
    phi_header = next(line for line in out.splitlines() if "target \\ source" in line)
    for name in source_names.split(","):
        assert f" {name} " in phi_header


def test_cache_list_shows_bracketed_paths_literally(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    checkpoint = tmp_path / "model[red]x.onnx"
    shutil.copy(ONNX, checkpoint)
    cache = tmp_path / "cache[v2]"
    assert run(["rank", "-c", str(checkpoint), "-t", str(TARGET), "--cache", str(cache), "-q"]) == 0
    capsys.readouterr()
    assert run(["cache", "list", "--cache", str(cache)]) == 0
    out = capsys.readouterr().out
    assert f"melep cache {cache}" in out
    assert str(checkpoint) in _column(out, 0)  # folded over lines when long, never cut


# Narrow terminals ---------------------------------------------------------------------------------


@pytest.mark.parametrize("soft_wrap", [False, True], ids=["pipe", "terminal"])
@pytest.mark.parametrize("width", [80, 120, 160])
def test_the_rank_table_fits_the_width_with_names_whole(
    sample_ranking: RankReport, width: int, soft_wrap: bool
) -> None:
    table = report.rank_table(sample_ranking, width=width)
    text = render(table, width, soft_wrap=soft_wrap)
    lines = text.splitlines()
    assert all(len(line) <= width for line in lines), text
    assert "…" not in text, text
    for outcome in sample_ranking.outcomes:
        assert any(f" {outcome.name} " in line for line in lines), f"{outcome.name} cut:\n{text}"
    title, caption = _annotation_lines(text)
    assert _words(title) == str(table.title).split(), text  # every word whole, none lost
    assert _words(caption) == str(table.caption).split(), text
    header = next(line for line in lines if "checkpoint" in line)
    shown = report.rank_table_columns(sample_ranking, width)
    assert [cell.strip() for cell in header.strip("┃ ").split("┃")] == [HEADERS.get(name, name) for name in shown]
    assert {"score", "interval", "P(best)"} <= set(shown)  # the score and how sure it is, even at 80 columns
    if width >= 160:
        assert list(shown) == ALL_RANK_COLUMNS
    else:
        assert "not shown at this width: records, seconds" in " ".join(_words(caption))


def test_columns_are_dropped_in_a_fixed_order(sample_ranking: RankReport) -> None:
    columns = report.rank_table_columns
    assert columns(sample_ranking, None) == tuple(ALL_RANK_COLUMNS)  # no width: everything, as before
    assert columns(sample_ranking, 200) == tuple(ALL_RANK_COLUMNS)
    widths = range(200, 20, -1)
    chosen = [columns(sample_ranking, width) for width in widths]
    dropped = []
    for before, after in itertools.pairwise(chosen):
        dropped += [name for name in before if name not in after]
    assert dropped == ["records", "seconds", "source labels", "format", "Δ best", "interval"]
    assert chosen[-1] == ("rank", "checkpoint", "score", "P(best)")
    with_format = ("rank", "checkpoint", "format", "score", "interval", "P(best)", "Δ best")
    short = min(width for width, names in zip(widths, chosen) if names == with_format)  # the short form
    text = render(report.rank_table(sample_ranking, width=short), short)
    formats = [line.split("│")[3].strip() for line in text.splitlines() if line.count("│") > 3]
    assert "ts" in formats and "torchscript" not in formats  # the short form of the format before it goes
    assert "ts = torchscript" in text


def test_the_default_keeps_every_column(sample_ranking: RankReport) -> None:
    assert render(report.rank_table(sample_ranking), 200) == render(report.rank_table(sample_ranking, width=200), 200)


def test_a_name_longer_than_the_terminal_is_folded_never_cut(sample_ranking: RankReport) -> None:
    long_name = "a_checkpoint_with_a_very_long_name_" * 2
    first = replace(sample_ranking.outcomes[0], name=long_name)
    ranking = replace(sample_ranking, outcomes=[first, *sample_ranking.outcomes[1:]])
    text = render(report.rank_table(ranking, width=50), 50)
    assert all(len(line) <= 50 for line in text.splitlines()) and "…" not in text
    assert long_name in _column(text, 1)


@pytest.mark.parametrize("width", [50, 80, 120, 200])
def test_the_default_tables_refit_to_the_console(sample_ranking: RankReport, width: int) -> None:
    """Without a width the tables are built whole, and refit themselves on a console too narrow for them."""
    assert render(report.rank_table(sample_ranking), width) == render(
        report.rank_table(sample_ranking, width=width), width
    )
    assert render(report.rank_per_label_table(sample_ranking), width) == render(
        report.rank_per_label_table(sample_ranking, width=width), width
    )


def test_melep_rank_in_an_80_column_terminal(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The command as a person sees it: the stdout console of a terminal 80 columns wide."""
    app_module = importlib.import_module("melep_cli.cli.app")  # the package's `app` attribute is the Typer app
    terminal = Console(width=80, file=io.StringIO(), force_terminal=True, soft_wrap=True, color_system=None)
    monkeypatch.setattr(app_module, "stdout_console", terminal)
    folder = tmp_path / "ckpts"
    folder.mkdir()
    for path in sorted(CHECKPOINTS.glob("*.onnx")):
        shutil.copy(path, folder / path.name)
    shutil.copy(ONNX, folder / "model[red]x.onnx")
    assert run(["rank", "-c", str(folder), "-t", str(TARGET), "--no-cache", "--per-label", "-q"]) == 0
    assert capsys.readouterr().out == ""
    text = terminal.file.getvalue()  # type: ignore[attr-defined]
    assert all(len(line) <= 80 for line in text.splitlines()) and "…" not in text, text
    ranked = text[: text.index("Per target label")]
    for name in ("model[red]x", ONNX.stem, "cinc2021_snomed_bilstm"):
        assert re.search(rf"│ +\d │ {re.escape(name)} +│", ranked), text


@pytest.mark.parametrize("soft_wrap", [False, True], ids=["pipe", "terminal"])
def test_the_per_label_table_at_80_columns(sample_ranking: RankReport, soft_wrap: bool) -> None:
    wide = render(report.rank_per_label_table(sample_ranking, width=200), 200)
    for outcome in sample_ranking.ok:
        assert f" {outcome.name} " in next(line for line in wide.splitlines() if line.startswith("┃ label"))
    text = render(report.rank_per_label_table(sample_ranking, width=80), 80, soft_wrap=soft_wrap)
    lines = text.splitlines()
    assert all(len(line) <= 80 for line in lines), text
    assert "…" not in text, text
    headers = [line for line in lines if line.startswith("┃ label")]
    shown = [cell.strip() for header in headers for cell in header.strip("┃ ").split("┃")[3:]]
    assert shown == [f"#{outcome.rank}" for outcome in sample_ranking.ok]  # headed by rank, each once, in order
    legend = " ".join(_words(text.splitlines()))
    for outcome in sample_ranking.ok:
        assert f"#{outcome.rank} {outcome.name}" in legend.replace("=", " "), legend
    for label in sample_ranking.target.labels:  # every value whole: m(y) in four decimals and its share of H(y)
        rows = [line for line in lines if line.startswith(f"│ {label} ")]
        assert len(rows) == len(headers)
        cells = re.findall(r"\b\d\.\d{4} \(-?\d+%\)", " ".join(rows))
        assert len(cells) == len(sample_ranking.ok), rows


def test_the_per_label_table_splits_when_even_rank_headers_do_not_fit(sample_ranking: RankReport) -> None:
    text = render(report.rank_per_label_table(sample_ranking, width=50), 50)
    assert all(len(line) <= 50 for line in text.splitlines()) and "…" not in text, text
    headers = [line for line in text.splitlines() if line.startswith("┃ label")]
    assert len(headers) >= 2
    shown = re.findall(r"#\d+", " ".join(headers))
    assert shown == [f"#{outcome.rank}" for outcome in sample_ranking.ok]
