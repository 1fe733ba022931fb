"""Checkpoints with several outputs: every output by name, `scores_output` / `features_output` pick them.

The models are small torch networks exported to ONNX (two named outputs) and TorchScript (a tuple and a
dict result); the eager module is the reference for both the scores and the penultimate features.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
from conftest import export_torchscript

import melep_cli.checkpoints.devices as devices_module
from melep_cli.checkpoints import Prediction, annotate_checkpoint, inspect_checkpoint, load_checkpoint
from melep_cli.checkpoints.metadata import CheckpointMetadata, parse_metadata
from melep_cli.cli import run
from melep_cli.errors import CheckpointError, UsageError

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")

LEADS, SAMPLES, FEATURES, LABELS = 12, 200, 8, 5


class TwoHeads(torch.nn.Module):
    """Conv features (batch, 8) and a linear head on them (batch, 5): returns (scores, features)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv1d(LEADS, FEATURES, kernel_size=7, padding=3)
        self.head = torch.nn.Linear(FEATURES, LABELS)

    def features(self, ecg: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.conv(ecg)).mean(dim=2)

    def forward(self, ecg: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.features(ecg)
        return self.head(features), features


class FeaturesFirst(torch.nn.Module):
    """The same network returning (features, scores): the first output is not the scores."""

    def __init__(self, inner: TwoHeads) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, ecg: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        scores, features = self.inner(ecg)
        return features, scores


class DictHeads(torch.nn.Module):
    """The same network returning {"features": ..., "logits": ...} (features first, as dicts often are)."""

    def __init__(self, inner: TwoHeads) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, ecg: torch.Tensor) -> dict[str, torch.Tensor]:
        scores, features = self.inner(ecg)
        return {"features": features, "logits": scores}


class WithState(torch.nn.Module):
    """(scores, (a, b)): a tuple inside the result, like an LSTM's state."""

    def __init__(self, inner: TwoHeads) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, ecg: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        scores, features = self.inner(ecg)
        return scores, (features, features)


class InfiniteExtra(torch.nn.Module):
    """(scores, an output that is always infinite): melep must only care about the one it uses."""

    def __init__(self, inner: TwoHeads) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, ecg: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        scores, features = self.inner(ecg)
        return scores, torch.full_like(features, float("inf"))


def export_two_outputs(module: torch.nn.Module, path: Path, names: list[str], *, batch: int | None = None) -> Path:
    """torch.onnx.export with two named outputs; a dynamic batch axis unless `batch` fixes it."""
    example = torch.randn(batch or 2, LEADS, SAMPLES)
    axes = None if batch else {"ecg": {0: "batch"}, **{name: {0: "batch"} for name in names}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module, (example,), str(path), input_names=["ecg"], output_names=names, dynamic_axes=axes, dynamo=False
        )
    return path


@pytest.fixture(scope="module")
def heads(tmp_path_factory) -> dict[str, object]:
    """The eager network and its exports: ONNX (scores, features), (features, scores), fixed batch 4;
    TorchScript tuple, dict and tuple-with-state results."""
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("heads")
    module = TwoHeads().eval()
    example = torch.randn(2, LEADS, SAMPLES)
    return {
        "module": module,
        "onnx": export_two_outputs(module, folder / "two.onnx", ["scores", "features"]),
        "onnx_features_first": export_two_outputs(FeaturesFirst(module), folder / "first.onnx", ["feat", "logits"]),
        "onnx_static": export_two_outputs(module, folder / "static.onnx", ["scores", "features"], batch=4),
        "tuple": export_torchscript(module, example, folder / "tuple.pt"),
        "dict": export_torchscript(DictHeads(module), example, folder / "dict.pt", script=True),
        "state": export_torchscript(WithState(module), example, folder / "state.pt", script=True),
        "infinite": export_torchscript(InfiniteExtra(module), example, folder / "infinite.pt", script=True),
    }


