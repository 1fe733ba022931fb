"""The ranking as GitHub-flavoured Markdown, short enough for a CI job summary (`$GITHUB_STEP_SUMMARY`).

A heading, the verdict, one table (rank, checkpoint, score, interval, P(best), difference from the best, the
other scores), the tied set in words, the failed checkpoints with their errors, and how it ran. Names, paths,
errors and the command are code spans (`code`) and other user text is escaped (`escape`), so a name like
`model_[v2]|x` is shown as is and never breaks the table. The table is a few lines of text: written here
rather than with a table library.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from melep_cli.render import words
from melep_cli.render.rank_file import RankDocument

#: Error messages longer than this are cut (with an ellipsis) in the summary; the JSON has them whole.
ERROR_CHARACTERS = 400

_SPECIAL = re.compile(r"([\\`*_\[\]<>|~&])")


def escape(text: str) -> str:
    """Prose shown literally in Markdown and in a table cell: one line, the characters that format escaped."""
    return _SPECIAL.sub(r"\\\1", re.sub(r"\s+", " ", str(text)))


def code(text: str) -> str:
    """`text` as a one-line code span: shown as is; a `|` escaped, which GitHub's tables need even in code."""
    text = " ".join(str(text).split()).replace("|", "\\|")
    fence = "`" * (max((len(run) for run in re.findall("`+", text)), default=0) + 1)
    padded = f" {text} " if text.startswith("`") or text.endswith("`") else text
    return f"{fence}{padded}{fence}"


def rank_markdown(document: RankDocument) -> str:
    """The whole summary, as text ending with a newline."""
    score = document.rank_by
    lines = [f"### {_title(document)}", ""]
    verdict = words.verdict(document)
    if verdict is not None:
        best = document.ok[0].checkpoint
        lines += [_bold_name(verdict, best), ""]
    entries = document.ordered_by(score)
    if entries:
        lines += _table(document, score)
        lines.append("")
        noise = words.noise_sentence(document)
        if noise is not None:
            lines += [_tied_words(document) or escape(noise), ""]
        weak = words.uninformed_sentence(document)
        if weak is not None:
            lines += [f"⚠️ {escape(weak)}", ""]
    else:
        lines += ["No checkpoint was ranked.", ""]
    failed = document.failed
    if failed:
        count = len(failed)
        lines += [f"**{count} checkpoint{'s' if count != 1 else ''} failed** (not ranked):", ""]
        lines += ["| checkpoint | error |", "|---|---|"]
        for entry in failed:
            lines.append(f"| {code(entry.checkpoint)} | {code(_cut(entry.error or ''))} |")
        lines.append("")
    lines.append(_footer(document))
    if document.command:
        lines += ["", f"Command: {code(document.command)}"]
    return "\n".join(lines) + "\n"


def _title(document: RankDocument) -> str:
    score = words.score_title(document.rank_by)
    how = [f"{document.records:,} records"]
    if document.rank_by == "melep" and document.weighting:
        how.append(f"{document.weighting} weighting")
    how.append(words.direction_phrase(document, document.rank_by))
    return f"{escape(score)} ranking on {code(document.target_name)} ({escape('; '.join(how))})"


def _bold_name(sentence: str, name: str) -> str:
    before, found, after = sentence.partition(name)
    if not found:
        return escape(sentence)
    return f"{escape(before)}**{code(name)}**{escape(after)}"


def _table(document: RankDocument, score: str) -> list[str]:
    entries = document.ordered_by(score)
    best = entries[0]
    others = [name for name in document.scores if name != score]
    headers = ["rank", "checkpoint", words.score_title(score)]
    align = ["---:", "---", "---:"]
    if document.has_bootstrap:
        headers += [f"{words.confidence(document)} interval", "P(best)"]
        align += ["---:", "---:"]
    headers.append("Δ best")
    align.append("---:")
    for name in others:
        headers.append(words.score_title(name))
        align.append("---:")
    stopped = any(entry.stopped_early for entry in entries)
    if stopped:
        headers.append("records")
        align.append("---:")
    rows = ["| " + " | ".join(escape(header) for header in headers) + " |", "|" + "|".join(align) + "|"]
    for entry in entries:
        verdict = entry.scores[score]
        name = code(entry.checkpoint)
        cells = [str(entry.rank), f"**{name}**" if entry is best else name, words.number(verdict.value)]
        if document.has_bootstrap:
            cells += [words.interval(verdict.ci), words.share(verdict.p_best)]
        cells.append("best" if entry is best else escape(words.delta(entry, score, best)))
        for other in others:
            value = entry.scores.get(other)
            cells.append(words.number(value.value) if value is not None and value.value is not None else "error")
        if stopped:
            cells.append(_records(entry.records))
        rows.append("| " + " | ".join(cells) + " |")
    return rows


def _records(records: int | None) -> str:
    return f"{records:,}" if records is not None else "—"


def _tied_words(document: RankDocument) -> str | None:
    """'Tied with the best (within the noise): a, b.' when the bootstrap cannot tell several apart."""
    ranks = document.tied_ranks
    if len(ranks) < 2:
        return None
    names = [code(entry.checkpoint) for entry in document.ok if entry.rank in ranks]
    noise = words.noise_sentence(document) or ""
    return f"Tied: {words.listing(names)}. {escape(noise)}"


def _cut(text: str) -> str:
    return text if len(text) <= ERROR_CHARACTERS else text[: ERROR_CHARACTERS - 1] + "…"


def _footer(document: RankDocument) -> str:
    """'Target `PATH`; melep 0.1.0, 2026-12-02T12:00:00+00:00; 1000 paired resamples ...'."""
    ran = ", ".join(part for part in (f"melep {document.melep_version or '?'}", document.created) if part)
    parts: Sequence[str] = [
        f"Target {code(document.target_path)}",
        escape(ran),
        escape(words.bootstrap_phrase(document)),
    ]
    return "; ".join(parts) + "."
