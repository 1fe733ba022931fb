"""`melep report RANK.json [-o report.html|summary.md|ranking.png|.svg|.pdf]`: a ranking for people."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from melep_cli.cli.app import (
    DebugOption,
    OutputFileOption,
    QuietOption,
    app,
    choice_enum,
    cli_errors,
    configure_logging,
    stderr_console,
)
from melep_cli.errors import UsageError
from melep_cli.render import REPORT_KINDS, RankDocument, read_rank_file, report_kind_for, write_report
from melep_cli.render.kinds import CHART_KINDS, ReportKind

#: The report kinds `--format` names (`melep_cli.render.REPORT_KINDS`).
ReportKindName = choice_enum("ReportKindName", REPORT_KINDS, "A kind of report.")


@app.command("report")
def report_command(
    rank_file: Annotated[
        Path,
        typer.Argument(
            metavar="RANK.json", help="A rank result: melep rank --format json -o RANK.json.", show_default=False
        ),
    ],
    kind: Annotated[
        ReportKindName | None,
        typer.Option(
            "--format",
            "-f",
            help="html: the page with the charts; markdown: the table for CI; png, svg, pdf: the ranking chart"
            " alone. Default: the --output file's extension, else markdown.",
            case_sensitive=False,
            show_default=False,
        ),
    ] = None,
    output: OutputFileOption = None,
    quiet: QuietOption = False,
    debug: DebugOption = False,
) -> None:
    """Show a rank result as a self-contained HTML page, a Markdown summary, or the ranking chart alone.

    The HTML page needs no network (open it from a USB stick): the target and how it ran, each score's
    ranking with intervals and P(best), the share of H(y) each checkpoint removes per target label, each
    checkpoint's phi heatmap (when RANK.json has them: melep rank --pairs), failed checkpoints, the command.

    Example:
        melep rank -c ckpts/ -t data.h5 --pairs -o ranks.json
        melep report ranks.json -o report.html
        melep report ranks.json -o ranking.png
        melep report ranks.json >> "$GITHUB_STEP_SUMMARY"
    """
    configure_logging(quiet=quiet)
    with cli_errors(debug):
        explicit: ReportKind | None = kind.value if kind is not None else None  # type: ignore[assignment]
        if output is not None:
            chosen = report_kind_for(output, explicit=explicit, kind_parameter="kind")
        else:
            chosen = explicit or "markdown"
            if chosen in CHART_KINDS:
                raise UsageError(f"a {chosen} chart is written to a file", parameter="kind", hint="add {output}")
        document = read_rank_file(rank_file)
        if output is None:
            _print(document, chosen)
            return
        write_report(document, output, chosen)
    if not quiet:
        stderr_console.print(f"melep: wrote {output} ({chosen})", markup=False, highlight=False)


def _print(document: RankDocument, kind: ReportKind) -> None:
    """The report on stdout: Markdown or HTML text."""
    if kind == "html":
        from melep_cli.render.html import rank_html

        text = rank_html(document)
    else:
        from melep_cli.render.markdown import rank_markdown

        text = rank_markdown(document)
    sys.stdout.write(text)
    sys.stdout.flush()