def eager_heads(module: torch.nn.Module, inputs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The eager network's (scores, features): the reference."""
    with torch.inference_mode():
        scores, features = module(torch.from_numpy(inputs))
    return scores.numpy(), features.numpy()


def copy_with(source: Path, folder: Path, metadata: dict | None = None, name: str | None = None) -> Path:
    """A copy of `source` in `folder`, with `metadata` as its sidecar (layout NCT unless given)."""
    path = Path(shutil.copy(source, folder / (name or source.name)))
    if metadata is not None:
        path.with_suffix(".json").write_text(json.dumps({"layout": "NCT", **metadata}))
    return path


@pytest.fixture
def inputs() -> np.ndarray:
    return np.random.default_rng(0).normal(size=(5, LEADS, SAMPLES)).astype(np.float32)


def one_error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert lines[0].startswith("melep: error: ")
    return lines[0]


# ----- backends: every output by name --------------------------------------------------------------
def test_backends_return_every_output_by_name_in_the_model_order(heads, tmp_path, inputs):
    onnx_model = load_checkpoint(heads["onnx"], device="cpu", warn_defaults=False)
    outputs = onnx_model._backend.run(inputs)
    assert list(outputs) == ["scores", "features"]
    assert [info.name for info in onnx_model._backend.outputs] == ["scores", "features"]
    expected_scores, expected_features = eager_heads(heads["module"], inputs)
    np.testing.assert_allclose(outputs["scores"], expected_scores, atol=1e-5)
    np.testing.assert_allclose(outputs["features"], expected_features, atol=1e-5)

    tuple_model = load_checkpoint(copy_with(heads["tuple"], tmp_path, {}), device="cpu", warn_defaults=False)
    assert list(tuple_model._backend.run(inputs)) == ["0", "1"]
    dict_model = load_checkpoint(copy_with(heads["dict"], tmp_path, {}), device="cpu", warn_defaults=False)
    assert list(dict_model._backend.run(inputs)) == ["features", "logits"]
    state_model = load_checkpoint(copy_with(heads["state"], tmp_path, {}), device="cpu", warn_defaults=False)
    assert list(state_model._backend.run(inputs)) == ["0"]  # the tuple inside is no tensor: left out
    assert [(info.name, info.tensor, info.dtype) for info in state_model._backend.outputs] == [
        ("0", True, "float32"),
        ("1", False, "tuple"),
    ]


# ----- defaults and scores_output ------------------------------------------------------------------
@pytest.mark.parametrize("source", ["onnx", "tuple"])
def test_the_default_scores_are_the_first_output_and_there_are_no_features(heads, tmp_path, inputs, source):
    checkpoint = load_checkpoint(copy_with(heads[source], tmp_path, {}), device="cpu", warn_defaults=False)
    prediction = checkpoint.predict_outputs(inputs, batch_size=2)
    expected_scores, _ = eager_heads(heads["module"], inputs)
    assert isinstance(prediction, Prediction) and prediction.features is None
    np.testing.assert_allclose(prediction.scores, expected_scores, atol=1e-5)
    np.testing.assert_array_equal(checkpoint.predict(inputs, batch_size=2), prediction.scores)
    assert checkpoint.scores_output == ("scores" if source == "onnx" else "0")
    assert checkpoint.features_output is None
    assert checkpoint.output_width == LABELS


@pytest.mark.parametrize(
    ("source", "selector"),
    [
        ("onnx_features_first", "logits"),
        ("onnx_features_first", 1),
        ("dict", "logits"),
        ("dict", 1),
        ("tuple", "0"),
        ("tuple", 0),
    ],
)
def test_scores_output_picks_the_scores(heads, tmp_path, inputs, source, selector):
    path = copy_with(heads[source], tmp_path, {"scores_output": selector})
    checkpoint = load_checkpoint(path, device="cpu", warn_defaults=False)
    expected_scores, _ = eager_heads(heads["module"], inputs)
    np.testing.assert_allclose(checkpoint.predict(inputs, batch_size=3), expected_scores, atol=1e-5)
    assert checkpoint.scores_output == {"onnx_features_first": "logits", "dict": "logits", "tuple": "0"}[source]


def test_without_scores_output_a_features_first_model_scores_its_features(heads, tmp_path, inputs):
    """The documented default (the first output) really is what runs: here the features, width 8."""
    path = copy_with(heads["dict"], tmp_path, {})
    _, expected_features = eager_heads(heads["module"], inputs)
    np.testing.assert_allclose(load_checkpoint(path, device="cpu").predict(inputs), expected_features, atol=1e-5)


# ----- features_output -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("source", "metadata"),
    [
        ("onnx", {"features_output": "features"}),
        ("onnx", {"scores_output": 0, "features_output": 1}),
        ("onnx_features_first", {"scores_output": "logits", "features_output": "feat"}),
        ("onnx_static", {"features_output": "features"}),
        ("tuple", {"features_output": 1}),
        ("tuple", {"features_output": "1"}),
        ("dict", {"scores_output": "logits", "features_output": "features"}),
    ],
)
def test_features_output_gives_the_penultimate_features(heads, tmp_path, inputs, source, metadata):
    checkpoint = load_checkpoint(copy_with(heads[source], tmp_path, metadata), device="cpu", warn_defaults=False)
    prediction = checkpoint.predict_outputs(inputs, batch_size=2)  # 3 batches (the static model: 2 padded to 4)
    expected_scores, expected_features = eager_heads(heads["module"], inputs)
    assert prediction.features is not None and prediction.features.shape == (len(inputs), FEATURES)
    np.testing.assert_allclose(prediction.features, expected_features, atol=1e-5)
    np.testing.assert_allclose(prediction.scores, expected_scores, atol=1e-5)
    assert checkpoint.features_output in ("features", "feat", "1") and checkpoint.features_width == FEATURES
    empty = checkpoint.predict_outputs(inputs[:0])
    assert empty.scores.shape == (0, LABELS) and empty.features is not None and empty.features.shape == (0, FEATURES)


