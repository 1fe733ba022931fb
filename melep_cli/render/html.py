"""The HTML report of a ranking: one self-contained page (inline CSS and SVG; no script, font, image or style is
fetched), readable in a browser without JavaScript, printable, from a phone's width to a laptop's.

Sections: the verdict and the facts (target, how it ran); the ranking as a chart and a table per score; the
share of H(y) each checkpoint removes per target label; per checkpoint its phi heatmap (collapsed); the
failed checkpoints; the command line. The only script opens the collapsed sections before printing.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Sequence
from html import escape

from melep_cli.render import charts, words
from melep_cli.render.rank_file import RankDocument, ResultEntry


def rank_html(document: RankDocument) -> str:
    """The whole page, as text."""
    body = [_header(document)]
    ok = document.ok
    if ok:
        body.append(_ranking_section(document))
        body.append(_labels_section(document))
        body.append(_phi_section(document))
    else:
        body.append('<section id="ranking"><h2>Ranking</h2><p class="warning">No checkpoint was ranked.</p></section>')
    if document.failed:
        body.append(_failed_section(document))
    body.append(_target_section(document))
    body.append(_run_section(document))
    title = f"Checkpoint ranking on {document.target_name}"
    return _PAGE.format(title=escape(title), style=_STYLE, script=_SCRIPT, body="\n".join(body))


def _header(document: RankDocument) -> str:
    verdict = words.verdict(document)
    noise = words.noise_sentence(document)
    lines = [
        "<header>",
        f'<h1>Which checkpoint to fine-tune for <span class="name">{_name(document.target_name)}</span></h1>',
    ]
    if verdict is not None:
        lines.append(f'<p class="verdict">{_name_strong(verdict, document.ok[0].checkpoint)}</p>')
    if noise is not None:
        lines.append(f'<p class="noise">{escape(noise)}</p>')
    if document.failed:
        count = len(document.failed)
        verb = "checkpoint failed and is" if count == 1 else "checkpoints failed and are"
        lines.append(f'<p class="warning"><a href="#failed">{count} {verb} not ranked</a>.</p>')
    lines.append(f"<p>{escape(_meaning(document))}</p>")
    labels = ", ".join(f"{label} {_percent1(p)}" for label, p in zip(document.labels, document.prevalence))
    facts = [
        ("Target", f"{document.target_path} ({document.target_format or 'unknown format'})"),
        ("Records", f"{document.records:,}" + (f"; {len(document.skipped):,} skipped" if document.skipped else "")),
        ("Labels (prevalence)", labels),
        ("Ranked", _ran(document)),
        ("Uncertainty", words.bootstrap_phrase(document)),
    ]
    lines.append(_facts(facts))
    lines.append("</header>")
    return "\n".join(lines)


def _meaning(document: RankDocument) -> str:
    if document.rank_by == "melep":
        return (
            "MELEP scores how well each pre-trained checkpoint's outputs predict the target labels before any"
            " fine-tuning; a lower MELEP predicts better accuracy after fine-tuning."
        )
    return (
        f"Checkpoints are ranked by {words.score_title(document.rank_by)}"
        f" ({words.direction_phrase(document, document.rank_by)}), computed before any fine-tuning."
    )


def _ran(document: RankDocument) -> str:
    parts = []
    if document.created:
        parts.append(document.created.replace("T", " ").replace("+00:00", " UTC"))
    if document.melep_version:
        parts.append(f"melep {document.melep_version}")
    devices = words.distinct([entry.device for entry in document.ok])
    precisions = words.distinct([entry.precision for entry in document.ok])
    parts.append(f"device {devices}, {precisions}")
    if document.weighting:
        parts.append(f"{document.weighting} weighting")
    return "; ".join(parts)


def _facts(facts: Sequence[tuple[str, str]]) -> str:
    rows = "".join(f"<dt>{escape(name)}</dt><dd>{escape(value)}</dd>" for name, value in facts)
    return f'<dl class="facts">{rows}</dl>'


def _name_strong(text: str, name: str) -> str:
    """`text` escaped, its first `name` in bold."""
    before, found, after = text.partition(name)
    if not found:
        return escape(text)
    return f"{escape(before)}<strong>{_name(name)}</strong>{escape(after)}"


def _name(text: str) -> str:
    """A name escaped, with a line break allowed after each _ - . / (never inside a word of it), for a phone."""
    return re.sub(r"([_\-./])", r"\1<wbr>", escape(text))


# the ranking ---------------------------------------------------------------------------------------------


def _ranking_section(document: RankDocument) -> str:
    main = document.rank_by
    lines = [
        '<section id="ranking">',
        f"<h2>Ranking by {escape(words.score_title(main))}</h2>",
        _score_block(document, main, "rank"),
    ]
    others = [name for name in document.scores if name != main and document.ordered_by(name)]
    for name in others:
        lines.append(f'<h3 id="score-{escape(name)}">{escape(words.score_title(name))}</h3>')
        lines.append(_score_block(document, name, f"score-{name}"))
    lines.append("</section>")
    return "\n".join(lines)


def _score_block(document: RankDocument, score: str, prefix: str) -> str:
    title = words.score_title(score)
    entries = document.ordered_by(score)
    label = f"{title} of each checkpoint with its interval, best first"
    wide = charts.svg_markup(charts.ranking_figure(document, score), prefix, label=label, classes="wide")
    narrow = charts.svg_markup(
        charts.ranking_figure(document, score, narrow=True), f"{prefix}-narrow", label=label, classes="narrow"
    )
    svg = wide + narrow
    caption = (
        f"Each checkpoint's {title} ({words.direction_phrase(document, score)})"
        + (f" with its {words.confidence(document)} interval" if document.has_bootstrap else "")
        + "; the best is marked"
        + ("; shaded: tied with the best (their difference is within the noise)" if document.has_bootstrap else "")
        + (
            "; P(best): the share of bootstrap resamples in which it scores best."
            if document.has_bootstrap
            else ". Ranked without the bootstrap (--bootstrap 0): no intervals, P(best) or ties."
        )
        + (
            " Stopped early (adaptive ranking): scored on the records it saw (the records column), so its score and"
            " interval are not comparable with a full-target score."
            if any(entry.stopped_early for entry in entries)
            else ""
        )
    )
    best = entries[0]
    headers = ["rank" if score == document.rank_by else "#", "checkpoint", title]
    if document.has_bootstrap:
        headers += [f"{words.confidence(document)} interval", "P(best)"]
    headers.append("Δ best")
    extra = [name for name in document.scores if name != score] if score == document.rank_by else []
    headers += [words.score_title(name) for name in extra]
    if score == document.rank_by:
        headers += ["source labels", "format"]
    stopped = any(entry.stopped_early for entry in entries)
    if stopped:
        headers.append("records")
    optional = {index for index, header in enumerate(headers) if header in ("Δ best", "source labels", "format")}
    rows = []
    for position, entry in enumerate(entries, start=1):
        verdict = entry.scores[score]
        tied = bool(verdict.tied_with_best) and entry is not best
        classes = "best" if entry is best else "tied" if tied else ""
        cells = [
            str(entry.rank if score == document.rank_by else position),
            f'<span class="name">{_name(entry.checkpoint)}</span>',
            words.number(verdict.value),
        ]
        if document.has_bootstrap:
            cells += [words.interval(verdict.ci).replace("–", "–<wbr>"), escape(words.share(verdict.p_best))]
        cells.append(escape(words.delta(entry, score, best)) if entry is not best else "best")
        for name in extra:
            other = entry.scores.get(name)
            cells.append(words.number(other.value) if other is not None and other.value is not None else "error")
        if score == document.rank_by:
            cells += [str(len(entry.source_labels)), escape(_format(entry))]
        if stopped:
            records = f"{entry.records:,}" if entry.records is not None else "—"
            cells.append(records)
        rows.append((classes, cells))
    table = _table(headers, rows, numeric=_numeric(headers), optional=optional)
    return f'<figure>{svg}<figcaption>{escape(caption)}</figcaption></figure>\n<div class="scroll">{table}</div>'


def _numeric(headers: Sequence[str]) -> set[int]:
    return {index for index, header in enumerate(headers) if header not in ("checkpoint", "format")}


def _format(entry: ResultEntry) -> str:
    parts = [entry.format or ""]
    if entry.precision not in (None, "float32"):
        parts.append(entry.precision or "")
    return " ".join(part for part in parts if part)


def _table(
    headers: Sequence[str],
    rows: Sequence[tuple[str, Sequence[str]]],
    *,
    numeric: Collection[int] = (),
    optional: Collection[int] = (),
) -> str:
    """A table of already escaped cells; `rows` as (class, cells); the `optional` columns hidden on a phone."""

    def cell(tag: str, index: int, content: str) -> str:
        classes = " ".join(name for name, yes in (("num", index in numeric), ("opt", index in optional)) if yes)
        return f'<{tag} class="{classes}">{content}</{tag}>' if classes else f"<{tag}>{content}</{tag}>"

    head = "".join(cell("th", index, escape(header)) for index, header in enumerate(headers))
    body = []
    for classes, cells in rows:
        opening = f'<tr class="{classes}">' if classes else "<tr>"
        body.append(opening + "".join(cell("td", index, content) for index, content in enumerate(cells)) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


# what each checkpoint carries ----------------------------------------------------------------------------


def _labels_section(document: RankDocument) -> str:
    if not any(entry.removed_share for entry in document.ok):
        return ""
    figure, hovers = charts.removed_share_figure(document)
    svg = charts.svg_markup(
        figure, "labels", label="Share of H(y) each checkpoint removes per target label", hovers=hovers
    )
    caption = (
        "Each cell: the share of the target label's no-information value H(y) that the checkpoint's outputs remove,"
        " 1 − m(y)/H(y): 0% carries nothing about the label, 100% would predict it perfectly."
        " The percentage with each label is its prevalence."
    )
    lines = [
        '<section id="labels">',
        "<h2>What each checkpoint carries about each target label</h2>",
        _SCROLL_HINT,
        f'<figure class="heatmap">{svg}<figcaption>{escape(caption)}</figcaption></figure>',
    ]
    weak = words.uninformed_sentence(document)
    if weak is not None:
        lines.append(f'<p class="warning">{escape(weak)}</p>')
    lines.append("</section>")
    return "\n".join(lines)


def _phi_section(document: RankDocument) -> str:
    lines = ['<section id="phi">', "<h2>Which source outputs inform which target label</h2>"]
    if not document.has_phi:
        lines.append(
            "<p>This rank result has no phi matrices: rank with <code>--pairs</code> (or write the report with"
            " <code>melep rank --report</code>) to see them.</p></section>"
        )
        return "\n".join(lines)
    lines.append(
        "<p>Per checkpoint, for each target label (rows) and each of the checkpoint's own output labels (columns):"
        " the share of H(y) that output removes, 1 − φ(y, z)/H(y); the most informative output of each target label"
        " is framed. Hover over a cell for φ(y, z).</p>"
    )
    for index, entry in enumerate(document.ok):
        if entry.phi is None:
            continue
        figure, hovers = charts.phi_figure(document, entry)
        svg = charts.svg_markup(figure, f"phi{index}", label=f"phi heatmap of {entry.checkpoint}", hovers=hovers)
        sources = len(entry.source_labels)
        lines.append(
            f'<details><summary><span class="name">{entry.rank}. {_name(entry.checkpoint)}</span>'
            f" ({sources} source label{'s' if sources != 1 else ''})</summary>"
            f'{_SCROLL_HINT}<figure class="heatmap">{svg}</figure></details>'
        )
    lines.append("</section>")
    return "\n".join(lines)


# failures, target, run -----------------------------------------------------------------------------------


def _failed_section(document: RankDocument) -> str:
    rows = [
        ("", [f'<span class="name">{_name(entry.checkpoint)}</span>', f"<code>{escape(entry.error or '')}</code>"])
        for entry in document.failed
    ]
    return (
        '<section id="failed"><h2>Checkpoints that failed</h2>'
        "<p>These were not ranked; the others were.</p>"
        f'<div class="scroll">{_table(["checkpoint", "error"], rows)}</div></section>'
    )


def _target_section(document: RankDocument) -> str:
    rows = []
    for label, prevalence, entropy in zip(document.labels, document.prevalence, document.no_information):
        positives = round(prevalence * document.records)
        rows.append(("", [escape(label), f"{positives:,}", _percent1(prevalence), words.number(entropy)]))
    lines = [
        '<section id="target">',
        f'<h2>Target <span class="name">{_name(document.target_name)}</span></h2>',
        _facts(
            [
                ("Path", document.target_path),
                ("Format", document.target_format or "—"),
                ("Records", f"{document.records:,}"),
            ]
        ),
        '<div class="scroll">'
        + _table(["label", "positives", "prevalence", "H(y) (no information)"], rows, numeric={1, 2, 3})
        + "</div>",
    ]
    if document.excluded_labels:
        items = "".join(f"<li>{escape(label)}: {escape(reason)}</li>" for label, reason in document.excluded_labels)
        lines.append(f"<p>Labels left out of the ranking:</p><ul>{items}</ul>")
    if document.skipped:
        items = "".join(
            f"<li><code>{escape(record)}</code>: {escape(reason)}</li>" for record, reason in document.skipped
        )
        count = len(document.skipped)
        lines.append(
            f"<details><summary>{count:,} skipped record{'s' if count != 1 else ''}</summary><ul>{items}</ul></details>"
        )
    else:
        lines.append("<p>No record was skipped.</p>")
    lines.append("</section>")
    return "\n".join(lines)


def _run_section(document: RankDocument) -> str:
    facts = [
        ("melep", document.melep_version or "—"),
        ("Created", document.created or "—"),
        ("Weighting", document.weighting or "—"),
        ("Scores", ", ".join(words.score_title(name) for name in document.scores)),
        ("Ranked by", words.score_title(document.rank_by)),
        ("Bootstrap", words.bootstrap_phrase(document)),
        ("Devices", words.distinct([entry.device for entry in document.ok])),
        ("Precision", words.distinct([entry.precision for entry in document.ok])),
    ]
    if document.adaptive is not None:
        facts.append(("Adaptive", words.adaptive_phrase(document.adaptive) or "yes"))
        stopped = [entry.checkpoint for entry in document.ok if entry.stopped_early]
        if stopped:
            facts.append(("Stopped early", ", ".join(stopped)))
    command = document.command or "(not recorded in this rank result)"
    return (
        '<section id="run"><h2>How this ranking was made</h2>'
        + _facts(facts)
        + f"<p>The command line:</p><pre><code>{escape(command)}</code></pre></section>"
    )


_SCROLL_HINT = '<p class="scroll-hint">Scroll sideways for every label.</p>'


def _percent1(value: float) -> str:
    return f"{value:.1%}"


_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="melep">
<title>{title}</title>
<style>{style}</style>
</head>
<body>
<main>
{body}
</main>
<script>{script}</script>
</body>
</html>
"""

