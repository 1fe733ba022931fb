"""The report's figures, drawn with matplotlib (Agg, no pyplot) and written as inline SVG or as a file.

- `ranking_figure`: each checkpoint's score with its interval, best first; the best marked, the checkpoints
  tied with it shaded; P(best) beside each.
- `removed_share_figure`: checkpoints x target labels, the share of H(y) each removes (1 - m(y)/H(y)).
- `phi_figure`: one checkpoint's target labels x source labels, the share of H(y) each source output removes
  (1 - phi(y, z)/H(y)).

Text is drawn as paths (`svg.fonttype: path`) in matplotlib's own DejaVu Sans, so an SVG needs no font and
looks the same everywhere; heatmap cells carry an SVG <title> (the value on hover, no JavaScript). matplotlib
is imported here only, when a chart is drawn: `melep rank` without --report never imports it.
"""

from __future__ import annotations

import functools
import io
import math
import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from html import escape
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from melep_cli.render import words
from melep_cli.render.rank_file import RankDocument, ResultEntry

if TYPE_CHECKING:
    from matplotlib.figure import Figure

_F = TypeVar("_F", bound=Callable[..., Any])

#: Colours: the best (dark green), tied with it (its shading), the others (slate); the heatmaps' colour map.
BEST = "#1b7837"
TIED_SHADE = "#d9f0d3"
BEST_SHADE = "#a6dba0"
OTHER = "#3b4a5a"
HEATMAP = "YlGnBu"
#: Figure width in inches: the page's text column (the SVG scales to it); PNG resolution for slides.
WIDTH = 8.0
NARROW_WIDTH = 4.2
PNG_DPI = 200

_STYLE = {
    "svg.fonttype": "path",  # text as outlines: no font file, no font fetched, identical in every browser
    "svg.hashsalt": "melep",  # the same ids in every run: the same inputs give the same report
    "font.family": "DejaVu Sans",  # shipped with matplotlib
    "font.size": 10,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "pdf.fonttype": 42,
}


@contextmanager
def _style() -> Iterator[None]:
    import matplotlib

    with matplotlib.rc_context(_STYLE):
        yield


def _styled(function: _F) -> _F:
    """`function` run with the report's rc settings (they apply when artists are made, and when saved)."""

    @functools.wraps(function)
    def styled(*args: Any, **kwargs: Any) -> Any:
        with _style():
            return function(*args, **kwargs)

    return styled  # type: ignore[return-value]


