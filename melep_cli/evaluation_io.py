"""`melep evaluate`'s files: fine-tuning results (RESULTS.csv) and rank results (RANK.json), then the core.

Every problem with a file is one InputError line naming it ("results.csv: line 4: finetuned 'n/a' is not a
number"); `melep_cli.evaluation` computes, this module reads and logs its warnings.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from melep_cli.errors import InputError, UsageError
from melep_cli.evaluation import (
    DEFAULT_CONFIDENCE,
    DEFAULT_RESAMPLES,
    DEFAULT_SEED,
    Direction,
    Evaluation,
    Ranking,
    evaluate_rankings,
)

log = logging.getLogger("melep")

#: The columns RESULTS.csv must have (others, such as a seed, are ignored).
RESULT_COLUMNS = ("target", "checkpoint", "finetuned")
#: A rank result without a `scores` object has this one score, the `melep` number, lower is better.
LEGACY_SCORE = ("melep", "lower")


def evaluate(
    results: str | Path,
    ranks: Sequence[str | Path],
    *,
    scores: Sequence[str] | None = None,
    lower_is_better: bool = False,
    resamples: int = DEFAULT_RESAMPLES,
    confidence: float = DEFAULT_CONFIDENCE,
    seed: int = DEFAULT_SEED,
) -> Evaluation:
    """Which score of the rank results `ranks` predicted the fine-tuning `results` best (`melep evaluate`).

    `results`: a CSV of fine-tuning runs, columns target, checkpoint, finetuned (see `read_results`);
    `ranks`: `melep rank --format json` files, one per target, matched to the CSV by target name (see
    `read_ranking`). The rest is `melep_cli.evaluation.evaluate_rankings`'s; what one side has and the other
    lacks is logged as warnings (and kept in `Evaluation.missing`). Raises InputError for a file that cannot
    be used, UsageError for options or names that cannot be.
    """
    if isinstance(ranks, str | Path):
        ranks = [ranks]
    if not ranks:
        raise UsageError("give at least one rank result (melep rank --format json)", parameter="ranks")
    runs = read_results(results)
    rankings = [read_ranking(path) for path in ranks]
    evaluation = evaluate_rankings(
        runs,
        rankings,
        scores=scores,
        lower_is_better=lower_is_better,
        resamples=resamples,
        confidence=confidence,
        seed=seed,
        results_source=str(results),
    )
    for message in evaluation.warnings:
        log.warning(message)
    return evaluation


def read_results(path: str | Path) -> dict[str, dict[str, list[float]]]:
    """target -> checkpoint -> the finetuned value of each run, in file order.

    A comma-separated UTF-8 file (a BOM is fine) with a header row naming at least the columns target,
    checkpoint and finetuned (any order and case; other columns are ignored); one row per fine-tuning run.
    """
    path = Path(path)
    text = _read_text(path, "a CSV file")
    try:
        rows = csv.reader(io.StringIO(text, newline=""))
        header = next((row for row in rows if any(cell.strip() for cell in row)), None)
        if header is None:
            raise InputError(f"{path}: empty; expected a header row {','.join(RESULT_COLUMNS)} and one row per run")
        columns = _result_columns(path, header)
        runs: dict[str, dict[str, list[float]]] = {}
        count = 0
        for row in rows:
            if not any(cell.strip() for cell in row):
                continue
            where = f"{path}: line {rows.line_num}"
            if len(row) != len(header):
                raise InputError(f"{where}: {len(row)} fields, the header has {len(header)}")
            target, checkpoint, value = (row[columns[name]].strip() for name in RESULT_COLUMNS)
            for name, cell in (("target", target), ("checkpoint", checkpoint)):
                if not cell:
                    raise InputError(f"{where}: empty {name}")
            runs.setdefault(target, {}).setdefault(checkpoint, []).append(_finite(value, where))
            count += 1
    except csv.Error as error:
        raise InputError(f"{path}: not a readable CSV file ({error})") from None
    if count == 0:
        raise InputError(f"{path}: no runs, only a header row")
    return runs


def _result_columns(path: Path, header: list[str]) -> dict[str, int]:
    names = [cell.strip().lower() for cell in header]
    missing = [name for name in RESULT_COLUMNS if name not in names]
    if missing:
        hint = ""
        if len(header) == 1 and any(separator in header[0] for separator in (";", "\t")):
            hint = "; the file must be comma-separated"
        raise InputError(
            f"{path}: no column {', '.join(missing)} (the header has: {', '.join(h.strip() for h in header)}); "
            f"expected columns {', '.join(RESULT_COLUMNS)}{hint}"
        )
    twice = [name for name in RESULT_COLUMNS if names.count(name) > 1]
    if twice:
        raise InputError(f"{path}: column {', '.join(twice)} appears more than once in the header")
    return {name: names.index(name) for name in RESULT_COLUMNS}


def _finite(value: str, where: str) -> float:
    if not value:
        raise InputError(f"{where}: no finetuned value")
    try:
        number = float(value)
    except ValueError:
        raise InputError(f"{where}: finetuned {value!r} is not a number") from None
    if not math.isfinite(number):
        raise InputError(f"{where}: finetuned {value!r} is not a finite number")
    return number


def read_ranking(path: str | Path) -> Ranking:
    """One `melep rank --format json` result as a Ranking.

    The target's name is `target.name`, or the stem of `target.path` in files without it. Each result's
    scores are its `scores` object ({name: {value, direction, ...}}), or, in files without one, its `melep`
    value (lower is better). Failed results (status error) have none.
    """
    path = Path(path)
    text = _read_text(path, "a JSON file")
    try:
        document = json.loads(text)
    except json.JSONDecodeError as error:
        raise InputError(f"{path}: not JSON (line {error.lineno} column {error.colno}: {error.msg})") from None
    if not isinstance(document, dict) or not isinstance(document.get("results"), list):
        raise InputError(f"{path}: not a rank result (no 'results' list); write one with melep rank --format json")
    target = document.get("target")
    if not isinstance(target, dict):
        raise InputError(f"{path}: not a rank result (no 'target' object); write one with melep rank --format json")
    name = _target_name(path, target)
    scores: dict[str, dict[str, float]] = {}
    directions: dict[str, Direction] = {}
    failed: dict[str, str] = {}
    checkpoints: list[str] = []
    for index, result in enumerate(document["results"]):
        where = f"{path}: results[{index}]"
        if not isinstance(result, dict) or not isinstance(result.get("checkpoint"), str) or not result["checkpoint"]:
            raise InputError(f"{where}: not a rank result entry (no 'checkpoint' name)")
        checkpoint = result["checkpoint"]
        if checkpoint in checkpoints:
            raise InputError(f"{where}: checkpoint {checkpoint!r} is listed twice")
        checkpoints.append(checkpoint)
        status = result.get("status")
        if status == "error":
            failed[checkpoint] = str(result.get("error") or "no error message")
            continue
        if status != "ok":
            raise InputError(f"{where}: status {status!r} (expected ok or error)")
        for score, (value, direction) in _result_scores(result, where).items():
            known = directions.setdefault(score, direction)
            if known != direction:
                raise InputError(f"{where}: score {score!r} is {direction} is better here, {known} before")
            if value is not None:
                scores.setdefault(score, {})[checkpoint] = value
    return Ranking(
        target=name,
        scores=scores,
        directions=directions,
        checkpoints=tuple(checkpoints),
        failed=failed,
        source=str(path),
    )


def _target_name(path: Path, target: dict[str, Any]) -> str:
    name = target.get("name")
    if name is not None:
        if not isinstance(name, str) or not name.strip():
            raise InputError(f"{path}: target.name is not a name ({name!r})")
        return name.strip()
    source = target.get("path")
    if not isinstance(source, str) or not source.strip():
        raise InputError(f"{path}: the target has neither a name nor a path")
    return Path(source.rstrip("/\\")).stem or source


def _result_scores(result: dict[str, Any], where: str) -> dict[str, tuple[float | None, Direction]]:
    """score name -> (value or None, direction) of one ok result."""
    found: dict[str, tuple[float | None, Direction]] = {}
    given = result.get("scores")
    if given is not None:
        if not isinstance(given, dict):
            raise InputError(f"{where}: 'scores' is not an object")
        for name, entry in given.items():
            if not isinstance(entry, dict):
                raise InputError(f"{where}: scores.{name} is not an object")
            direction = entry.get("direction")
            if direction not in ("lower", "higher"):
                raise InputError(f"{where}: scores.{name}.direction is {direction!r} (expected lower or higher)")
            found[name] = (_number(entry.get("value"), f"{where}: scores.{name}.value"), direction)
    legacy, direction = LEGACY_SCORE
    if legacy not in found and "melep" in result:
        found[legacy] = (_number(result["melep"], f"{where}: melep"), direction)
    if not found:
        raise InputError(f"{where}: an ok result without scores (no 'scores' and no 'melep')")
    return found


def _number(value: Any, where: str) -> float | None:
    """A finite number, or None for null / NaN (a score without a value)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InputError(f"{where} is not a number ({value!r})")
    return float(value) if math.isfinite(value) else None


def _read_text(path: Path, kind: str) -> str:
    if path.is_dir():
        raise InputError(f"{path}: is a directory; expected {kind}")
    try:
        return path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except UnicodeDecodeError as error:
        raise InputError(f"{path}: not UTF-8 text (byte {error.start}); expected {kind}") from None
    except OSError as error:
        raise InputError(f"{path}: cannot read ({error.strerror or error})") from None
