"""A `melep rank --format json` document, read and checked once, as the reports draw it.

`read_rank_file(path)` reads a RANK.json (one InputError line naming the file for anything it cannot use);
`RankDocument.from_dict(rank_to_dict(report, pairs=True))` takes a run in memory (`melep rank --report`).
Keys the reports do not need may be missing (older files, `--bootstrap 0`, no `--pairs`); keys that are
there must have the types of docs/formats.md.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from melep_cli.errors import InputError

Interval = tuple[float, float]


@dataclass(frozen=True)
class ScoreEntry:
    """One score of one checkpoint: its value and the bootstrap's verdict (None without the bootstrap)."""

    name: str
    direction: str  # "lower" or "higher" is better
    value: float | None
    ci: Interval | None = None
    p_best: float | None = None
    diff_ci: Interval | None = None
    tied_with_best: bool | None = None
    error: str | None = None


@dataclass(frozen=True)
class ResultEntry:
    """One checkpoint of the ranking: ranked (status ok) or failed (status error, with its message)."""

    rank: int | None
    checkpoint: str
    path: str
    format: str | None
    status: str
    error: str | None = None
    scores: dict[str, ScoreEntry] = field(default_factory=dict)
    removed_share: dict[str, float | None] = field(default_factory=dict)
    source_labels: tuple[str, ...] = ()
    phi: tuple[tuple[float | None, ...], ...] | None = None
    records: int | None = None  # the records it was scored on (fewer than the target's if it stopped early)
    stopped_early: bool | None = None  # adaptive ranking left it out after part of the target
    device: str | None = None
    precision: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"


@dataclass(frozen=True)
class RankDocument:
    """What a report shows of a ranking: the target, how it ran, every checkpoint's scores and errors."""

    source: str  # where it was read from (a RANK.json), for messages
    target_path: str
    target_name: str
    target_format: str | None
    records: int
    labels: tuple[str, ...]
    prevalence: tuple[float, ...]
    no_information: tuple[float | None, ...]
    skipped: tuple[tuple[str, str], ...]
    excluded_labels: tuple[tuple[str, str], ...]
    weighting: str | None
    scores: tuple[str, ...]
    rank_by: str
    resamples: int | None  # None: no bootstrap
    confidence: float | None
    seed: int | None
    results: tuple[ResultEntry, ...]
    melep_version: str | None = None
    created: str | None = None
    command: str | None = None
    adaptive: dict[str, Any] | None = None  # the adaptive ranking's settings, where it ran

    @property
    def ok(self) -> list[ResultEntry]:
        """The ranked checkpoints, best first."""
        return sorted((entry for entry in self.results if entry.ok), key=lambda entry: entry.rank or 0)

    @property
    def failed(self) -> list[ResultEntry]:
        return [entry for entry in self.results if not entry.ok]

    @property
    def has_bootstrap(self) -> bool:
        return self.resamples is not None

    @property
    def has_phi(self) -> bool:
        """Whether the ranked checkpoints' phi matrices are here (`melep rank --pairs`, or `--report`)."""
        ok = self.ok
        return bool(ok) and all(entry.phi is not None for entry in ok)

    @property
    def tied_ranks(self) -> list[int]:
        """The ranks the bootstrap cannot tell apart from rank 1 (its own included), from `tied_with_best`."""
        return [
            entry.rank
            for entry in self.ok
            if entry.rank is not None and (score := entry.scores.get(self.rank_by)) and score.tied_with_best
        ]

    def direction(self, score: str) -> str:
        """'lower' or 'higher' (is better) for `score`, from the results that have it."""
        for entry in self.results:
            if score in entry.scores:
                return entry.scores[score].direction
        return "lower"

    def ordered_by(self, score: str) -> list[ResultEntry]:
        """The ranked checkpoints with a value of `score`, best first by it (ties kept in rank order)."""
        have = [entry for entry in self.ok if (s := entry.scores.get(score)) is not None and s.value is not None]
        sign = 1.0 if self.direction(score) == "lower" else -1.0
        return sorted(have, key=lambda entry: sign * entry.scores[score].value)  # type: ignore[operator]

    def noise_view(self) -> Any:
        """The few attributes of a RankReport that `report._noise_sentence` reads, so that the sentence under the
        ranking is worded once, in `melep_cli.report`, for the terminal and for these reports alike."""
        ok = [
            SimpleNamespace(uncertainty=SimpleNamespace(p_best=entry.scores[self.rank_by].p_best))
            for entry in self.ok
            if self.rank_by in entry.scores
        ]
        bootstrap = SimpleNamespace(confidence=self.confidence) if self.has_bootstrap else None
        return SimpleNamespace(
            bootstrap=bootstrap,
            ok=ok,
            target=SimpleNamespace(records=self.records),
            tied_ranks=self.tied_ranks,
        )

    @classmethod
    def from_rank(cls, report: Any, *, command: str | None = None) -> RankDocument:
        """A `RankReport` (`melep_cli.rank`) as its JSON document holds it, with the phi matrices: so a report
        of a run in memory is the report of its `--format json --pairs` file."""
        from melep_cli.report import rank_to_dict

        return cls.from_dict(rank_to_dict(report, pairs=True, command=command))

    @classmethod
    def from_dict(cls, document: Any, source: str = "the ranking") -> RankDocument:
        """Check `document` (a parsed rank JSON) and take what the reports need; InputError names `source`."""
        return _Reader(source).document(document)


