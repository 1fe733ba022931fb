"""`melep rank --adaptive`: the decision rule (pure), the race through the forward stage, partial store entries,
determinism, and the winner's agreement with a full rank on real PTB-XL records."""

from __future__ import annotations

import itertools
import json
import math
import zipfile
from pathlib import Path

import numpy as np
import pytest

import melep_cli
from melep_cli.adaptive import (
    AdaptiveSettings,
    decide,
    look_alpha,
    look_sizes,
    p_not_worse,
    seeded_order,
)
from melep_cli.bootstrap import BootstrapSettings, Estimate, paired_bootstrap
from melep_cli.cli.app import app
from melep_cli.errors import UsageError
from melep_cli.scores import MelepScore, ModelOutputs

SAMPLE = Path(__file__).resolve().parents[1] / "sample_data"
CHECKPOINTS = SAMPLE / "checkpoints"
TARGET = SAMPLE / "ptbxl_target.h5"
PTBXL = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "ptbxl"
#: Keys of the JSON that say how long, when or from where, not what was decided.
UNSTABLE = {"seconds", "created", "entry", "cached", "cache", "records_forwarded", "forward_passes", "command"}


def _stable(document):
    if isinstance(document, dict):
        return {key: _stable(value) for key, value in document.items() if key not in UNSTABLE}
    if isinstance(document, list):
        return [_stable(value) for value in document]
    return document


def perturbed_copy(source: Path, destination: Path, scale: float, seed: int) -> Path:
    """A TorchScript checkpoint with every weight moved by `scale` times its tensor's spread (same metadata): a
    checkpoint close to `source`."""
    import torch

    with zipfile.ZipFile(source) as archive:
        names = [entry.split("/")[2] for entry in archive.namelist() if entry.count("/") == 2 and "/extra/" in entry]
    extra = dict.fromkeys(names, "")
    module = torch.jit.load(str(source), map_location="cpu", _extra_files=extra)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in module.parameters():
            spread = parameter.std() if parameter.numel() > 1 else parameter.abs()
            parameter.add_(torch.randn(parameter.shape, generator=generator) * spread * scale)
    torch.jit.save(module, str(destination), _extra_files=extra)
    return destination


# -- the rule ---------------------------------------------------------------------------------------------------


def test_looks_double_and_end_with_the_target():
    assert look_sizes(300) == [128, 256, 300]
    assert look_sizes(128) == [128]
    assert look_sizes(100) == [100]
    assert look_sizes(2992) == [128, 256, 512, 1024, 2048, 2992]
    assert look_sizes(1000, first=100) == [100, 200, 400, 800, 1000]
    assert look_sizes(0) == []


def test_the_looks_never_spend_more_than_the_budget():
    for alpha in (0.05, 0.01, 0.2):
        spent = [look_alpha(alpha, k) for k in range(60)]
        assert spent[0] == alpha / 2 and all(a > b for a, b in itertools.pairwise(spent))
        assert sum(spent[:20]) < alpha and sum(spent) <= alpha


def test_settings_refuse_nonsense_naming_the_parameter():
    for kwargs, parameter in (
        ({"confidence": 1.0}, "confidence"),
        ({"seed": -1}, "seed"),
        ({"first_look": 1}, "first_look"),
    ):
        with pytest.raises(UsageError) as caught:
            AdaptiveSettings(**kwargs)
        assert caught.value.parameter == parameter


def test_the_seeded_order_shuffles_whole_blocks_and_repeats_with_the_seed():
    blocks = [np.arange(start, min(start + 16, 300)) for start in range(0, 300, 16)]
    order = seeded_order(blocks, 7)
    assert sorted(order.tolist()) == list(range(300))
    np.testing.assert_array_equal(order, seeded_order(blocks, 7))
    assert not np.array_equal(order, seeded_order(blocks, 8))
    # each block's records are consecutive in the order (a chunk is read once)
    block_of = np.concatenate([np.full(len(block), index) for index, block in enumerate(blocks)])
    assert np.count_nonzero(np.diff(block_of[order])) == len(blocks) - 1


