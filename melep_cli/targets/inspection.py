"""`melep inspect TARGET`: what a target holds (records, rates, durations, leads, labels, skips).

`inspect_target` returns a plain dict (JSON-ready); `melep_cli.report` draws it (`target_summary_table`,
`target_labels_table`, `target_skips_table`): this module imports no Rich. Every
label is counted, also those the default selection leaves out (`all_labels`, each marked `selected`); `labels`
holds the ones `melep rank` would use with the same options.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from melep_cli.preprocess import standard_lead
from melep_cli.targets.base import count_noun, every_label, label_shortfall
from melep_cli.targets.opener import TargetOptions, open_target

log = logging.getLogger("melep")


def inspect_target(
    path: str | Path,
    *,
    target_options: TargetOptions | None = None,
    decode: bool = True,
    batch_size: int = 64,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Describe the target at `path`; with decode=True read every record to find rates, lengths and skips.

    `target_options` select records and labels as in `open_target` (labels, min_positives, folds, ...).
    """
    options = target_options if target_options is not None else TargetOptions()
    labels, min_positives = options.labels, options.min_positives
    if labels is None:
        with every_label():  # the counts of every label, also those below the threshold (marked)
            target = open_target(path, options)
    else:
        target = open_target(path, options)
    info = target.describe()
    info["label_selection"] = (
        "the labels asked for"
        if labels is not None
        else f"every label with >= {min_positives} positives and >= 1 negative"
    )
    info["all_labels"] = _mark_selection(info["labels"], len(target), None if labels is not None else min_positives)
    info["labels"] = [
        {key: value for key, value in entry.items() if key not in ("selected", "note")}
        for entry in info["all_labels"]
        if entry["selected"]
    ]
    if not info["labels"]:
        log.warning(
            f"{target.path}: no label has at least {min_positives} positives and one negative among "
            f"{count_noun(len(target), 'record')}; rank needs a lower min_positives, or labels by name"
        )
    info["decoded"] = decode
    if decode:
        rates: Counter[float] = Counter()
        lead_sets: Counter[tuple[str, ...]] = Counter()
        durations: list[float] = []
        read = 0
        for batch in target.batches(batch_size):
            records = batch.signals if isinstance(batch.signals, list) else list(batch.signals)
            rates[batch.sampling_rate] += len(records)
            lead_sets[batch.leads] += len(records)
            durations.extend(record.shape[0] / batch.sampling_rate for record in records)
            read += len(records)
            if progress is not None:
                progress(read + len(target.skipped) - len(target.excluded), len(target))
        seconds = np.asarray(durations)
        info.update(
            records_read=read,
            sampling_rates={f"{rate:g}": count for rate, count in sorted(rates.items())},
            seconds=(
                {
                    "min": float(seconds.min()),
                    "median": float(np.median(seconds)),
                    "max": float(seconds.max()),
                    "common": {f"{value:g}": count for value, count in Counter(np.round(seconds, 3)).most_common(5)},
                }
                if read
                else None
            ),
            leads=[{"leads": list(leads), "records": count} for leads, count in lead_sets.most_common()],
        )
    info["skipped"] = [{"id": record_id, "reason": reason} for record_id, reason in target.skipped]
    info["lead_matching"] = lead_matching(info.get("leads") or [])
    return info


def lead_matching(leads: list[Any]) -> list[dict[str, Any]]:
    """Every lead name of the target (`leads`: names, or {"leads": names} per lead set) with the standard lead it
    matches by name or alias ('DI' -> 'I', 'AVR' -> 'aVR'; `lead_key`), None when it matches none."""
    names: dict[str, None] = {}
    for entry in leads:
        for name in entry["leads"] if isinstance(entry, dict) else [entry]:
            names.setdefault(str(name))
    return [{"lead": name, "standard": standard_lead(name)} for name in names]


def _mark_selection(entries: list[dict[str, Any]], records: int, min_positives: int | None) -> list[dict[str, Any]]:
    """Every label entry with `selected` (what `melep rank` would use) and, when left out, a `note` saying why.

    min_positives None: the labels were asked for by name, all of them are selected.
    """
    marked = []
    for entry in entries:
        note = None if min_positives is None else label_shortfall(entry["positives"], records, min_positives)
        marked.append({**entry, "selected": note is None, **({"note": note} if note else {})})
    return marked
