"""The shipped sample checkpoints: two named outputs (logits, features) and the re-export that added the second."""

from __future__ import annotations

import json
import shutil
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from melep_cli.checkpoints import inspect_checkpoint, load_checkpoint

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
pytest.importorskip("wfdb")  # build.py, which reexport.py imports, needs it

SAMPLE = Path(__file__).resolve().parents[1] / "sample_data"
CHECKPOINTS = SAMPLE / "checkpoints"
#: Feature width D of each checkpoint: ResNet-1d 32 pooled channels, Bi-LSTM mean+max of 2 x 64 hidden.
WIDTHS = {
    "cinc2021_snomed_bilstm.onnx": (8, 256),
    "ptbxl_form_resnet1d.pt": (10, 32),
    "ptbxl_rhythm_bilstm.pt": (6, 256),
    "ptbxl_superclass_bilstm.ts": (5, 256),
    "ptbxl_superclass_resnet1d.onnx": (5, 32),
}

sys.path.insert(0, str(SAMPLE))
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    import build
    import reexport


def head_weights(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """The linear head (W, b) as stored in the file."""
    if path.suffix == ".onnx":
        tensors = {t.name: onnx.numpy_helper.to_array(t) for t in onnx.load(str(path)).graph.initializer}
        return tensors["head.weight"], tensors["head.bias"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        state = torch.jit.load(str(path)).state_dict()
    return state["head.weight"].numpy(), state["head.bias"].numpy()


def test_the_sample_checkpoints_are_the_five_expected() -> None:
    assert sorted(path.name for path in CHECKPOINTS.iterdir()) == sorted(WIDTHS)


@pytest.mark.parametrize("name", sorted(WIDTHS))
def test_each_sample_checkpoint_lists_logits_and_features_with_their_roles(name: str) -> None:
    described = inspect_checkpoint(CHECKPOINTS / name, device="cpu")
    labels, width = WIDTHS[name]
    assert (described["scores_output"], described["features_output"]) == ("logits", "features")
    assert (described["metadata"]["scores_output"], described["metadata"]["features_output"]) == ("logits", "features")
    outputs = [(output["name"], output["shape"][1:], output["role"]) for output in described["outputs"]]
    assert outputs == [("logits", [labels], "scores"), ("features", [width], "features")]


@pytest.mark.parametrize("name", sorted(WIDTHS))
def test_the_features_are_the_input_of_the_linear_head(name: str) -> None:
    path = CHECKPOINTS / name
    checkpoint = load_checkpoint(path, device="cpu", warn_defaults=False)
    inputs = np.random.default_rng(0).normal(0, 0.3, (3, 12, 1000)).astype(np.float32)
    prediction = checkpoint.predict_outputs(inputs)
    labels, width = WIDTHS[name]
    assert prediction.scores.shape == (3, labels) and prediction.features.shape == (3, width)
    assert checkpoint.features_width == width
    weight, bias = head_weights(path)
    np.testing.assert_allclose(prediction.features @ weight.T + bias, prediction.scores, atol=1e-5)


def test_reexport_adds_the_features_output_and_keeps_weights_and_scores(tmp_path: Path) -> None:
    """Checkpoints exported the old way (logits only) come out with both outputs and bit-identical scores."""
    out = tmp_path / "sample"
    (out / "checkpoints").mkdir(parents=True)
    shutil.copyfile(SAMPLE / "ptbxl_target.h5", out / "ptbxl_target.h5")
    shutil.copytree(SAMPLE / "cinc_wfdb", out / "cinc_wfdb")
    torch.manual_seed(0)
    old_meta = {"labels": ["A", "B", "C"], "layout": "NCT", "output": "logits", "normalization": "zscore"}
    meta_json = json.dumps(old_meta)
    example = torch.zeros(2, 12, 1000)
    models = {"old_resnet.onnx": build.ResNet1d(3).eval(), "old_bilstm.pt": build.BiLSTM(3).eval()}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name, model in models.items():
            path = out / "checkpoints" / name
            if path.suffix == ".onnx":  # the export before the features output: one output, `logits`
                torch.onnx.export(
                    model, (example,), str(path), input_names=["ecg"], output_names=["logits"],
                    dynamic_axes={"ecg": {0: "batch"}, "logits": {0: "batch"}}, opset_version=17, dynamo=False,
                )  # fmt: skip
                proto = onnx.load(str(path))
                proto.metadata_props.add(key="melep", value=meta_json)
                onnx.save(proto, str(path))
            else:
                torch.jit.save(torch.jit.trace(model, example), str(path), _extra_files={"melep.json": meta_json})
        records = [build.normalize(r, "zscore") for r in reexport.reference_inputs(out)]
        before = {name: reexport.run(out / "checkpoints" / name, records) for name in models}
        assert reexport.main(["--out", str(out)]) == 0
        for name, model in models.items():
            path = out / "checkpoints" / name
            assert json.loads(reexport.read_metadata(path)) == {
                **old_meta,
                "scores_output": "logits",
                "features_output": "features",
            }
            for old, new, data in zip(before[name], reexport.run(path, records), records):
                assert list(new) == ["logits", "features"]
                np.testing.assert_array_equal(new["logits"], next(iter(old.values())))
                with torch.no_grad():
                    expected = model.features(torch.from_numpy(data)).numpy()
                np.testing.assert_allclose(new["features"], expected, atol=1e-4)
        # A second run finds the features output and changes nothing.
        stored = {name: (out / "checkpoints" / name).read_bytes() for name in models}
        assert reexport.main(["--out", str(out)]) == 0
        assert {name: (out / "checkpoints" / name).read_bytes() for name in models} == stored