@pytest.fixture(scope="module")
def sample_estimates():
    """MELEP and influences of the five sample checkpoints on the sample target (real outputs)."""
    target = melep_cli.open_target(TARGET)
    report = melep_cli.forward([CHECKPOINTS], target, cache=None)
    estimates = {}
    for result in report.results:
        value = MelepScore().compute(result.model_outputs(), target.labels, target.label_names, influence=True)
        estimates[result.name] = Estimate(value.value, value.influence)
    return estimates


def test_the_one_sided_mass_is_the_paired_bootstraps(sample_estimates):
    """Phi(-gap/se) against the share of 20,000 paired bootstrap resamples in which the candidate is not worse."""
    leader = sample_estimates["ptbxl_superclass_bilstm"]
    for name in ("ptbxl_superclass_resnet1d", "ptbxl_form_resnet1d"):
        candidate = sample_estimates[name]
        settings = BootstrapSettings(resamples=20_000, seed=1)
        # the paired bootstrap of the difference: one estimate whose influence is the difference's
        difference = Estimate(candidate.value - leader.value, candidate.influence - leader.influence)
        zero = Estimate(0.0, np.zeros_like(leader.influence))
        verdicts = paired_bootstrap([zero, difference], settings=settings)
        share = verdicts[1].p_best + 0.0  # resamples where the difference is below 0: not worse
        assert abs(p_not_worse(candidate, leader, lower_is_better=True) - share) < 0.01, name


def test_a_clearly_worse_checkpoint_is_dropped_and_a_copy_never_is(sample_estimates):
    best = sample_estimates["ptbxl_superclass_bilstm"]
    worse = sample_estimates["ptbxl_rhythm_bilstm"]
    decision = decide([worse, best, best], look=0, alpha=0.05)
    assert decision.leader == 1 and decision.dropped == (0,)  # the copy (2) is tied: kept
    assert decision.p_not_worse[2] == 1.0 and not decision.finished
    assert math.isclose(decision.threshold, 0.025 / 2)
    alone = decide([worse, best], look=0, alpha=0.05)
    assert alone.finished and alone.dropped == (0,)
    # higher is better: the same scores negated give the same decision
    flipped = [Estimate(-e.value, -e.influence) for e in (worse, best, best)]
    assert decide(flipped, look=0, alpha=0.05, lower_is_better=False).dropped == (0,)
    # the last look always finishes
    assert decide([best, best], look=3, alpha=0.05, last=True).finished


# -- the race through the forward stage -------------------------------------------------------------------------


def _run(arguments, capsys=None):
    from typer.testing import CliRunner

    result = CliRunner().invoke(app, arguments)
    return result


def test_the_quick_start_says_how_many_records_each_checkpoint_used_and_why_it_stopped():
    result = _run(["rank", "-c", str(CHECKPOINTS), "-t", str(TARGET), "--adaptive", "--no-cache"])
    assert result.exit_code == 0, result.output
    text = result.stdout
    assert "adaptive (95% confidence" in text and "stopped early" in text
    for name in ("ptbxl_form_resnet1d", "ptbxl_rhythm_bilstm", "cinc2021_snomed_bilstm"):
        line = next(
            line
            for line in text.splitlines()
            if line.strip().startswith(tuple("12345")) and name in line and "records" in line
        )
        assert "128 records, dropped at 128 records: worse than ptbxl_superclass_bilstm" in line
    assert "0.5041*" in text  # the stopped checkpoints' scores are marked