def _figure(width: float, height: float) -> Figure:
    """A Figure on an Agg canvas (never pyplot: no global state, no GUI backend)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    return figure


# the ranking ---------------------------------------------------------------------------------------------


@_styled
def ranking_figure(document: RankDocument, score: str, *, title: bool = False, narrow: bool = False) -> Figure:
    """Each ranked checkpoint's `score` (best on top) with its interval; the best marked, those tied with it
    shaded; P(best) in a column at the right. `title`: a title naming the target (the chart alone, for slides).
    `narrow`: for a phone's width, each name above its interval instead of beside it."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch
    from matplotlib.transforms import blended_transform_factory

    entries = document.ordered_by(score)
    rows = max(len(entries), 1)
    if narrow:
        figure = _figure(NARROW_WIDTH, 1.6 + 0.62 * rows + (0.3 if title else 0.0))
    else:
        figure = _figure(WIDTH, 1.25 + 0.42 * rows + (0.3 if title else 0.0))
    axes = figure.add_subplot()
    offset = 0.16 if narrow else 0.0  # the interval below the name, in a narrow chart
    bootstrap = any(entry.scores[score].ci is not None for entry in entries)
    for row, entry in enumerate(entries):
        verdict = entry.scores[score]
        best = row == 0
        if best or verdict.tied_with_best:
            axes.axhspan(row - 0.5, row + 0.5, color=BEST_SHADE if best else TIED_SHADE, zorder=0, linewidth=0)
        colour = BEST if best else OTHER
        value = verdict.value
        assert value is not None
        if verdict.ci is not None:
            low, high = verdict.ci
            axes.errorbar(
                [value],
                [row + offset],
                xerr=[[max(value - low, 0.0)], [max(high - value, 0.0)]],
                fmt="none",
                ecolor=colour,
                elinewidth=2,
                capsize=4,
                zorder=2,
            )
        axes.plot(
            [value], [row + offset], marker="D" if best else "o", markersize=9 if best else 7, color=colour, zorder=3
        )
        if narrow:
            axes.text(
                0.015,
                row - 0.2,
                f"{entry.rank}. {entry.checkpoint}",
                transform=blended_transform_factory(axes.transAxes, axes.transData),
                va="center",
                ha="left",
                fontweight="bold" if best else "normal",
                zorder=4,
            )
        if verdict.p_best is not None:
            axes.annotate(
                words.share(verdict.p_best),
                xy=(1.0, row + offset),
                xycoords=("axes fraction", "data"),
                xytext=(12, 0),
                textcoords="offset points",
                va="center",
                ha="left",
                fontweight="bold" if best else "normal",
                color=colour,
            )
    if entries and any(entry.scores[score].p_best is not None for entry in entries):
        axes.annotate(
            "P(best)",
            xy=(1.0, 1.0),
            xycoords="axes fraction",
            xytext=(12, 4),
            textcoords="offset points",
            va="bottom",
            ha="left",
            fontweight="bold",
        )
    if narrow:
        axes.set_yticks([])
        axes.spines["left"].set_visible(False)
    else:
        axes.set_yticks(range(len(entries)), [f"{entry.rank}. {entry.checkpoint}" for entry in entries])
    axes.set_ylim(len(entries) - 0.5, -0.5)  # rank 1 on top
    if narrow:  # room for the names: the values start a little right of the left edge
        low, high = axes.get_xlim()
        axes.set_xlim(low - 0.04 * (high - low), high)
    for label, entry in zip(axes.get_yticklabels(), entries):
        if entry is entries[0]:
            label.set_fontweight("bold")
    axes.tick_params(axis="y", length=0)
    axes.grid(axis="x", color="#dddddd", linewidth=0.8, zorder=1)
    axes.set_axisbelow(True)
    direction = document.direction(score)
    arrow = "← better" if direction == "lower" else "better →"
    axes.set_xlabel(f"{words.score_title(score)} ({direction} is better){chr(10) if narrow else '    '}{arrow}")
    handles = [Line2D([], [], marker="D", color=BEST, linestyle="none", markersize=8, label="best")]
    if len(entries) > 1 and any(entry.scores[score].tied_with_best for entry in entries[1:]):
        handles.append(Patch(color=TIED_SHADE, label="tied with the best (within the noise)"))
    if bootstrap:
        handles.append(
            Line2D([], [], color=OTHER, marker="|", markersize=10, label=f"{words.confidence(document)} interval")
        )
    figure.legend(handles=handles, loc="outside lower center", ncols=1 if narrow else len(handles), frameon=False)
    if title:
        figure.suptitle(
            f"{words.score_title(score)} ranking on {document.target_name} ({document.records} records)",
            fontweight="bold",
        )
    return figure


# heatmaps ------------------------------------------------------------------------------------------------


@_styled
def removed_share_figure(document: RankDocument) -> tuple[Figure, list[str]]:
    """Ranked checkpoints (rows, best first) x target labels: the share of H(y) each removes; and each cell's
    hover text, in drawing order."""
    entries = [entry for entry in document.ok if entry.removed_share]
    labels = list(document.labels)
    values = [[entry.removed_share.get(label) for label in labels] for entry in entries]
    columns = [f"{label}\n{_prevalence(p)}" for label, p in zip(labels, document.prevalence)]
    rows = [f"{entry.rank}. {entry.checkpoint}" for entry in entries]
    hover = [
        [f"{entry.checkpoint} on {label}: removes {words.percent(value)} of H(y)" for label, value in zip(labels, row)]
        for entry, row in zip(entries, values)
    ]
    return _heatmap(values, rows, columns, hover, column_title="target label (prevalence)")


