"""Reports of a ranking for people: a self-contained HTML page with charts, Markdown for CI, the chart alone.

Everything is drawn from the JSON document of `melep rank` (`report.rank_to_dict`), read back by
`rank_file.read_rank_file` or taken from a run in memory, so `melep report RANK.json` and `melep rank
--report` give the same page. `charts` (matplotlib, imported only when a chart is drawn) draws the figures,
`html` and `markdown` lay the pages out; `kinds` says which file extension is which report.
"""

from __future__ import annotations

from pathlib import Path

from melep_cli.render.kinds import REPORT_KINDS, ReportKind, report_kind_for
from melep_cli.render.rank_file import RankDocument, read_rank_file

__all__ = ["REPORT_KINDS", "RankDocument", "ReportKind", "read_rank_file", "report_kind_for", "write_report"]


def write_report(document: RankDocument, path: str | Path, kind: ReportKind | None = None) -> ReportKind:
    """Write `document` to `path` atomically as `kind` (default: the one its extension names); returns the kind."""
    from melep_cli.atomic import atomic_path, atomic_write_text

    kind = kind or report_kind_for(path, parameter="path")
    if kind == "html":
        from melep_cli.render.html import rank_html

        atomic_write_text(path, rank_html(document), make_parents=False)
    elif kind == "markdown":
        from melep_cli.render.markdown import rank_markdown

        atomic_write_text(path, rank_markdown(document), make_parents=False)
    else:
        from melep_cli.render.charts import save_ranking_chart

        with atomic_path(path, make_parents=False) as temporary:
            save_ranking_chart(document, temporary, kind)
    return kind