def test_json_and_csv_say_records_stops_and_the_cost():
    result = _run(["rank", "-c", str(CHECKPOINTS), "-t", str(TARGET), "--adaptive", "--no-cache", "-f", "json"])
    document = json.loads(result.stdout)
    adaptive = document["adaptive"]
    assert adaptive["looks"] == [128, 256, 300] and adaptive["confidence"] == 0.95 and adaptive["seed"] == 0
    assert adaptive["records_full"] == 5 * 300
    assert adaptive["records_forwarded"] == adaptive["records_used"] == sum(r["records"] for r in document["results"])
    assert adaptive["records_forwarded"] < adaptive["records_full"]
    for entry in document["results"]:
        assert entry["stopped_early"] == (entry["records"] < 300)
        assert entry["stop_reason"] in ("worse_than_leader", "winner", "records_exhausted")
        assert entry["ci"][0] <= entry["melep"] <= entry["ci"][1]
        if entry["stop_reason"] == "worse_than_leader":
            assert entry["stop"]["p_not_worse"] < entry["stop"]["threshold"]
    assert document["results"][0]["stop_reason"] != "worse_than_leader"
    csv_text = _run(["rank", "-c", str(CHECKPOINTS), "-t", str(TARGET), "--adaptive", "--no-cache", "-f", "csv"]).stdout
    header, *rows = [line.split(",") for line in csv_text.splitlines()]
    assert header[-3:] == ["stopped_early", "stop_reason", "stop_look"]
    assert {row[-2] for row in rows} <= {"worse_than_leader", "winner", "records_exhausted"}
    full = _run(["rank", "-c", str(CHECKPOINTS), "-t", str(TARGET), "--no-cache", "-f", "json"]).stdout
    assert json.loads(full)["adaptive"] is None and "stop_reason" not in json.loads(full)["results"][0]


def test_the_same_seed_gives_the_same_records_decisions_and_json():
    runs = [
        _run(
            ["rank", "-c", str(CHECKPOINTS), "-t", str(TARGET), "--adaptive", "--no-cache", "-f", "json", "--seed", "3"]
        )
        for _ in range(3)
    ]
    documents = [_stable(json.loads(run.stdout)) for run in runs]
    assert documents[0] == documents[1] == documents[2]
    other = _stable(
        json.loads(
            _run(
                [
                    "rank",
                    "-c",
                    str(CHECKPOINTS),
                    "-t",
                    str(TARGET),
                    "--adaptive",
                    "--no-cache",
                    "-f",
                    "json",
                    "--seed",
                    "4",
                ]
            ).stdout
        )
    )
    assert other["adaptive"]["seed"] == 4


def test_a_full_rank_completes_the_partial_entries_and_an_adaptive_one_reuses_them(tmp_path):
    store = tmp_path / "store"
    target = melep_cli.open_target(TARGET)
    settings = AdaptiveSettings(seed=5)
    first = melep_cli.rank([CHECKPOINTS], target, cache=store, adaptive=settings)
    used = {outcome.name: outcome.records for outcome in first.outcomes}
    assert first.adaptive.records_forwarded == first.adaptive.records_used == sum(used.values())
    # the same adaptive rank again: every record it needs is stored; same decisions
    again = melep_cli.rank([CHECKPOINTS], target, cache=store, adaptive=settings)
    assert again.adaptive.records_forwarded == 0 and again.forward_passes == 0
    assert [(o.name, o.records, o.value, o.stop) for o in again.outcomes] == [
        (o.name, o.records, o.value, o.stop) for o in first.outcomes
    ]
    # a full rank runs only the records missing from the partial entries, and scores as a rank without a store
    full = melep_cli.forward([CHECKPOINTS], target, cache=store)
    assert full.records_forwarded == sum(300 - count for count in used.values())
    assert {result.name: result.forwarded for result in full.results} == {name: 300 - n for name, n in used.items()}
    fresh = melep_cli.rank([CHECKPOINTS], target, cache=None)
    completed = melep_cli.rank([CHECKPOINTS], target, cache=store)
    assert completed.forward_passes == 0
    for a, b in zip(completed.outcomes, fresh.outcomes):
        assert a.name == b.name and a.records == b.records == 300
        assert math.isclose(a.value, b.value, rel_tol=1e-6)
    # and an adaptive rank with another seed reuses the now complete entries: no forward pass
    other = melep_cli.rank([CHECKPOINTS], target, cache=store, adaptive=AdaptiveSettings(seed=6))
    assert other.adaptive.records_forwarded == 0