def test_features_are_checked(heads, tmp_path, inputs):
    path = copy_with(heads["infinite"], tmp_path, {"features_output": 1})
    with pytest.raises(CheckpointError, match=r"infinite\.pt: NaN or infinite features in output '1' for 5 of 5"):
        load_checkpoint(path, device="cpu", warn_defaults=False).predict_outputs(inputs)
    scores_as_features = copy_with(heads["tuple"], tmp_path, {"features_output": "0", "scores_output": "1"})
    checkpoint = load_checkpoint(scores_as_features, device="cpu", warn_defaults=False)
    assert checkpoint.predict_outputs(inputs).features.shape == (5, LABELS)  # any (batch, D) float array will do

    class Sequence3d(torch.nn.Module):
        def forward(self, ecg: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return ecg.mean(dim=2)[:, :2], ecg

    path = export_torchscript(Sequence3d(), torch.zeros(1, LEADS, 10), tmp_path / "seq.pt", script=True)
    path.with_suffix(".json").write_text(json.dumps({"layout": "NCT", "features_output": 1}))
    with pytest.raises(CheckpointError, match=r"seq\.pt: features output '1' has shape \(2, 12, 10\).*\(batch, D\)"):
        load_checkpoint(path, device="cpu", warn_defaults=False).predict_outputs(np.ones((2, LEADS, 10), np.float32))


def test_an_infinite_output_melep_does_not_use_is_ignored(heads, tmp_path, inputs):
    checkpoint = load_checkpoint(copy_with(heads["infinite"], tmp_path, {}), device="cpu", warn_defaults=False)
    expected_scores, _ = eager_heads(heads["module"], inputs)
    np.testing.assert_allclose(checkpoint.predict(inputs), expected_scores, atol=1e-5)


def test_16_bit_runs_check_only_the_selected_outputs(heads, tmp_path, inputs, monkeypatch, melep_log):
    """bfloat16 (emulated where the CPU lacks it): an infinite output melep ignores keeps 16 bits; a selected
    one sends the model back to float32, where the check of the features then fails it."""
    monkeypatch.setattr(devices_module, "cpu_has_bfloat16", lambda: True)
    monkeypatch.setattr(devices_module, "_warned", set())
    ignored = copy_with(heads["infinite"], tmp_path, {}, name="ignored.pt")
    checkpoint = load_checkpoint(ignored, device="cpu", warn_defaults=False, precision="bfloat16")
    expected_scores, _ = eager_heads(heads["module"], inputs)
    np.testing.assert_allclose(checkpoint.predict(inputs), expected_scores, atol=0.1)
    assert checkpoint.precision == "bfloat16"
    selected = copy_with(heads["infinite"], tmp_path, {"features_output": 1}, name="selected.pt")
    checkpoint = load_checkpoint(selected, device="cpu", warn_defaults=False, precision="bfloat16")
    with pytest.raises(CheckpointError, match="NaN or infinite features"):
        checkpoint.predict_outputs(inputs)
    assert checkpoint.precision == "float32"
    assert any("cannot run in bfloat16" in record.getMessage() for record in melep_log.records)


# ----- names the model does not have ---------------------------------------------------------------
@pytest.mark.parametrize(
    ("metadata", "picked"),
    [
        ({"scores_output": "logits"}, "'logits'"),
        ({"scores_output": 2}, "index 2"),
        ({"features_output": "penultimate"}, "'penultimate'"),
    ],
)
def test_an_unknown_onnx_output_fails_on_loading_listing_the_outputs(heads, tmp_path, metadata, picked):
    path = copy_with(heads["onnx"], tmp_path, metadata)
    key = next(iter(metadata))
    with pytest.raises(CheckpointError) as raised:
        load_checkpoint(path, device="cpu")
    assert str(raised.value) == (
        f"{path}: metadata key '{key}' names output {picked}, which the model does not have "
        "(its outputs: 'scores', 'features')"
    )


@pytest.mark.parametrize(
    ("source", "metadata", "listing"),
    [
        ("tuple", {"scores_output": "logits"}, "'0', '1'"),
        ("tuple", {"features_output": 2}, "'0', '1'"),
        ("dict", {"scores_output": "scores"}, "'features', 'logits'"),
    ],
)
def test_an_unknown_torchscript_output_fails_on_the_first_forward_pass(
    heads, tmp_path, inputs, source, metadata, listing
):
    path = copy_with(heads[source], tmp_path, metadata)
    checkpoint = load_checkpoint(path, device="cpu", warn_defaults=False)
    with pytest.raises(
        CheckpointError, match=rf"{path.name}: metadata key '{next(iter(metadata))}'.*\(its outputs: {listing}\)"
    ):
        checkpoint.predict(inputs)
    (tmp_path / "probe").mkdir()
    path = Path(shutil.copy(heads[source], tmp_path / "probe" / heads[source].name))
    path.with_suffix(".json").write_text(json.dumps(metadata))  # no layout: the probe finds the name missing
    checkpoint = load_checkpoint(path, device="cpu", warn_defaults=False)
    with pytest.raises(CheckpointError, match=r"does not have \(its outputs"):
        checkpoint.probe_layout(inputs[:1])


def test_a_non_tensor_output_is_an_error_only_when_selected(heads, tmp_path, inputs):
    checkpoint = load_checkpoint(copy_with(heads["state"], tmp_path, {}), device="cpu", warn_defaults=False)
    assert checkpoint.predict(inputs).shape == (5, LABELS)
    path = copy_with(heads["state"], tmp_path, {"features_output": 1}, name="state_features.pt")
    with pytest.raises(
        CheckpointError, match=r"state_features\.pt: output '1' \(metadata key 'features_output'\) is a tuple"
    ):
        load_checkpoint(path, device="cpu", warn_defaults=False).predict_outputs(inputs)


def test_an_onnx_sequence_output_is_listed_and_refused_when_selected(tmp_path):
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [
            helper.make_node("ReduceMean", ["ecg"], ["scores"], axes=[2], keepdims=0),
            helper.make_node("SequenceConstruct", ["scores", "scores"], ["pieces"]),
        ],
        "with_sequence",
        [helper.make_tensor_value_info("ecg", TensorProto.FLOAT, ["batch", 12, "time"])],
        [
            helper.make_tensor_sequence_value_info("pieces", TensorProto.FLOAT, None),
            helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch", 12]),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path / "sequence.onnx"
    onnx.save(model, str(path))
    with pytest.raises(CheckpointError, match=r"sequence\.onnx: output 'pieces' \(metadata key 'scores_output'\)"):
        load_checkpoint(path, device="cpu", warn_defaults=False)  # the default, the first output, is the sequence
    path.with_suffix(".json").write_text(json.dumps({"scores_output": "scores"}))
    checkpoint = load_checkpoint(path, device="cpu", warn_defaults=False)
    ones = np.ones((2, 12, 10), dtype=np.float32)
    np.testing.assert_allclose(checkpoint.predict(ones), np.ones((2, 12)))
    assert [(entry["name"], entry["role"]) for entry in checkpoint.outputs_info] == [
        ("pieces", None),
        ("scores", "scores"),
    ]


# ----- metadata ------------------------------------------------------------------------------------
@pytest.mark.parametrize("value", ["", "  ", -1, True, 1.5, ["scores"], {"name": "scores"}])
@pytest.mark.parametrize("key", ["scores_output", "features_output"])
def test_output_keys_of_the_wrong_type_are_errors_naming_the_key(heads, tmp_path, key, value):
    path = copy_with(heads["onnx"], tmp_path, {key: value})
    with pytest.raises(CheckpointError, match=rf"two\.onnx: metadata key '{key}' must be"):
        load_checkpoint(path, device="cpu")


def test_output_keys_round_trip_through_to_document():
    metadata = parse_metadata({"scores_output": "logits", "features_output": 3}, where="m.pt", origin="test")
    assert (metadata.scores_output, metadata.features_output) == ("logits", 3)
    assert metadata.to_document() == {"scores_output": "logits", "features_output": 3}
    assert "scores_output" in CheckpointMetadata().defaulted and "features_output" not in CheckpointMetadata().defaulted


def test_a_model_with_several_outputs_warns_which_it_scores(heads, tmp_path, melep_log):
    load_checkpoint(copy_with(heads["onnx"], tmp_path, {"labels": list("abcde")}), device="cpu")
    messages = [record.getMessage() for record in melep_log.records]
    assert any("scores_output=scores (the first of 2)" in message for message in messages), messages


# ----- inspect ------------------------------------------------------------------------------------
def test_inspect_lists_every_onnx_output_with_its_declared_shape_and_role(heads, tmp_path):
    path = copy_with(heads["onnx"], tmp_path, {"features_output": "features"})
    described = inspect_checkpoint(path, device="cpu")
    assert described["outputs"] == [
        {"name": "scores", "shape": ["batch", LABELS], "dtype": "float32", "role": "scores"},
        {"name": "features", "shape": ["batch", FEATURES], "dtype": "float32", "role": "features"},
    ]
    assert (described["scores_output"], described["features_output"]) == ("scores", "features")
    assert described["output"] == {"name": "scores", "width": LABELS}
    assert described["metadata"]["features_output"] == "features"
    assert described["defaulted"]["scores_output"] == "scores (the first of 2)"
    assert not any("several outputs" in note for note in described["notes"])


@pytest.mark.parametrize(
    ("source", "metadata", "expected"),
    [
        ("tuple", {}, [("0", [1, LABELS], "scores"), ("1", [1, FEATURES], None)]),
        (
            "dict",
            {"scores_output": "logits", "features_output": 0},
            [("features", [1, 8], "features"), ("logits", [1, 5], "scores")],
        ),
        ("state", {}, [("0", [1, LABELS], "scores"), ("1", None, None)]),
    ],
)
def test_inspect_lists_torchscript_outputs_from_its_probe_pass(heads, tmp_path, source, metadata, expected):
    path = Path(shutil.copy(heads[source], tmp_path / heads[source].name))
    if metadata:
        path.with_suffix(".json").write_text(json.dumps(metadata))  # no layout: inspect probes it
    described = inspect_checkpoint(path, device="cpu")
    assert [(entry["name"], entry["shape"], entry["role"]) for entry in described["outputs"]] == expected
    assert described["metadata"]["layout"] == "NCT" and described["output"]["width"] == LABELS
    assert any("one record" in note for note in described["notes"])


def test_inspect_of_torchscript_naming_a_missing_output_fails_listing_the_real_ones(heads, tmp_path, capsys):
    path = copy_with(heads["tuple"], tmp_path, {"scores_output": "logits"})
    with pytest.raises(CheckpointError, match=r"'scores_output' names output 'logits'.*\(its outputs: '0', '1'\)"):
        inspect_checkpoint(path, device="cpu")
    assert run(["inspect", str(path), "--device", "cpu"]) == 1
    line = one_error_line(capsys.readouterr().err)
    assert "tuple.pt: metadata key 'scores_output' names output 'logits'" in line and "'0', '1'" in line


def test_cli_inspect_shows_the_outputs_in_the_table_json_and_csv(heads, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    path = copy_with(heads["onnx"], tmp_path, {"features_output": "features"})
    assert run(["inspect", str(path), "--device", "cpu"]) == 0
    table = capsys.readouterr().out
    assert "scores  shape [batch, 5]  dtype float32  (scores)" in table
    assert "features  shape [batch, 8]  dtype float32  (features)" in table
    assert run(["inspect", str(path), "--device", "cpu", "-f", "json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert [entry["role"] for entry in document["outputs"]] == ["scores", "features"]
    assert run(["inspect", str(path), "--device", "cpu", "-f", "csv"]) == 0
    header, row = csv.reader(io.StringIO(capsys.readouterr().out))
    cells = dict(zip(header, row))
    assert (cells["scores_output"], cells["features_output"], cells["outputs"]) == (
        "scores",
        "features",
        "scores features",
    )


# ----- annotate -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("source", "scores", "features", "names"),
    [
        ("onnx_features_first", "logits", "feat", ("logits", "feat")),
        ("onnx", 0, 1, ("scores", "features")),
        ("tuple", "0", "1", ("0", "1")),
        ("dict", "logits", "features", ("logits", "features")),
    ],
)
def test_annotate_round_trips_the_output_keys(heads, tmp_path, inputs, source, scores, features, names):
    path = Path(shutil.copy(heads[source], tmp_path / heads[source].name))
    result = annotate_checkpoint(path, layout="NCT", scores_output=scores, features_output=features)
    assert result.document == {"layout": "NCT", "scores_output": scores, "features_output": features}
    assert (result.metadata.scores_output, result.metadata.features_output) == (scores, features)
    checkpoint = load_checkpoint(path, device="cpu", warn_defaults=False)
    prediction = checkpoint.predict_outputs(inputs)
    expected_scores, expected_features = eager_heads(heads["module"], inputs)
    np.testing.assert_allclose(prediction.scores, expected_scores, atol=1e-5)
    np.testing.assert_allclose(prediction.features, expected_features, atol=1e-5)
    assert (checkpoint.scores_output, checkpoint.features_output) == names
    assert annotate_checkpoint(path, remove=["features_output"]).document == {"layout": "NCT", "scores_output": scores}


@pytest.mark.parametrize(
    ("source", "options", "message"),
    [
        ("onnx", {"features_output": "penultimate"}, "'features_output' names output 'penultimate'"),
        ("onnx", {"scores_output": 3}, "'scores_output' names output index 3"),
        ("tuple", {"scores_output": "logits"}, r"'scores_output' names output 'logits'.*\(its outputs: '0', '1'\)"),
        ("dict", {"features_output": "hidden"}, r"\(its outputs: 'features', 'logits'\)"),
        ("state", {"features_output": "1"}, r"output '1' \(metadata key 'features_output'\) is a tuple"),
    ],
)
def test_annotate_refuses_outputs_the_model_does_not_have(heads, tmp_path, source, options, message):
    path = Path(shutil.copy(heads[source], tmp_path / heads[source].name))
    before = path.read_bytes()
    with pytest.raises(CheckpointError, match=message):
        annotate_checkpoint(path, layout="NCT", **options)
    with pytest.raises(CheckpointError, match=message):
        annotate_checkpoint(path, layout="NCT", output=tmp_path / f"new{path.suffix}", **options)
    assert path.read_bytes() == before
    assert sorted(entry.name for entry in tmp_path.iterdir()) == [path.name]


def test_annotate_checks_output_values(heads, tmp_path):
    path = Path(shutil.copy(heads["onnx"], tmp_path / "two.onnx"))
    with pytest.raises(UsageError, match="metadata key 'scores_output' must be a non-empty output name"):
        annotate_checkpoint(path, scores_output=" ")
    with pytest.raises(UsageError, match="metadata key 'features_output' must be a non-negative output index"):
        annotate_checkpoint(path, metadata={"features_output": -1})


def test_annotate_checks_the_label_count_against_the_selected_onnx_output(heads, tmp_path):
    path = Path(shutil.copy(heads["onnx_features_first"], tmp_path / "first.onnx"))
    with pytest.raises(
        CheckpointError, match=r"first\.onnx: outputs 8 scores per record but its metadata names 5 labels"
    ):
        annotate_checkpoint(path, labels=list("abcde"))
    result = annotate_checkpoint(path, labels=list("abcde"), scores_output="logits")
    assert result.document == {"labels": list("abcde"), "scores_output": "logits"}


def test_annotate_writes_unchecked_names_with_a_warning_when_the_model_cannot_run(tmp_path, melep_log):
    class EightLeads(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv1d(8, 2, 3)

        def forward(self, ecg: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            pooled = self.conv(ecg).mean(dim=2)
            return pooled, pooled

    path = export_torchscript(EightLeads(), torch.zeros(1, 8, 10), tmp_path / "eight.pt", script=True)
    result = annotate_checkpoint(path, features_output="hidden")
    assert result.document == {"features_output": "hidden"}
    assert any("features_output not checked against the model" in record.getMessage() for record in melep_log.records)
    result = annotate_checkpoint(
        path, leads=["I", "II", "III", "V1", "V2", "V3", "V4", "V5"], remove=["features_output"]
    )
    with pytest.raises(CheckpointError, match=r"'features_output' names output 'hidden'.*'0', '1'"):
        annotate_checkpoint(path, features_output="hidden")  # with 8 leads it runs: the name is checked


def test_cli_annotate_sets_the_outputs_and_refuses_unknown_names(heads, tmp_path, capsys):
    path = Path(shutil.copy(heads["onnx_features_first"], tmp_path / "first.onnx"))
    new = tmp_path / "annotated.onnx"
    argv = ["annotate", str(path), "--scores-output", "logits", "--features-output", "feat", "-o", str(new)]
    assert run([*argv, "-f", "json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document == {"path": str(new), "metadata": {"scores_output": "logits", "features_output": "feat"}}
    assert run(["inspect", str(new), "--device", "cpu", "-f", "json"]) == 0
    described = json.loads(capsys.readouterr().out)
    assert [(entry["name"], entry["role"]) for entry in described["outputs"]] == [
        ("feat", "features"),
        ("logits", "scores"),
    ]

    refused = tmp_path / "refused.onnx"
    assert run(["annotate", str(path), "--features-output", "hidden", "-o", str(refused)]) == 1
    line = one_error_line(capsys.readouterr().err)
    assert "first.onnx: metadata key 'features_output' names output 'hidden'" in line and "'feat', 'logits'" in line
    assert not refused.exists()
    script = Path(shutil.copy(heads["tuple"], tmp_path / "tuple.pt"))
    before = script.read_bytes()
    assert run(["annotate", str(script), "--layout", "NCT", "--scores-output", "2"]) == 1
    assert "tuple.pt: metadata key 'scores_output' names output '2'" in one_error_line(capsys.readouterr().err)
    assert script.read_bytes() == before
    assert run(["annotate", str(script), "--scores-output", ""]) == 2
    assert "'scores_output'" in one_error_line(capsys.readouterr().err)


# ----- the forward stage stores the features beside the scores ----------------------------------------
@pytest.mark.parametrize("source", ["onnx", "dict"])
def test_forward_stores_the_declared_features_in_the_cache(heads, tmp_path, source):
    import h5py

    from melep_cli import forward, open_target, prepare, rank

    target_path = Path(__file__).resolve().parents[1] / "sample_data" / "ptbxl_target.h5"
    metadata = {"samples": SAMPLES, "features_output": "features"}
    if source == "dict":
        metadata["scores_output"] = "logits"
    checkpoint = copy_with(heads[source], tmp_path, metadata)
    cache = tmp_path / "cache"
    (result,) = forward([checkpoint], target_path, cache=cache).results
    assert result.status == "ok" and result.features is not None and result.features.shape == (300, FEATURES)
    target = open_target(target_path)
    signals = np.concatenate([batch.signals for batch in target.batches(300)])
    spec = load_checkpoint(checkpoint, device="cpu", warn_defaults=False).input_spec(sampling_rate=100, samples=1000)
    scores, features = eager_heads(heads["module"], prepare(signals, 100, target.leads, spec))
    with h5py.File(result.entry, "r") as entry:
        np.testing.assert_allclose(entry["features"][()], features, atol=1e-5)
        np.testing.assert_allclose(entry["outputs"][()], scores, atol=1e-5)
    (again,) = forward([checkpoint], target_path, cache=cache).results
    assert again.cached and again.features is not None
    np.testing.assert_array_equal(again.features, result.features)
    assert rank([checkpoint], target_path, cache=cache).ok[0].cached
