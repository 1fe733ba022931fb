"""Re-export the shipped checkpoints with the penultimate features as a second named output, same weights.

    python sample_data/reexport.py [--out sample_data]

No training and no data beyond `sample_data/` itself. For every file in `checkpoints/` whose metadata does not
name a `features_output` yet:
- TorchScript: `torch.jit.load`, its state_dict copied (strict) into `build.py`'s eager `ResNet1d` / `BiLSTM` of
  the sizes that state_dict implies, then written by `build.export`, the export a full rebuild runs: a result
  dict {"logits": (batch, Z), "features": (batch, D)}.
- ONNX: the graph is edited, not re-exported: the tensor the final Gemm (the linear head) reads is renamed
  "features" and becomes a second graph output (batch, D) after "logits". (A legacy ONNX export cannot be copied
  back into the eager model: BatchNorm is folded into the convolutions and the LSTM gates are reordered. Nor
  does it need to be: every node and initializer stays as it was.)
- The metadata gains `scores_output` = "logits" and `features_output` = "features"; every other key is kept
  verbatim.

Checked before a file is replaced, on the 300 target records and the 20 CinC records (normalised as the
metadata says): the scores equal the old file's (max absolute difference at most 1e-6, printed); the features
are (n, D), finite, and the linear head applied to them gives the scores; the weights are unchanged
(TorchScript: every state_dict tensor bit for bit; ONNX: every initializer); the metadata is the old one plus
the two keys. Standalone like `build.py` (torch, onnx, onnxruntime, h5py, numpy; nothing from `melep_cli`).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import h5py
import numpy as np
import onnx
import onnxruntime
import torch
from onnx import numpy_helper

sys.path.insert(0, str(Path(__file__).resolve().parent))
from build import (
    FEATURES_OUTPUT,
    SCORES_OUTPUT,
    BiLSTM,
    ResNet1d,
    export,
    normalize,
    read_cinc_header,
    read_cinc_record,
)


def log(message: str) -> None:
    """Progress to stderr."""
    print(f"[reexport] {message}", file=sys.stderr, flush=True)


#: Largest absolute difference allowed between the old and the new scores (the task: bit-identical or 1e-6).
SCORES_TOLERANCE = 1e-6


def read_metadata(path: Path) -> str:
    """The embedded `melep` metadata JSON, as stored."""
    if path.suffix == ".onnx":
        props = {entry.key: entry.value for entry in onnx.load(str(path), load_external_data=False).metadata_props}
        return props["melep"]
    extra = {"melep.json": ""}
    torch.jit.load(str(path), _extra_files=extra)
    return extra["melep.json"].decode() if isinstance(extra["melep.json"], bytes) else extra["melep.json"]


def load_outputs(path: Path):
    """A function mapping an NCT float32 batch to every tensor output of the checkpoint, by name.

    ONNX: the graph's output names. TorchScript: a tensor result is `output`, a tuple's elements `0`, `1`, ...,
    a dict's entries its keys (the names melep gives them).
    """
    if path.suffix == ".onnx":
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        names = [output.name for output in session.get_outputs()]
        return lambda x: dict(zip(names, session.run(None, {name: x})))
    module = torch.jit.load(str(path))
    module.eval()

    def forward(x: np.ndarray) -> dict[str, np.ndarray]:
        with torch.no_grad():
            result = module(torch.from_numpy(x))
        if isinstance(result, torch.Tensor):
            return {"output": result.numpy()}
        if isinstance(result, dict):
            return {str(key): value.numpy() for key, value in result.items()}
        return {str(i): value.numpy() for i, value in enumerate(result)}

    return forward


def run(path: Path, inputs: list[np.ndarray], batch: int = 64) -> list[dict[str, np.ndarray]]:
    """Every named output of `path` on each of `inputs` (arrays of NCT records), in batches."""
    forward = load_outputs(path)
    results = []
    for records in inputs:
        parts = [forward(records[i : i + batch]) for i in range(0, len(records), batch)]
        results.append({name: np.concatenate([part[name] for part in parts]) for name in parts[0]})
    return results


def new_metadata(old_json: str) -> str:
    """The old metadata JSON with scores_output / features_output added, every other key as it was."""
    old = json.loads(old_json)
    assert json.dumps(old, indent=None) == old_json, "metadata would not round-trip verbatim"
    assert "features_output" not in old
    return json.dumps({**old, "scores_output": SCORES_OUTPUT, "features_output": FEATURES_OUTPUT}, indent=None)


def reexport_torchscript(path: Path, new: Path, meta_json: str) -> tuple[np.ndarray, np.ndarray]:
    """Write `new` through build.export from the eager model holding `path`'s weights; return the head (W, b)."""
    state = torch.jit.load(str(path)).state_dict()
    outputs = state["head.weight"].shape[0]
    if "lstm.weight_ih_l0" in state:
        model = BiLSTM(
            outputs,
            leads=state["stem.0.weight"].shape[1],
            channels=state["stem.0.weight"].shape[0],
            hidden=state["lstm.weight_hh_l0"].shape[1],
        )
    else:
        model = ResNet1d(outputs, leads=state["stem.0.weight"].shape[1], width=state["stem.0.weight"].shape[0])
    model.load_state_dict(state, strict=True)
    export(model, new, meta_json)
    written = torch.jit.load(str(new)).state_dict()
    assert written.keys() == state.keys(), sorted(set(written) ^ set(state))
    changed = [key for key in state if not torch.equal(written[key], state[key])]
    assert not changed, f"{path.name}: weights changed: {changed}"
    return state["head.weight"].numpy(), state["head.bias"].numpy()


