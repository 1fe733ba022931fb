"""Adaptive ranking's orchestration: the forward stage look after look, the decision rule between looks.

`Race.run` feeds the records in the seeded order (`melep_cli.adaptive.seeded_order`) to the checkpoints still
in the race, one look at a time, through the forward stage's unit of work (`ForwardSession.run`: the models stay
loaded, each record is decoded once per look for every checkpoint still running); between looks it scores the
score ranked by on the records seen and asks `melep_cli.adaptive.decide` whom to drop. `Race.apply` then
orders the ranking and attaches what each checkpoint's stop was.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from melep_cli.adaptive import (
    RECORDS_EXHAUSTED,
    WINNER,
    WORSE_THAN_LEADER,
    AdaptiveSettings,
    AdaptiveSummary,
    CheckpointStop,
    decide,
    look_sizes,
    seeded_order,
)
from melep_cli.bootstrap import BootstrapSettings, Estimate, Uncertainty, paired_bootstrap
from melep_cli.errors import MelepError
from melep_cli.forward_pass import ForwardReport, ForwardResult, ForwardSession, ProgressCallback, restricted
from melep_cli.scores import Score
from melep_cli.targets import Target

if TYPE_CHECKING:
    from melep_cli.ranking import CheckpointOutcome


class Race:
    """One adaptive rank of `score` on `target` (see `melep_cli.adaptive` for the rule)."""

    def __init__(self, target: Target, settings: AdaptiveSettings, score: Score, bootstrap: BootstrapSettings) -> None:
        self.target = target
        self.settings = settings
        self.score = score
        self.bootstrap = bootstrap
        self.lower_is_better = score.direction == "lower"
        self.stops: dict[str, CheckpointStop] = {}  # checkpoint name -> its stop
        self.verdicts: dict[str, Uncertainty] = {}  # checkpoint name -> the bootstrap at its last look
        self.seen: dict[str, list[str]] = {}  # checkpoint name -> the records its scores use
        self.looks: list[int] = []
        self._row_of = {record: row for row, record in enumerate(target.record_ids)}

    def run(self, session: ForwardSession, progress: ProgressCallback | None = None) -> ForwardReport:
        """The race over `session`'s checkpoints; returns the forward report with each result restricted to
        the records it saw (its stored entry keeps all it has)."""
        target, settings = self.target, self.settings
        with contextlib.closing(session):
            order = seeded_order(target.storage_blocks(), settings.seed)
            sizes = look_sizes(len(order), settings.first_look)
            ids = target.record_ids
            active = [index for index, result in enumerate(session.results) if result.status == "ok"]
            done = 0
            for look, size in enumerate(sizes):
                last = look == len(sizes) - 1

                def shifted(records: int, _total: int, base: int = done) -> None:
                    if progress is not None:
                        progress(base + records, len(order))

                session.run(active, positions=order[done:size], progress=shifted)
                done = size
                self.looks.append(size)
                skipped = {record for record, _ in session.skipped}
                seen = [ids[position] for position in order[:size] if ids[position] not in skipped]
                active = [index for index in active if session.results[index].status == "ok"]
                if self._look(session, active, seen, look, last):
                    break
                active = [index for index in active if session.results[index].name not in self.stops]
            report = session.report()
        report.results = [
            restricted(result, self.seen[result.name]) if result.name in self.seen else result
            for result in report.results
        ]
        return report

    def _look(self, session: ForwardSession, active: Sequence[int], seen: list[str], look: int, last: bool) -> bool:
        """Score the checkpoints in the race on `seen`, decide, record the stops; True when the race is over."""
        names, estimates = [], []
        for index in active:
            estimate = self._estimate(session.so_far(index, seen))
            if estimate is not None:  # a score that fails here is reported by the ranking itself
                names.append(session.results[index].name)
                estimates.append(estimate)
        if not estimates:
            return last
        decision = decide(
            estimates, look=look, alpha=self.settings.alpha, lower_is_better=self.lower_is_better, last=last
        )
        verdicts = (
            paired_bootstrap(estimates, lower_is_better=self.lower_is_better, settings=self.bootstrap)
            if self.bootstrap.enabled
            else None
        )
        for k, name in enumerate(names):
            self.seen[name] = seen
            if verdicts is not None:
                self.verdicts[name] = verdicts[k]
        leader = names[decision.leader]
        for k in decision.dropped:
            self.stops[names[k]] = CheckpointStop(
                WORSE_THAN_LEADER, look, len(seen), leader, decision.p_not_worse[k], decision.threshold
            )
        if not decision.finished:
            return False
        left = [k for k in range(len(names)) if k not in decision.dropped]
        reason = WINNER if len(left) == 1 else RECORDS_EXHAUSTED
        closest = max((decision.p_not_worse[k] for k in decision.dropped), default=None)
        for k in left:
            self.stops[names[k]] = CheckpointStop(
                reason,
                look,
                len(seen),
                leader,
                closest if reason == WINNER else decision.p_not_worse[k],
                decision.threshold,
            )
        return True

    def _estimate(self, result: ForwardResult) -> Estimate | None:
        if result.status != "ok" or result.outputs is None or not len(result.record_ids):
            return None
        rows = np.fromiter((self._row_of[record] for record in result.record_ids), np.int64, len(result.record_ids))
        try:
            value = self.score.compute(
                result.model_outputs(), self.target.labels[rows], self.target.label_names, influence=True
            )
        except MelepError:
            return None
        if value.influence is None:
            return None
        return Estimate(value.value, value.influence, value.per_label, value.per_label_influence)

    def apply(self, results: Sequence[ForwardResult], outcomes: list[CheckpointOutcome], records: int) -> None:
        """Attach each checkpoint's stop and its bootstrap at its last look, and order the ranking: those that
        ran to the end (or won) best first, then the dropped ones, the later dropped first."""
        for outcome in outcomes:
            outcome.stop = self.stops.get(outcome.name)
            if outcome.status == "ok":
                outcome.stopped_early = outcome.records is not None and outcome.records < records
                verdict = self.verdicts.get(outcome.name)
                ranked = outcome.scores.get(self.score.name)
                if ranked is not None and verdict is not None:
                    ranked.uncertainty = verdict
        sign = 1.0 if self.lower_is_better else -1.0

        def key(outcome: CheckpointOutcome) -> tuple:
            stop = outcome.stop
            dropped = stop is not None and stop.reason == WORSE_THAN_LEADER
            look = -stop.look if dropped and stop is not None else -len(self.looks)
            value = outcome.value
            return (outcome.status != "ok", dropped, look, sign * value if value is not None else 0.0, outcome.name)

        outcomes.sort(key=key)
        for position, outcome in enumerate(outcomes, start=1):
            outcome.rank = position if outcome.status == "ok" else None

    def summary(self, stage1: ForwardReport, outcomes: Sequence[CheckpointOutcome], records: int) -> AdaptiveSummary:
        ranked = [outcome for outcome in outcomes if outcome.status == "ok"]
        return AdaptiveSummary(
            settings=self.settings,
            looks=tuple(self.looks),
            records_forwarded=stage1.records_forwarded,
            records_full=len(ranked) * records,
            records_used=sum(outcome.records or 0 for outcome in ranked),
        )
