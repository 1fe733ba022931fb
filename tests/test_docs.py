"""The README and docs/ as a newcomer reads them: the quick start is what CI runs, every link leads somewhere."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


def _documents() -> list[Path]:
    return [
        REPO / "README.md",
        REPO / "benchmarks" / "README.md",
        REPO / "sample_data" / "README.md",
        *sorted((REPO / "docs").glob("*.md")),
    ]


def test_every_relative_link_in_the_documentation_leads_to_a_file() -> None:
    broken = []
    for document in _documents():
        for target in LINK.findall(document.read_text(encoding="utf-8")):
            if "://" in target or target.startswith("mailto:"):
                continue
            if not (document.parent / target).exists():
                broken.append(f"{document.relative_to(REPO)} -> {target}")
    assert broken == []


def test_the_quick_start_is_two_commands_and_ci_runs_the_second() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    quick_start = readme.split("## Quick start", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    commands = [line for line in quick_start.splitlines() if line.strip() and not line.startswith("#")]
    assert len(commands) == 2
    assert "melep rank --checkpoints sample_data/checkpoints --target sample_data/ptbxl_target.h5" in commands[0]
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8")
    assert commands[1].replace(" -c ", " -q -c ", 1) in ci  # the same command, pip quieter
    assert readme.index("## Quick start") < 1500  # in the first screenful


def test_the_readme_stays_short_and_points_at_the_reference() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) < 250  # a page per capability the issues ask the README to show, no more
    for document in ("docs/commands.md", "docs/formats.md", "docs/cache.md", "benchmarks/README.md"):
        assert f"]({document})" in readme