@_styled
def phi_figure(document: RankDocument, entry: ResultEntry) -> tuple[Figure, list[str]]:
    """One checkpoint's target labels (rows) x source labels: the share of H(y) each source output removes,
    1 - phi(y, z) / H(y), the most informative source of each label outlined; and the hover texts."""
    assert entry.phi is not None
    values: list[list[float | None]] = []
    hover: list[list[str]] = []
    for label, entropy, row in zip(document.labels, document.no_information, entry.phi):
        shares = [_removed(phi, entropy) for phi in row]
        values.append(shares)
        hover.append(
            [
                f"{label} from {source}: phi {words.number(phi)}, H(y) {words.number(entropy)},"
                f" removes {words.percent(removed)}"
                for source, phi, removed in zip(entry.source_labels, row, shares)
            ]
        )
    rows = [f"{label} ({_prevalence(p)})" for label, p in zip(document.labels, document.prevalence)]
    return _heatmap(
        values, rows, list(entry.source_labels), hover, column_title=f"source label of {entry.checkpoint}", outline=True
    )


def _removed(phi: float | None, entropy: float | None) -> float | None:
    if phi is None or entropy is None or entropy <= 0:
        return None
    return 1.0 - phi / entropy


def _prevalence(value: float) -> str:
    return f"{value:.0%}" if math.isfinite(value) and value >= 0.01 else f"{value:.1%}"


def _heatmap(
    values: Sequence[Sequence[float | None]],
    rows: Sequence[str],
    columns: Sequence[str],
    hover: Sequence[Sequence[str]],
    *,
    column_title: str,
    outline: bool = False,
) -> tuple[Figure, list[str]]:
    """Cells as rectangles (vector, each with an id for its hover text), the value printed in each; a colour bar
    from 0 to the largest value. `outline`: the largest value of each row framed."""
    from matplotlib import colormaps
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    from matplotlib.patches import Rectangle

    finite = [value for row in values for value in row if value is not None]
    top = max([*finite, 0.05])
    norm = Normalize(vmin=0.0, vmax=top)
    cmap = colormaps[HEATMAP]
    longest = max((len(line) for name in columns for line in name.split("\n")), default=1)
    row_name = max((len(name) for name in rows), default=1)
    margins = 2.2 + 0.075 * row_name + 1.0  # row names, colour bar (inches)
    # cells 0.62 inch wide, narrower to fit the page, never under 0.42 (then the page scrolls it sideways)
    cell = max(min(0.62, (WIDTH - margins) / max(len(columns), 1)), 0.42)
    width = max(margins + cell * len(columns), 4.5)
    # a column name wider than its cell (about 0.08 inch a character) is turned, on one line
    rotate = longest * 0.08 > (width - margins) / max(len(columns), 1)
    if rotate:
        columns = [name.replace("\n", " (") + ")" if "\n" in name else name for name in columns]
        longest = max((len(name) for name in columns), default=1)
    height = 1.3 + 0.36 * len(rows) + (0.06 * longest if rotate else 0.0)
    figure = _figure(width, height)
    axes = figure.add_subplot()
    hovers: list[str] = []
    for i, row in enumerate(values):
        best = max((value for value in row if value is not None), default=None)
        for j, value in enumerate(row):
            colour = cmap(norm(value)) if value is not None else (0.93, 0.93, 0.93, 1.0)
            framed = outline and value is not None and value == best and best > 0
            cell = Rectangle(
                (j - 0.5, i - 0.5),
                1.0,
                1.0,
                facecolor=colour,
                edgecolor="#111111" if framed else "white",
                linewidth=2.0 if framed else 1.0,
                zorder=2 if framed else 1,  # a frame over its neighbours' white edges
                gid=f"cell-{len(hovers)}",
            )
            axes.add_patch(cell)
            hovers.append(hover[i][j])
            luminance = 0.2126 * colour[0] + 0.7152 * colour[1] + 0.0722 * colour[2]
            axes.text(
                j,
                i,
                words.percent(value),
                ha="center",
                va="center",
                fontsize=9,
                color="white" if luminance < 0.5 else "#111111",
                fontweight="bold" if framed else "normal",
            )
    axes.set_xlim(-0.5, len(columns) - 0.5)
    axes.set_ylim(len(rows) - 0.5, -0.5)
    axes.set_xticks(range(len(columns)), columns)
    axes.set_yticks(range(len(rows)), rows)
    axes.xaxis.tick_top()
    if rotate:  # each name rising from its own column (the top labels are each tick's label2)
        for tick in axes.xaxis.get_major_ticks():
            tick.label2.set(rotation=45, ha="left", va="bottom", rotation_mode="anchor")
    axes.xaxis.set_label_position("top")
    axes.set_xlabel(column_title)
    axes.tick_params(length=0)
    for spine in axes.spines.values():
        spine.set_visible(False)
    bar = figure.colorbar(ScalarMappable(norm=norm, cmap=cmap), ax=axes, shrink=0.9, fraction=0.05, pad=0.02)
    bar.set_label("share of H(y) removed")
    bar.ax.yaxis.set_major_locator(_percent_steps(top))
    bar.ax.yaxis.set_major_formatter(_percent_formatter())
    bar.outline.set_visible(False)
    return figure, hovers


