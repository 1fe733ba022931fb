"""`melep inspect TARGET`: what a target holds (records, rates, durations, leads, labels, skips).

`inspect_target` returns a plain dict (JSON-ready); `target_inspection_tables` renders it with Rich. Every
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
from rich.table import Table
from rich.text import Text

from melep_cli.targets.base import count_noun, every_label, label_shortfall
from melep_cli.targets.opener import open_target

log = logging.getLogger("melep")

#: How many skipped records the table lists.
LISTED_SKIPS = 20


def inspect_target(
    path: str | Path,
    *,
    decode: bool = True,
    batch_size: int = 64,
    progress: Callable[[int, int], None] | None = None,
    **target_options: Any,
) -> dict[str, Any]:
    """Describe the target at `path`; with decode=True read every record to find rates, lengths and skips.

    `target_options` select records and labels as in `open_target` (labels, min_positives, folds, ...).
    """
    labels = target_options.get("labels")
    min_positives = target_options.get("min_positives", 10)
    if labels is None:
        with every_label():  # the counts of every label, also those below the threshold (marked)
            target = open_target(path, **target_options)
    else:
        target = open_target(path, **target_options)
    info = target.describe()
    info["label_selection"] = (
        "--labels" if labels is not None else f"every label with >= {min_positives} positives and >= 1 negative"
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
            f"{count_noun(len(target), 'record')}; `melep rank` needs a lower --min-positives or --labels"
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
    return info


def _mark_selection(entries: list[dict[str, Any]], records: int, min_positives: int | None) -> list[dict[str, Any]]:
    """Every label entry with `selected` (what `melep rank` would use) and, when left out, a `note` saying why.

    min_positives None: the labels were requested (--labels), all of them are selected.
    """
    marked = []
    for entry in entries:
        note = None if min_positives is None else label_shortfall(entry["positives"], records, min_positives)
        marked.append({**entry, "selected": note is None, **({"note": note} if note else {})})
    return marked


def target_inspection_tables(info: dict[str, Any]) -> list[Table]:
    """Rich tables for an `inspect_target` dict: a summary, the labels, and the skipped records."""
    summary = Table(title=f"Target {info['path']}", show_header=False, title_justify="left")
    summary.add_column("what", style="bold")
    summary.add_column("value")
    summary.add_row("format", str(info["format"]))
    summary.add_row("records", f"{info['records']:,}")
    if info.get("decoded"):
        summary.add_row("records read", f"{info.get('records_read', 0):,}")
    summary.add_row("skipped", f"{len(info.get('skipped', [])):,}")
    if info.get("sampling_rates"):
        summary.add_row(
            "sampling rates", ", ".join(f"{rate} Hz ({count:,})" for rate, count in info["sampling_rates"].items())
        )
    elif info.get("header_sampling_rates"):
        summary.add_row("sampling rates", ", ".join(f"{rate:g} Hz" for rate in info["header_sampling_rates"]))
    elif info.get("sampling_rate"):
        summary.add_row("sampling rate", f"{info['sampling_rate']:g} Hz")
    if info.get("seconds"):
        seconds = info["seconds"]
        common = ", ".join(f"{value} s ({count:,})" for value, count in seconds["common"].items())
        summary.add_row(
            "duration",
            f"min {seconds['min']:g} s, median {seconds['median']:g} s, max {seconds['max']:g} s; most common {common}",
        )
    if info.get("leads"):
        leads = info["leads"]
        if isinstance(leads[0], dict):
            summary.add_row("leads", "; ".join(f"{' '.join(entry['leads'])} ({entry['records']:,})" for entry in leads))
        else:
            summary.add_row("leads", " ".join(leads))
    for key, title in (
        ("label_source", "labels from"),
        ("label_level", "PTB-XL labels"),
        ("label_selection", "selection"),
    ):
        if info.get(key):
            summary.add_row(title, str(info[key]))
    if info.get("folds") is not None:
        summary.add_row("folds", ", ".join(str(fold) for fold in info["folds"]))

    entries = info.get("all_labels", info["labels"])
    left_out = [entry for entry in entries if not entry.get("selected", True)]
    title = f"Labels ({len(entries)}" + (f"; {len(entries) - len(left_out)} selected)" if left_out else ")")
    labels = Table(title=title, title_justify="left")
    labels.add_column("label", style="bold")
    labels.add_column("positives", justify="right")
    labels.add_column("prevalence", justify="right")
    with_code = any("snomed_code" in entry for entry in entries)
    with_description = any(entry.get("description") for entry in entries)
    if with_code:
        labels.add_column("SNOMED CT")
    if with_description:
        labels.add_column("description")
    if left_out:
        labels.add_column("selected")
    for entry in entries:
        row = [entry["name"], f"{entry['positives']:,}", f"{entry['prevalence']:.3f}"]
        if with_code:
            row.append(entry.get("snomed_code", ""))
        if with_description:
            row.append(entry.get("description", ""))
        if left_out:
            row.append("yes" if entry.get("selected", True) else f"no: {entry.get('note', '')}")
        labels.add_row(*(Text(value) for value in row), style=None if entry.get("selected", True) else "dim")
    tables = [summary, labels]

    skipped = info.get("skipped", [])
    if skipped:
        listed = Table(
            title=f"Skipped records ({len(skipped):,}"
            + (f", first {LISTED_SKIPS})" if len(skipped) > LISTED_SKIPS else ")"),
            title_justify="left",
        )
        listed.add_column("record")
        listed.add_column("reason")
        for entry in skipped[:LISTED_SKIPS]:
            listed.add_row(entry["id"], entry["reason"])
        tables.append(listed)
    return tables
