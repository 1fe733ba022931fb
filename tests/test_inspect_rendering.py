"""`melep inspect TARGET`: the reader returns data, report.py draws it, and user strings show literally."""

from __future__ import annotations

import ast
import inspect
import json
import shutil
from pathlib import Path

import h5py
import pytest
from rich.table import Table

import melep_cli.targets.inspection as inspection
from melep_cli import report
from melep_cli.cli import run

TARGET = Path(__file__).resolve().parents[1] / "sample_data" / "ptbxl_target.h5"
#: Names Rich would read as markup, or drop: a style tag pair, an unknown tag, an unbalanced close.
BRACKETED = ["[red]X[/red]", "[bold]Y", "Z[/]", "[W]", "V"]


def test_target_inspection_imports_no_rich_and_returns_plain_data() -> None:
    tree = ast.parse(inspect.getsource(inspection))
    imported = [alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names]
    imported += [node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)]
    assert not [name for name in imported if name == "rich" or name.startswith("rich.")], imported
    info = inspection.inspect_target(TARGET)
    assert json.loads(json.dumps(info)) == info  # only dicts, lists, strings, numbers, booleans, None


def test_report_draws_the_target_tables_with_every_cell_as_text() -> None:
    info = inspection.inspect_target(TARGET)
    tables = [report.target_summary_table(info), report.target_labels_table(info)]
    assert report.target_skips_table(info) is None  # the sample target skips nothing
    assert all(isinstance(table, Table) for table in tables)
    for table in tables:
        assert not isinstance(table.title, str)
        assert all(not isinstance(cell, str) for column in table.columns for cell in column.cells)
    skips = report.target_skips_table({**info, "skipped": [{"id": "r[1]", "reason": "bad [red]file[/]"}]})
    assert skips is not None and not isinstance(skips.title, str)


def test_cli_inspect_shows_a_bracketed_label_name_literally(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "250")
    target = tmp_path / "target[v2].h5"
    shutil.copy(TARGET, target)
    with h5py.File(target, "r+") as handle:
        names = [str(name) for name in handle["labels"].attrs["label_names"]]
        handle["labels"].attrs["label_names"] = BRACKETED + names[len(BRACKETED) :]
    code = run(["inspect", str(target), "--min-positives", "1"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert f"Target {target}" in out
    for name in BRACKETED:
        assert f"│ {name} " in out, f"{name} not a label row:\n{out}"