def _percent_steps(top: float) -> Any:
    """Colour bar ticks at whole percentages: 1, 2, 5, 10, 20 or 25% apart, four to eight of them."""
    from matplotlib.ticker import MultipleLocator

    step = next((step for step in (0.01, 0.02, 0.05, 0.10, 0.20, 0.25) if top / step <= 8), 0.25)
    return MultipleLocator(step)


def _percent_formatter() -> Any:
    from matplotlib.ticker import PercentFormatter

    return PercentFormatter(xmax=1.0, decimals=0)


# output --------------------------------------------------------------------------------------------------


@_styled
def svg_markup(
    figure: Figure, prefix: str, *, label: str, hovers: Sequence[str] = (), classes: str = "", grow: float = 1.15
) -> str:
    """`figure` as an <svg> element to inline in HTML: no XML prologue, DOCTYPE or metadata; scaled by CSS to the
    page's width (its viewBox kept, its fixed size dropped), never beyond `grow` times its own size; every id
    prefixed with `prefix` (several figures share one page); `label` its accessible name; `hovers[k]` the
    <title> of the cell drawn with gid cell-k; `classes` more CSS classes."""
    buffer = io.StringIO()
    figure.savefig(buffer, format="svg", metadata={"Date": None, "Creator": None, "Format": None, "Type": None})
    text = buffer.getvalue()
    text = text[text.index("<svg") :]
    text = re.sub(r"\s*<metadata>.*?</metadata>", "", text, flags=re.S)
    # matplotlib's stylesheet (`*{stroke-linejoin: ...}`) would apply to the whole page: the page's CSS has it
    text = re.sub(r"\s*<defs>\s*<style[^>]*>[^<]*</style>\s*</defs>", "", text, count=1)
    for index, hover in enumerate(hovers):
        text = text.replace(f'<g id="cell-{index}">', f'<g id="cell-{index}"><title>{escape(hover)}</title>', 1)
    text = re.sub(r'\bid="([^"]+)"', rf'id="{prefix}-\1"', text)
    text = re.sub(r'(xlink:href|href)="#([^"]+)"', rf'\1="#{prefix}-\2"', text)
    text = re.sub(r"url\(#([^)]+)\)", rf"url(#{prefix}-\1)", text)
    opening = re.match(r"<svg\b[^>]*>", text)
    assert opening is not None
    attributes = opening.group(0)
    attributes = re.sub(r'\s(width|height)="[^"]*"', "", attributes)
    pixels = figure.get_figwidth() * 96  # CSS pixels: 96 an inch
    css = f"chart {classes}".strip()
    style = f"max-width: {pixels * grow:.0f}px"
    if figure.get_figwidth() > WIDTH:  # wider than the page (a heatmap of many labels): scrolled, never squeezed
        style += f"; min-width: {pixels * 0.8:.0f}px"
    attributes = attributes.replace(
        "<svg", f'<svg role="img" aria-label="{escape(label)}" class="{css}" style="{style}"', 1
    )
    return attributes + text[opening.end() :].rstrip() + "\n"


@_styled
def save_ranking_chart(document: RankDocument, path: str | Path, kind: str) -> None:
    """The ranking chart alone (the score ranked by), titled, as a `kind` (png, svg or pdf) file for slides."""
    from melep_cli.errors import InputError

    if not document.ordered_by(document.rank_by):
        raise InputError(f"{document.source}: no ranked checkpoint to draw (every checkpoint failed)")
    figure = ranking_figure(document, document.rank_by, title=True)
    metadata: dict[str, Any] = {"svg": {"Date": None}, "pdf": {"CreationDate": None, "ModDate": None}}.get(kind, {})
    figure.savefig(path, format=kind, dpi=PNG_DPI, metadata=metadata)