def test_a_broken_checkpoint_does_not_stop_the_race(tmp_path):
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    for path in CHECKPOINTS.iterdir():
        (folder / path.name).write_bytes(path.read_bytes())
    (folder / "broken.onnx").write_bytes(b"not a model")
    report = melep_cli.rank([folder], TARGET, cache=None, adaptive=AdaptiveSettings())
    assert [outcome.name for outcome in report.failed] == ["broken"]
    assert len(report.ok) == 5 and report.ok[0].stop is not None
    assert report.adaptive.records_full == 5 * 300


def test_a_score_other_than_melep_ranks_and_every_score_is_on_the_records_seen():
    target = melep_cli.open_target(TARGET)
    settings = AdaptiveSettings(seed=2)
    report = melep_cli.rank(
        [CHECKPOINTS], target, cache=None, scores=["melep", "logme"], rank_by="logme", adaptive=settings
    )
    assert report.rank_by == "logme" and report.adaptive is not None
    dropped = [outcome for outcome in report.ok if outcome.stop.reason == "worse_than_leader"]
    assert dropped and all(outcome.stop.leader == report.ok[0].name for outcome in dropped)
    # every score of a checkpoint is its score on the first `records` records of the seeded order
    outputs = {result.name: result for result in melep_cli.forward([CHECKPOINTS], target, cache=None).results}
    order = seeded_order(target.storage_blocks(), settings.seed)
    row_of = {record: row for row, record in enumerate(outputs[report.ok[0].name].record_ids)}
    for outcome in report.ok:
        rows = np.sort(order[: outcome.records])
        result = outputs[outcome.name]
        picked = [row_of[target.record_ids[position]] for position in rows]
        alone = MelepScore().compute(
            ModelOutputs(result.outputs[picked], result.activation), target.labels[rows], target.label_names
        )
        assert math.isclose(outcome.scores["melep"].value.value, alone.value, rel_tol=1e-9), outcome.name


# -- agreement on real data -------------------------------------------------------------------------------------


@pytest.mark.skipif(not (PTBXL / "records100").is_dir(), reason="needs ../shared/data/ptbxl")
def test_the_adaptive_winner_is_the_full_pass_winner_over_many_seeds(tmp_path):
    """The 2,992 PTB-XL records, the five sample checkpoints and two close copies of the best one (weights moved
    by 2% and 5% of their spread): over 30 seeds the adaptive top-1 equals the full-pass top-1 in at least 95% of
    runs; where it differs, the pick's full-pass score lies in the interval shown; with the five sample checkpoints
    alone a run uses at most half of a full rank's records. The outputs are computed once (the store), the races
    read them from it."""
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    for path in CHECKPOINTS.iterdir():
        (folder / path.name).write_bytes(path.read_bytes())
    best = CHECKPOINTS / "ptbxl_superclass_bilstm.ts"
    perturbed_copy(best, folder / "close_a.ts", 0.02, seed=1)
    perturbed_copy(best, folder / "close_b.ts", 0.05, seed=2)
    store = tmp_path / "store"
    target = melep_cli.open_target(PTBXL)
    full = melep_cli.rank([folder], target, cache=store)
    full_scores = {outcome.name: outcome.value for outcome in full.ok}
    winner = full.ok[0].name
    seeds = 30
    agree = 0
    for seed in range(seeds):
        report = melep_cli.rank(
            [folder],
            target,
            cache=store,
            adaptive=AdaptiveSettings(seed=seed),
            bootstrap=BootstrapSettings(200, seed=seed),
        )
        assert report.adaptive.records_forwarded == 0  # read from the store
        pick = report.ok[0]
        if pick.name == winner:
            agree += 1
        else:
            low, high = pick.uncertainty.ci
            assert low <= full_scores[pick.name] <= high
    assert agree / seeds >= 0.95
    # the five sample checkpoints alone (their outputs are in the store too): at most half of a full rank's records
    for seed in range(5):
        report = melep_cli.rank([CHECKPOINTS], target, cache=store, adaptive=AdaptiveSettings(seed=seed))
        assert report.adaptive.records_used <= report.adaptive.records_full / 2
