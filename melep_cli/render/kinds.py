"""Which report a file name asks for: `report.html`, `summary.md`, `ranking.png|.svg|.pdf`."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from melep_cli.errors import UsageError

ReportKind = Literal["html", "markdown", "png", "svg", "pdf"]
#: The report kinds, as `melep report --format` names them.
REPORT_KINDS: tuple[ReportKind, ...] = ("html", "markdown", "png", "svg", "pdf")
#: File extension -> report kind. png, svg and pdf are the ranking chart alone (for slides).
REPORT_EXTENSIONS: dict[str, ReportKind] = {
    ".html": "html",
    ".htm": "html",
    ".md": "markdown",
    ".markdown": "markdown",
    ".png": "png",
    ".svg": "svg",
    ".pdf": "pdf",
}
#: The kinds that are a chart image, not a page of text.
CHART_KINDS: tuple[ReportKind, ...] = ("png", "svg", "pdf")


def report_kind_for(
    path: str | Path, *, explicit: ReportKind | None = None, parameter: str = "output", kind_parameter: str = "kind"
) -> ReportKind:
    """The report `path` asks for by its extension, or `explicit` when given and not contradicted.

    A UsageError names `parameter` (the file's) for an extension that is no report (`.txt`), or
    `kind_parameter` for an `explicit` kind that the extension contradicts.
    """
    path = Path(path)
    implied = REPORT_EXTENSIONS.get(path.suffix.lower())
    if explicit is not None:
        if implied is not None and implied != explicit:
            raise UsageError(
                f"{explicit} contradicts {path} (a {path.suffix} file is {implied})",
                parameter=kind_parameter,
                hint=f"drop {{{kind_parameter}}} or change the extension",
            )
        return explicit
    if implied is None:
        known = ", ".join(REPORT_EXTENSIONS)
        raise UsageError(
            f"{path} is no report: name a {known} file (.png, .svg, .pdf: the ranking chart alone)", parameter=parameter
        )
    return implied