def reexport_onnx(path: Path, new: Path, meta_json: str) -> tuple[np.ndarray, np.ndarray]:
    """Write `new`: `path`'s graph with the head's input as output FEATURES_OUTPUT; return the head (W, b)."""
    proto = onnx.load(str(path))
    graph = proto.graph
    assert [output.name for output in graph.output] == [SCORES_OUTPUT], [output.name for output in graph.output]
    [head] = [node for node in graph.node if SCORES_OUTPUT in node.output]
    attributes = {attribute.name: onnx.helper.get_attribute_value(attribute) for attribute in head.attribute}
    assert head.op_type == "Gemm" and attributes.get("transB") == 1 and not attributes.get("transA"), head
    assert attributes.get("alpha", 1.0) == 1.0 and attributes.get("beta", 1.0) == 1.0, attributes
    initializers = {tensor.name: numpy_helper.to_array(tensor) for tensor in graph.initializer}
    weight, bias = initializers[head.input[1]], initializers[head.input[2]]
    before = {tensor.name: tensor.SerializeToString() for tensor in graph.initializer}
    penultimate = head.input[0]
    assert penultimate not in before and all(
        FEATURES_OUTPUT not in (*node.input, *node.output) for node in graph.node
    ), "unexpected graph"
    for node in graph.node:
        for names in (node.input, node.output):
            for i, name in enumerate(names):
                if name == penultimate:
                    names[i] = FEATURES_OUTPUT
    for info in graph.value_info:
        if info.name == penultimate:
            info.name = FEATURES_OUTPUT
    batch = graph.output[0].type.tensor_type.shape.dim[0]
    assert batch.dim_param, "the batch axis is not dynamic"
    graph.output.append(
        onnx.helper.make_tensor_value_info(
            FEATURES_OUTPUT, onnx.TensorProto.FLOAT, [batch.dim_param, int(weight.shape[1])]
        )
    )
    del proto.metadata_props[:]
    entry = proto.metadata_props.add()
    entry.key, entry.value = "melep", meta_json
    onnx.checker.check_model(proto, full_check=True)
    assert {tensor.name: tensor.SerializeToString() for tensor in graph.initializer} == before
    onnx.save(proto, str(new))
    return weight, bias


def reference_inputs(out: Path) -> tuple[np.ndarray, np.ndarray]:
    """The target's 300 records and the 20 CinC records, (n, leads, time) float32, not yet normalised."""
    with h5py.File(out / "ptbxl_target.h5", "r") as file:
        target = file["signals"][:].astype(np.float32).transpose(0, 2, 1)
    cinc_dir = out / "cinc_wfdb"
    cinc = np.stack([read_cinc_record(read_cinc_header(h), cinc_dir) for h in sorted(cinc_dir.glob("*.hea"))])
    return target, cinc.transpose(0, 2, 1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent, help="sample_data directory")
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    out: Path = args.out
    records = reference_inputs(out)
    summary = []
    for path in sorted((out / "checkpoints").iterdir()):
        old_json = read_metadata(path)
        old_meta = json.loads(old_json)
        if "features_output" in old_meta:
            log(f"{path.name}: already names features_output {old_meta['features_output']!r}; left as it is")
            continue
        inputs = [normalize(r, old_meta["normalization"]) for r in records]
        old_results = run(path, inputs)
        assert all(len(result) == 1 for result in old_results), [list(result) for result in old_results]
        old_scores = [next(iter(result.values())) for result in old_results]
        meta_json = new_metadata(old_json)
        with tempfile.TemporaryDirectory() as folder:
            new = Path(folder) / path.name  # same file name: TorchScript archives are named after it
            if path.suffix == ".onnx":
                weight, bias = reexport_onnx(path, new, meta_json)
            else:
                weight, bias = reexport_torchscript(path, new, meta_json)
            assert read_metadata(new) == meta_json
            results = run(new, inputs)
            difference = 0.0
            for old, result in zip(old_scores, results):
                assert list(result) == [SCORES_OUTPUT, FEATURES_OUTPUT], list(result)
                scores, features = result[SCORES_OUTPUT], result[FEATURES_OUTPUT]
                assert scores.shape == old.shape and features.shape == (len(old), weight.shape[1])
                assert np.isfinite(features).all()
                difference = max(difference, float(np.abs(scores - old).max()))
                head = features.astype(np.float64) @ weight.T.astype(np.float64) + bias
                assert np.abs(head - scores).max() < 1e-4, (path.name, np.abs(head - scores).max())
            assert difference <= SCORES_TOLERANCE, f"{path.name}: scores moved by {difference:g}"
            staged = out / f".{path.name}.reexport"  # beside checkpoints/, so no scan of that folder meets it
            shutil.copyfile(new, staged)
            os.replace(staged, path)
        summary.append((path.name, weight.shape[1], difference, path.stat().st_size))
        log(
            f"{path.name}: outputs {SCORES_OUTPUT} (n, {weight.shape[0]}), {FEATURES_OUTPUT} (n, {weight.shape[1]}); "
            f"max |scores - old scores| {difference:.3g}; {path.stat().st_size / 1e3:.0f} kB"
        )
    for name, width, difference, size in summary:
        print(f"{name}\tD={width}\tmax_abs_score_diff={difference:.3g}\t{size} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