#: Local fonts only (no @font-face, nothing fetched); the charts' text is drawn as paths.
_STYLE = """
:root { color-scheme: light; --ink: #1d2733; --muted: #5b6775; --line: #d5dbe1; --best: #a6dba0;
  --tied: #d9f0d3; --warn: #8a4b00; }
* { box-sizing: border-box; }
body { margin: 0; color: var(--ink); background: #fff;
  font: 16px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
main { max-width: 64rem; margin: 0 auto; padding: 1.5rem 1rem 3rem; }
h1 { font-size: 1.6rem; line-height: 1.25; margin: 0 0 .75rem; }
h2 { font-size: 1.25rem; margin: 2.2rem 0 .6rem; padding-top: .6rem; border-top: 1px solid var(--line); }
h3 { font-size: 1.05rem; margin: 1.6rem 0 .4rem; }
.name { overflow-wrap: break-word; }
.verdict { font-size: 1.15rem; margin: .5rem 0; padding: .6rem .8rem; background: var(--tied);
  border-left: 5px solid #1b7837; }
.noise { margin: .4rem 0; }
.warning { color: var(--warn); }
.facts { display: grid; grid-template-columns: max-content 1fr; gap: .2rem 1rem; margin: 1rem 0;
  font-size: .93rem; }
.facts dt { color: var(--muted); }
.facts dd { margin: 0; overflow-wrap: anywhere; }
figure { margin: 1rem 0; }
figcaption { color: var(--muted); font-size: .9rem; margin-top: .3rem; }
svg.chart { display: block; width: 100%; height: auto; }
svg.narrow { display: none; }
svg.chart * { stroke-linejoin: round; stroke-linecap: butt; }
.heatmap { overflow-x: auto; }
.scroll { overflow-x: auto; }
.scroll-hint { display: none; color: var(--muted); font-size: .85rem; margin: .2rem 0; }
table { border-collapse: collapse; font-size: .92rem; margin: .5rem 0; }
th, td { padding: .3rem .6rem; border-bottom: 1px solid var(--line); text-align: left; vertical-align: top; }
th { background: #f3f5f7; }
.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tr.best td { background: var(--best); font-weight: 600; }
tr.tied td { background: var(--tied); }
details { margin: .4rem 0; border: 1px solid var(--line); border-radius: 4px; padding: .3rem .7rem; }
summary { cursor: pointer; font-weight: 600; }
pre { background: #f3f5f7; padding: .6rem .8rem; overflow-x: auto; white-space: pre-wrap;
  overflow-wrap: anywhere; font-size: .88rem; }
code { font-family: ui-monospace, "SFMono-Regular", Menlo, Consolas, "Liberation Mono", monospace; }
@media (max-width: 40rem) {
  body { font-size: 15px; }
  main { padding: 1rem .6rem 2rem; }
  h1 { font-size: 1.3rem; }
  .facts { grid-template-columns: 1fr; gap: 0; }
  .facts dd { margin-bottom: .4rem; }
  .heatmap { overflow-x: auto; }
  .heatmap svg.chart { width: 40rem; max-width: none; }
  svg.wide { display: none; }
  svg.narrow { display: block; }
  .opt { display: none; }
  table { font-size: .85rem; }
  th, td { padding: .25rem .35rem; }
  .num { white-space: normal; }
  .scroll-hint { display: block; }
}
@media print {
  body { font-size: 11pt; }
  main { max-width: none; padding: 0; }
  h2 { break-after: avoid; }
  figure, tr, details { break-inside: avoid; }
  .scroll, .heatmap { overflow: visible; }
  .heatmap svg.chart { width: 100%; min-width: 0 !important; }
  tr.best td, tr.tied td, .verdict { -webkit-print-color-adjust: exact; print-color-adjust: exact; }
}
"""

#: The one script: open the collapsed phi heatmaps for printing (the page works without it).
_SCRIPT = (
    'window.addEventListener("beforeprint",function(){'
    'document.querySelectorAll("details").forEach(function(d){d.open=true;});});'
)
