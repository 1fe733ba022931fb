"""The sentences and numbers the HTML and Markdown reports share, worded as the terminal's rank table words them."""

from __future__ import annotations

import math

from melep_cli import report
from melep_cli.ranking import UNINFORMED_SHARE
from melep_cli.render.rank_file import RankDocument, ResultEntry


def score_title(name: str) -> str:
    """'MELEP', 'LogME', 'gain': how the terminal's table heads a score."""
    return report.score_title(name)


def number(value: float | None) -> str:
    """A score in four decimals, '—' for none (as the terminal's table)."""
    return report.format_score(value)


def share(value: float | None) -> str:
    """A probability in two decimals, never rounded to a false certainty ('<0.01', '>0.99')."""
    return "—" if value is None else report._format_share(value)


def percent(value: float | None) -> str:
    """A share of H(y) as a whole percentage ('16%'), '—' for none."""
    return "—" if value is None or not math.isfinite(value) else f"{value:.0%}"


def interval(bounds: tuple[float, float] | None) -> str:
    return "—" if bounds is None else f"{bounds[0]:.4f}–{bounds[1]:.4f}"


def confidence(document: RankDocument) -> str:
    """'95%' (the intervals' level), '' without the bootstrap."""
    return f"{document.confidence:.0%}" if document.confidence is not None else ""


def direction_phrase(document: RankDocument, score: str) -> str:
    return f"{document.direction(score)} is better"


def noise_sentence(document: RankDocument) -> str | None:
    """The sentence under the terminal's rank table (`report.rank_noise_note`), capitalised; None where it has none
    (no bootstrap, fewer than two ranked checkpoints). Ties are the data's `tied_with_best`."""
    sentence = report._noise_sentence(document.noise_view())  # type: ignore[arg-type]
    if sentence is None:
        return None
    return sentence[0].upper() + sentence[1:] + "."


def verdict(document: RankDocument) -> str | None:
    """'ptbxl_superclass_bilstm ranks first by MELEP: 0.4641 (95% interval 0.4482–0.4806), P(best) 0.84.'"""
    ok = document.ok
    if not ok:
        return None
    best = ok[0]
    score = best.scores.get(document.rank_by)
    if score is None:
        return None
    text = f"{best.checkpoint} ranks first by {score_title(document.rank_by)}: {number(score.value)}"
    if score.ci is not None:
        text += f" ({confidence(document)} interval {interval(score.ci)})"
    if score.p_best is not None:
        text += f", P(best) {share(score.p_best)}"
    return text + "."


def delta(entry: ResultEntry, score: str, best: ResultEntry) -> str:
    """The difference from `best` by `score`, with 'tied' when within the noise: '+0.0034 tied'; '—' for the best."""
    value, best_value = entry.scores[score].value, best.scores[score].value
    if entry.stopped_early and entry is not best:
        return "stopped early"  # scored on fewer records than the best: the difference would mislead
    if entry is best or value is None or best_value is None:
        return "—"
    text = f"{value - best_value:+.4f}"
    return text + " tied" if entry.scores[score].tied_with_best else text


def adaptive_phrase(settings: dict) -> str:
    """An adaptive rank's settings and cost in words: '95% confidence that rank 1 is the full-target best, seed 0,
    looks at 128, 256, 300 records; 984 of 1,500 records x checkpoints run'. Unknown keys are listed as they are."""
    known = ("confidence", "seed", "looks", "records_forwarded", "records_full", "records_used", "first_look")
    parts = []
    if isinstance(settings.get("confidence"), (int, float)):
        parts.append(f"{settings['confidence']:.0%} confidence that rank 1 is the full-target best")
    if settings.get("seed") is not None:
        parts.append(f"seed {settings['seed']}")
    looks = settings.get("looks")
    if isinstance(looks, list) and looks:
        parts.append("looks at " + ", ".join(f"{look:,}" for look in looks) + " records")
    text = ", ".join(parts)
    used, full = settings.get("records_used"), settings.get("records_full")
    if isinstance(used, int) and isinstance(full, int) and full:
        text += f"; {used:,} of {full:,} records x checkpoints scored ({used / full:.0%} of a full rank)"
    others = [f"{key} {value}" for key, value in settings.items() if key not in known]
    return "; ".join(part for part in (text, ", ".join(others)) if part)


def uninformed_labels(document: RankDocument) -> list[str]:
    """The target labels of which no ranked checkpoint removes more than UNINFORMED_SHARE of H(y), as `rank` warns."""
    weak = []
    for label in document.labels:
        shares = [entry.removed_share.get(label) for entry in document.ok]
        known = [value for value in shares if value is not None]
        if known and max(known) <= UNINFORMED_SHARE:
            weak.append(label)
    return weak


def uninformed_sentence(document: RankDocument) -> str | None:
    weak = uninformed_labels(document)
    if not weak:
        return None
    return (
        f"No checkpoint removes more than {UNINFORMED_SHARE:.0%} of H(y) of {', '.join(weak)}:"
        " no candidate predicts " + ("this label." if len(weak) == 1 else "these labels.")
    )


def listing(values: list[str]) -> str:
    """'a', 'a and b', 'a, b and c'."""
    if len(values) <= 1:
        return "".join(values)
    return ", ".join(values[:-1]) + f" and {values[-1]}"


def distinct(values: list[str | None]) -> str:
    """The different values, in order of first appearance ('cpu', 'cpu, cuda:0'); '—' for none."""
    seen = list(dict.fromkeys(value for value in values if value))
    return ", ".join(seen) if seen else "—"


def bootstrap_phrase(document: RankDocument) -> str:
    if not document.has_bootstrap:
        return "none (--bootstrap 0): no intervals, P(best) or ties"
    return (
        f"{document.resamples} paired resamples of the records, {confidence(document)} intervals, seed {document.seed}"
    )
