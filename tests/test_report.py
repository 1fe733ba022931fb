"""Reports for people: `melep rank --report`, `melep report RANK.json`, `--format markdown`, on sample_data."""

from __future__ import annotations

import json
import shutil
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import html5lib
import pytest
from markdown_it import MarkdownIt
from PIL import Image

from melep_cli.cli import run

SAMPLE = Path(__file__).resolve().parents[1] / "sample_data"
CHECKPOINTS = SAMPLE / "checkpoints"
TARGET = SAMPLE / "ptbxl_target.h5"
XHTML = "{http://www.w3.org/1999/xhtml}"


@pytest.fixture(scope="module")
def module_cache(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One outputs store for this module's rank runs: the sample's forward passes run once, then are read."""
    return str(tmp_path_factory.mktemp("module-cache"))


@pytest.fixture(scope="module")
def ranked(tmp_path_factory: pytest.TempPathFactory, module_cache: str) -> dict[str, Path]:
    """One `melep rank --report report.html -o rank.json --pairs` run on the sample."""
    folder = tmp_path_factory.mktemp("ranked")
    code = run(
        [
            "rank",
            "-c",
            str(CHECKPOINTS),
            "-t",
            str(TARGET),
            "--cache",
            module_cache,
            "--pairs",
            "--report",
            str(folder / "report.html"),
            "-o",
            str(folder / "rank.json"),
            "-q",
        ]
    )
    assert code == 0
    return {"folder": folder, "html": folder / "report.html", "json": folder / "rank.json"}


def parse_html(text: str):
    """The page as an ElementTree, parsed by html5lib in strict mode: any parse error raises."""
    return html5lib.HTMLParser(strict=True, namespaceHTMLElements=True).parse(text)


#: Elements that a browser lays out as blocks or cells: their texts never run together.
BLOCKS = {
    f"{XHTML}{name}"
    for name in [
        "p",
        "li",
        "dt",
        "dd",
        "td",
        "th",
        "h1",
        "h2",
        "h3",
        "div",
        "section",
        "summary",
        "figcaption",
        "pre",
        "tr",
    ]
}


def page_text(tree) -> str:
    """The text a reader sees (no script or style), whitespace collapsed."""
    parts = []

    def walk(element) -> None:
        if element.tag in (f"{XHTML}script", f"{XHTML}style"):
            return
        block = " " if element.tag in BLOCKS else ""
        parts.append(block + (element.text or ""))
        for child in element:
            walk(child)
            parts.append(child.tail or "")
        parts.append(block)

    walk(tree)
    return " ".join("".join(parts).split())


def expected_values(document: dict) -> list[str]:
    """What a reader checks against the JSON: every checkpoint's name, score, interval bounds and P(best)."""
    values = []
    for entry in document["results"]:
        values.append(entry["checkpoint"])
        if entry["status"] != "ok":
            continue
        for score in entry["scores"].values():
            values.append(f"{score['value']:.4f}")
            values += [f"{bound:.4f}" for bound in score["ci"]]
    return values


def test_rank_report_is_a_self_contained_page_with_every_part(ranked: dict[str, Path]) -> None:
    text = ranked["html"].read_text(encoding="utf-8")
    document = json.loads(ranked["json"].read_text(encoding="utf-8"))
    tree = parse_html(text)
    shown = page_text(tree)
    for value in expected_values(document):
        assert value in shown, value
    for entry in document["results"]:
        p_best = entry["p_best"]
        assert ("<0.01" if 0 < p_best < 0.005 else ">0.99" if 0.995 <= p_best < 1 else f"{p_best:.2f}") in shown
    # nothing fetched: no external script, style, font, image or link of any kind
    for element in tree.iter():
        for name, value in element.attrib.items():
            if name in ("src", "href", "{http://www.w3.org/1999/xlink}href") or name.endswith("}href"):
                assert value.startswith(("#", "data:")), (element.tag, name, value)  # in the page itself
    assert "@import" not in text and "@font-face" not in text and "url(http" not in text
    assert tree.find(f".//{XHTML}link") is None
    # the parts the issue names
    sections = {element.get("id") for element in tree.iter(f"{XHTML}section")}
    assert {"ranking", "labels", "phi", "target", "run"} <= sections
    details = list(tree.iter(f"{XHTML}details"))
    phi_details = [item for item in details if "source label" in "".join(item.itertext())]
    assert len(phi_details) == 5 and not any(item.get("open") is not None for item in phi_details)
    charts = list(tree.iter("{http://www.w3.org/2000/svg}svg"))
    assert len(charts) == 2 + 1 + 5  # the ranking (wide and narrow), the label heatmap, five phi heatmaps
    hovers = [title.text for title in tree.iter("{http://www.w3.org/2000/svg}title")]
    assert len(hovers) == 5 * 9 + sum(9 * len(entry["source_labels"]) for entry in document["results"])
    assert any("removes" in hover and "NORM" in hover for hover in hovers)
    for label, prevalence in zip(document["target"]["labels"], document["target"]["prevalence"]):
        assert f"{label} {prevalence:.1%}" in shown
    assert document["command"] in shown and "--report" in document["command"]
    assert "melep 0.1.0" in shown and "device cpu" in shown and "prevalence weighting" in shown
    assert "1000 paired resamples of the records, 95% intervals, seed 0" in shown
    assert "No record was skipped." in shown
    # the only script opens the collapsed heatmaps for printing; the page has everything without it
    scripts = list(tree.iter(f"{XHTML}script"))
    assert len(scripts) == 1 and "beforeprint" in (scripts[0].text or "")


def test_melep_report_from_the_json_gives_the_same_page(ranked: dict[str, Path]) -> None:
    again = ranked["folder"] / "again.html"
    assert run(["report", str(ranked["json"]), "-o", str(again), "-q"]) == 0
    assert again.read_bytes() == ranked["html"].read_bytes()  # test_the_python_api_... draws it a third time


def markdown_tables(text: str) -> list[list[list[str]]]:
    """The tables of a GitHub-flavoured Markdown text, rendered by markdown-it, as rows of cell texts."""
    rendered = MarkdownIt("commonmark").enable("table").render(text)
    tree = parse_html(f"<!DOCTYPE html><html><head><title>t</title></head><body>{rendered}</body></html>")
    return [
        [[" ".join("".join(cell.itertext()).split()) for cell in row] for row in table.iter(f"{XHTML}tr")]
        for table in tree.iter(f"{XHTML}table")
    ]


def test_markdown_for_ci_is_a_table_with_intervals_p_best_and_the_tie(
    ranked: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(["report", str(ranked["json"])]) == 0
    text = capsys.readouterr().out
    document = json.loads(ranked["json"].read_text(encoding="utf-8"))
    (table,) = markdown_tables(text)
    assert table[0] == ["rank", "checkpoint", "MELEP", "95% interval", "P(best)", "Δ best"]
    ok = sorted(document["results"], key=lambda entry: entry["rank"])
    assert [row[1] for row in table[1:]] == [entry["checkpoint"] for entry in ok]
    for row, entry in zip(table[1:], ok):
        assert row[2] == f"{entry['melep']:.4f}"
        assert row[3] == f"{entry['ci'][0]:.4f}–{entry['ci'][1]:.4f}"
    tied = [entry["checkpoint"] for entry in ok if entry["tied_with_best"]]
    assert len(tied) == 2
    assert f"Tied: `{tied[0]}` and `{tied[1]}`." in text
    assert len(text) < 3000 and text.count("\n") < 30  # a CI summary, not the page
    # -o summary.md writes the same text; rank --format markdown draws it the same way
    summary = ranked["folder"] / "summary.md"
    assert run(["report", str(ranked["json"]), "-o", str(summary), "-q"]) == 0
    assert summary.read_text(encoding="utf-8") == text


def test_rank_format_markdown_and_an_md_output(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], module_cache: str
) -> None:
    common = ["rank", "-c", str(CHECKPOINTS), "-t", str(TARGET), "--cache", module_cache, "-q"]
    assert run([*common, "--format", "markdown"]) == 0
    printed = capsys.readouterr().out
    (table,) = markdown_tables(printed)
    assert len(table) == 6 and table[1][1] == "ptbxl_superclass_bilstm"
    summary = tmp_path / "summary.md"
    assert run([*common, "-o", str(summary)]) == 0  # the extension chooses markdown
    assert markdown_tables(summary.read_text(encoding="utf-8")) == [table]


def test_the_ranking_chart_alone_for_slides(ranked: dict[str, Path]) -> None:
    folder = ranked["folder"]
    png, svg, pdf = folder / "ranking.png", folder / "ranking.svg", folder / "ranking.pdf"
    for path in (png, svg, pdf):
        assert run(["report", str(ranked["json"]), "-o", str(path), "-q"]) == 0
    with Image.open(png) as image:
        assert image.width >= 1200 and image.height >= 500
        colours = image.convert("RGB").getcolors(maxcolors=1 << 20)
        assert colours is not None and len(colours) > 100  # a drawing, not a blank canvas
    root = ElementTree.parse(svg).getroot()
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    assert pdf.read_bytes().startswith(b"%PDF-")


def test_failed_checkpoints_are_listed_with_their_errors(tmp_path: Path, module_cache: str) -> None:
    folder = tmp_path / "checkpoints"
    shutil.copytree(CHECKPOINTS, folder)
    (folder / "truncated.onnx").write_bytes((CHECKPOINTS / "cinc2021_snomed_bilstm.onnx").read_bytes()[:500])
    page, summary, as_json = tmp_path / "report.html", tmp_path / "summary.md", tmp_path / "rank.json"
    arguments = ["rank", "-c", str(folder), "-t", str(TARGET), "--cache", module_cache, "-q"]
    code = run([*arguments, "--report", str(page), "-o", str(as_json)])
    assert code == 1
    assert run(["report", str(as_json), "-o", str(summary), "-q"]) == 0
    error = next(entry["error"] for entry in json.loads(as_json.read_text())["results"] if entry["status"] == "error")
    tree = parse_html(page.read_text(encoding="utf-8"))
    failed = next(section for section in tree.iter(f"{XHTML}section") if section.get("id") == "failed")
    assert "truncated" in "".join(failed.itertext()) and " ".join(error.split()) in page_text(failed)
    text = summary.read_text(encoding="utf-8")
    tables = markdown_tables(text)
    assert tables[1][0] == ["checkpoint", "error"] and tables[1][1][0] == "truncated"
    assert "**1 checkpoint failed** (not ranked)" in text
    assert len(tables[0]) == 6  # the five others are ranked


def _edited(ranked: dict[str, Path], tmp_path: Path, edit) -> Path:
    """The sample's rank JSON changed by `edit`, without the phi matrices (their heatmaps are slow to draw)."""
    document = json.loads(ranked["json"].read_text(encoding="utf-8"))
    for entry in document["results"]:
        entry.pop("phi", None)
    edit(document)
    path = tmp_path / "edited.json"
    path.write_text(json.dumps(document), encoding="utf-8")
    return path


def test_names_are_shown_literally_never_as_markup(
    ranked: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A name is user text: no HTML, Markdown or table syntax of it is ever interpreted (the name is synthetic:
    no real checkpoint is called this)."""
    hostile = "<script>alert(1)</script> a|b *c* _d_ [e](f) `g`"

    def rename(document: dict) -> None:
        document["results"][0]["checkpoint"] = hostile

    path = _edited(ranked, tmp_path, rename)
    page = tmp_path / "page.html"
    assert run(["report", str(path), "-o", str(page), "-q"]) == 0
    tree = parse_html(page.read_text(encoding="utf-8"))
    assert len(list(tree.iter(f"{XHTML}script"))) == 1
    assert hostile in page_text(tree)
    assert run(["report", str(path)]) == 0
    tables = markdown_tables(capsys.readouterr().out)
    assert [len(row) for row in tables[0]] == [6] * 6 and tables[0][1][1] == hostile


def test_adaptive_ranking_marks_the_checkpoints_stopped_early(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], module_cache: str
) -> None:
    """A real `rank --adaptive`: the checkpoints it dropped show their records and no difference from the best."""
    path = tmp_path / "adaptive.json"
    common = ["rank", "-c", str(CHECKPOINTS), "-t", str(TARGET), "--cache", module_cache, "-q", "--adaptive"]
    assert run([*common, "-o", str(path)]) == 0
    document = json.loads(path.read_text(encoding="utf-8"))
    stopped = {row["checkpoint"]: row["records"] for row in document["results"] if row["stopped_early"]}
    assert stopped and all(records < 300 for records in stopped.values())
    page = tmp_path / "page.html"
    assert run(["report", str(path), "-o", str(page), "-q"]) == 0
    shown = page_text(parse_html(page.read_text(encoding="utf-8")))
    used, full = document["adaptive"]["records_used"], document["adaptive"]["records_full"]
    assert f"{used:,} of {full:,} records x checkpoints scored" in shown
    assert "95% confidence that rank 1 is the full-target best" in shown
    assert "not comparable with a full-target score" in shown
    assert run(["report", str(path)]) == 0
    (table,) = markdown_tables(capsys.readouterr().out)
    header = table[0]
    rows = {row[1].strip("`"): row for row in table[1:]}
    assert header[-1] == "records"
    for name, row in rows.items():
        if name in stopped:
            assert row[-1] == f"{stopped[name]:,}" and row[header.index("Δ best")] == "stopped early"
        else:
            assert row[-1] == "300" and row[header.index("Δ best")] != "stopped early"


def test_without_the_bootstrap_or_the_phi_matrices(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], module_cache: str
) -> None:
    as_json = tmp_path / "rank.json"
    arguments = ["rank", "-c", str(CHECKPOINTS), "-t", str(TARGET), "--cache", module_cache, "--bootstrap", "0"]
    assert run([*arguments, "-o", str(as_json), "-q"]) == 0
    page = tmp_path / "page.html"
    assert run(["report", str(as_json), "-o", str(page), "-q"]) == 0
    shown = page_text(parse_html(page.read_text(encoding="utf-8")))
    assert "Ranked without the bootstrap (--bootstrap 0)" in shown
    assert "rank with --pairs" in shown  # the JSON has no phi matrices: the page says how to get them
    assert run(["report", str(as_json)]) == 0
    (table,) = markdown_tables(capsys.readouterr().out)
    assert table[0] == ["rank", "checkpoint", "MELEP", "Δ best"]


def test_one_chart_per_score(tmp_path: Path, module_cache: str) -> None:
    page = tmp_path / "page.html"
    common = ["rank", "-c", str(CHECKPOINTS), "-t", str(TARGET), "--cache", module_cache, "--bootstrap", "200", "-q"]
    assert run([*common, "--scores", "melep,logme", "--report", str(page)]) == 0
    tree = parse_html(page.read_text(encoding="utf-8"))
    headings = ["".join(heading.itertext()) for heading in tree.iter(f"{XHTML}h3")]
    assert headings == ["LogME"]
    assert len(list(tree.iter("{http://www.w3.org/2000/svg}svg"))) == 2 * 2 + 1 + 5


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"{not json", "not JSON (line 1 column 2"),
        (b"[1, 2]", "holds a list, not an object"),
        (b'{"target": {}}', "has no 'results' list"),
        (b'{"results": [], "target": {"labels": ["A"], "prevalence": []}}', "target.prevalence"),
        (b"\xff\xfe\x00", "not UTF-8 text"),
    ],
)
def test_a_bad_rank_file_is_one_line_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes, problem: str
) -> None:
    path = tmp_path / "bad.json"
    path.write_bytes(content)
    assert run(["report", str(path), "-o", str(tmp_path / "report.html")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"melep: error: {path}: ") and problem in err
    assert "Traceback" not in err and not (tmp_path / "report.html").exists()


@pytest.mark.parametrize(
    ("arguments", "problem"),
    [
        (["-o", "{folder}/report.txt"], "--output: {folder}/report.txt is no report"),
        (["-o", "{json}"], "is an input of this command"),
        (["-f", "png"], "--format: a png chart is written to a file; add --output"),
        (["-f", "markdown", "-o", "{folder}/x.html"], "--format: markdown contradicts"),
        (["-o", "{folder}/missing/report.html"], "no such directory"),
    ],
)
def test_report_usage_errors(
    ranked: dict[str, Path], capsys: pytest.CaptureFixture[str], arguments: list[str], problem: str
) -> None:
    names = {"folder": str(ranked["folder"]), "json": str(ranked["json"])}
    before = ranked["json"].read_bytes()
    assert run(["report", str(ranked["json"]), *(argument.format(**names) for argument in arguments)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and problem.format(**names) in err, err
    assert ranked["json"].read_bytes() == before


def test_rank_refuses_a_bad_report_file_before_any_work(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    common = ["rank", "-c", str(CHECKPOINTS), "-t", str(TARGET), "--no-cache"]
    assert run([*common, "--report", str(tmp_path / "report.txt")]) == 2
    assert "--report: " in capsys.readouterr().err
    same = tmp_path / "same.html"
    assert run([*common, "--report", str(same), "-o", str(same)]) == 2
    assert "is also the --output file; choose another --report" in capsys.readouterr().err
    assert run([*common, "--report", str(TARGET)]) == 2  # never an input
    assert "is an input of this command" in capsys.readouterr().err
    assert not same.exists() and not (tmp_path / "report.txt").exists()


def test_a_missing_rank_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "missing.json"
    assert run(["report", str(missing)]) == 2
    assert capsys.readouterr().err == f"melep: error: {missing}: no such file\n"


def test_the_python_api_writes_the_same_reports(ranked: dict[str, Path], tmp_path: Path) -> None:
    import melep_cli

    document = melep_cli.read_rank_file(ranked["json"])
    melep_cli.write_report(document, tmp_path / "api.html")
    assert (tmp_path / "api.html").read_bytes() == ranked["html"].read_bytes()
    with pytest.raises(melep_cli.UsageError, match=r"path: .*notes\.txt is no report"):
        melep_cli.write_report(document, tmp_path / "notes.txt")