def read_rank_file(path: str | Path) -> RankDocument:
    """A `melep rank --format json` file as a RankDocument; InputError `FILE: problem` for a file it cannot use."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{path}: is a directory; expected a rank result (melep rank --format json)")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except UnicodeDecodeError as error:
        raise InputError(f"{path}: not UTF-8 text (byte {error.start}); expected a rank result JSON") from None
    except OSError as error:
        raise InputError(f"{path}: cannot read ({error.strerror or error})") from None
    try:
        document = json.loads(text)
    except json.JSONDecodeError as error:
        raise InputError(f"{path}: not JSON (line {error.lineno} column {error.colno}: {error.msg})") from None
    except RecursionError:
        raise InputError(f"{path}: not a rank result (nested too deeply)") from None
    return RankDocument.from_dict(document, source=str(path))


_HINT = "write one with melep rank --format json"


class _Reader:
    """Typed reads of a rank document; the first wrong key is an InputError naming the file and the key."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, where: str, problem: str) -> InputError:
        return InputError(f"{self.source}: not a rank result ({where} {problem}); {_HINT}")

    def document(self, document: Any) -> RankDocument:
        if not isinstance(document, dict):
            raise self.fail("the file", f"holds a {type(document).__name__}, not an object")
        if not isinstance(document.get("results"), list):
            raise self.fail("the file", "has no 'results' list")
        target = document.get("target")
        if not isinstance(target, dict):
            raise self.fail("the file", "has no 'target' object")
        labels = tuple(self.strings(target.get("labels", []), "target.labels"))
        prevalence = tuple(self.numbers(target.get("prevalence", []), "target.prevalence", len(labels)))
        no_information = tuple(
            self.numbers(target.get("no_information", [None] * len(labels)), "target.no_information", len(labels))
        )
        path = self.text(target.get("path"), "target.path") or ""
        name = self.text(target.get("name"), "target.name") or Path(path.rstrip("/\\")).stem or path
        bootstrap = document.get("bootstrap")
        if bootstrap is not None and not isinstance(bootstrap, dict):
            raise self.fail("bootstrap", "is not an object")
        rank_by = self.text(document.get("rank_by"), "rank_by") or "melep"
        scores = tuple(self.strings(document.get("scores", [rank_by]), "scores")) or (rank_by,)
        results = tuple(self.result(entry, f"results[{index}]") for index, entry in enumerate(document["results"]))
        return RankDocument(
            source=self.source,
            target_path=path,
            target_name=name,
            target_format=self.text(target.get("format"), "target.format"),
            records=self.integer(target.get("records", 0), "target.records"),
            labels=labels,
            prevalence=tuple(p if p is not None else math.nan for p in prevalence),
            no_information=no_information,
            skipped=self.pairs(target.get("skipped", []), "target.skipped", ("record", "reason")),
            excluded_labels=self.pairs(
                target.get("excluded_labels", []), "target.excluded_labels", ("label", "reason")
            ),
            weighting=self.text(document.get("weighting"), "weighting"),
            scores=scores,
            rank_by=rank_by,
            resamples=self.integer(bootstrap.get("resamples"), "bootstrap.resamples") if bootstrap else None,
            confidence=self.number(bootstrap.get("confidence"), "bootstrap.confidence") if bootstrap else None,
            seed=self.integer(bootstrap.get("seed"), "bootstrap.seed") if bootstrap else None,
            results=results,
            melep_version=self.text(document.get("melep_version"), "melep_version"),
            created=self.text(document.get("created"), "created"),
            command=self.text(document.get("command"), "command"),
            adaptive=self.settings(document.get("adaptive"), "adaptive"),
        )

    def result(self, entry: Any, where: str) -> ResultEntry:
        if not isinstance(entry, dict):
            raise self.fail(where, "is not an object")
        name = entry.get("checkpoint")
        if not isinstance(name, str) or not name:
            raise self.fail(where, "has no 'checkpoint' name")
        status = entry.get("status")
        if status not in ("ok", "error"):
            raise self.fail(f"{where}.status", f"is {status!r} (expected ok or error)")
        rank = entry.get("rank")
        if status == "ok" and (isinstance(rank, bool) or not isinstance(rank, int)):
            raise self.fail(f"{where}.rank", f"is {rank!r} (a ranked checkpoint has a number)")
        scores = self.scores(entry, where) if status == "ok" else {}
        phi = entry.get("phi")
        source_labels = tuple(self.strings(entry.get("source_labels", []), f"{where}.source_labels"))
        if phi is not None:
            if not isinstance(phi, list):
                raise self.fail(f"{where}.phi", "is not a list of rows")
            phi = tuple(
                tuple(self.numbers(row, f"{where}.phi[{row_index}]", len(source_labels)))
                for row_index, row in enumerate(phi)
            )
        removed = entry.get("removed_share", {})
        if not isinstance(removed, dict):
            raise self.fail(f"{where}.removed_share", "is not an object")
        return ResultEntry(
            rank=rank if status == "ok" else None,
            checkpoint=name,
            path=self.text(entry.get("path"), f"{where}.path") or "",
            format=self.text(entry.get("format"), f"{where}.format"),
            status=status,
            error=str(entry.get("error") or "no error message") if status == "error" else None,
            scores=scores,
            removed_share={str(k): self.number(v, f"{where}.removed_share.{k}") for k, v in removed.items()},
            source_labels=source_labels,
            phi=phi,
            records=self.integer(entry.get("records"), f"{where}.records"),
            stopped_early=self.boolean(entry.get("stopped_early"), f"{where}.stopped_early"),
            device=self.text(entry.get("device"), f"{where}.device"),
            precision=self.text(entry.get("precision"), f"{where}.precision"),
        )

    def scores(self, entry: dict[str, Any], where: str) -> dict[str, ScoreEntry]:
        """The `scores` object; in files without it, MELEP from the top-level keys."""
        given = entry.get("scores")
        if given is None:
            given = {
                "melep": {"value": entry.get("melep"), "direction": "lower", **{k: entry.get(k) for k in _VERDICT}}
            }
        if not isinstance(given, dict):
            raise self.fail(f"{where}.scores", "is not an object")
        scores = {}
        for name, score in given.items():
            at = f"{where}.scores.{name}"
            if not isinstance(score, dict):
                raise self.fail(at, "is not an object")
            direction = score.get("direction")
            if direction not in ("lower", "higher"):
                raise self.fail(f"{at}.direction", f"is {direction!r} (expected lower or higher)")
            tied = score.get("tied_with_best")
            if tied is not None and not isinstance(tied, bool):
                raise self.fail(f"{at}.tied_with_best", f"is {tied!r} (expected true, false or null)")
            scores[str(name)] = ScoreEntry(
                name=str(name),
                direction=direction,
                value=self.number(score.get("value"), f"{at}.value"),
                ci=self.interval(score.get("ci"), f"{at}.ci"),
                p_best=self.number(score.get("p_best"), f"{at}.p_best"),
                diff_ci=self.interval(score.get("diff_ci"), f"{at}.diff_ci"),
                tied_with_best=tied,
                error=str(score["error"]) if score.get("error") is not None else None,
            )
        return scores

    # the types ------------------------------------------------------------------------------------

    def number(self, value: Any, where: str) -> float | None:
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.fail(where, f"is {value!r}, not a number")
        return float(value) if math.isfinite(value) else None

    def integer(self, value: Any, where: str) -> int | None:
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(where, f"is {value!r}, not a whole number")
        return value

    def boolean(self, value: Any, where: str) -> bool | None:
        if value is not None and not isinstance(value, bool):
            raise self.fail(where, f"is {value!r}, not true or false")
        return value

    def settings(self, value: Any, where: str) -> dict[str, Any] | None:
        """An object of settings (shown as given), None for none or false; true is an object without settings."""
        if value is None or value is False:
            return None
        if value is True:
            return {}
        if not isinstance(value, dict):
            raise self.fail(where, f"is {value!r}, not an object")
        return value

    def text(self, value: Any, where: str) -> str | None:
        if value is None:
            return None
        if not isinstance(value, str):
            raise self.fail(where, f"is {value!r}, not a string")
        return value

    def strings(self, value: Any, where: str) -> list[str]:
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            raise self.fail(where, "is not a list of strings")
        return value

    def numbers(self, value: Any, where: str, length: int) -> list[float | None]:
        if not isinstance(value, list) or len(value) != length:
            raise self.fail(where, f"is not a list of {length} numbers")
        return [self.number(item, f"{where}[{index}]") for index, item in enumerate(value)]

    def interval(self, value: Any, where: str) -> Interval | None:
        if value is None:
            return None
        if not isinstance(value, list) or len(value) != 2:
            raise self.fail(where, "is not a [low, high] pair")
        low, high = (self.number(item, where) for item in value)
        return None if low is None or high is None else (low, high)

    def pairs(self, value: Any, where: str, keys: Sequence[str]) -> tuple[tuple[str, str], ...]:
        if not isinstance(value, list):
            raise self.fail(where, "is not a list")
        found = []
        for index, item in enumerate(value):
            if not isinstance(item, Mapping):
                raise self.fail(f"{where}[{index}]", "is not an object")
            found.append(tuple(str(item.get(key, "")) for key in keys))
        return tuple(found)  # type: ignore[arg-type]


#: The bootstrap's keys of a result, at its top level (those of the score ranked by) and in each score.
_VERDICT = ("ci", "p_best", "diff_ci", "tied_with_best")
