"""The performance options of `melep rank`: --threads, the per-device default batch size, TorchScript execution."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from melep_cli.checkpoints import load_checkpoint
from melep_cli.checkpoints.checkpoint import DEFAULT_BATCH_SIZE, DEFAULT_CUDA_BATCH_SIZE, default_batch_size
from melep_cli.cli import run
from melep_cli.errors import UsageError
from melep_cli.ranking import rank

SAMPLE = Path(__file__).resolve().parents[1] / "sample_data"
TARGET = SAMPLE / "ptbxl_target.h5"
CHECKPOINTS = SAMPLE / "checkpoints"
ONNX = CHECKPOINTS / "ptbxl_superclass_resnet1d.onnx"
TORCHSCRIPT = CHECKPOINTS / "ptbxl_superclass_bilstm.ts"


def test_rank_with_one_thread_gives_the_same_scores_and_leaves_torch_threads_alone() -> None:
    before = torch.get_num_threads()
    default = rank([ONNX, TORCHSCRIPT], TARGET, device="cpu")
    single = rank([ONNX, TORCHSCRIPT], TARGET, device="cpu", threads=1)
    assert torch.get_num_threads() == before
    assert [outcome.name for outcome in single.outcomes] == [outcome.name for outcome in default.outcomes]
    for one, many in zip(single.outcomes, default.outcomes):
        assert one.status == many.status == "ok"
        assert one.melep == pytest.approx(many.melep, rel=1e-6)


def test_threads_reach_both_runtimes() -> None:
    onnx = load_checkpoint(ONNX, device="cpu", warn_defaults=False, threads=1)
    assert onnx._backend.session.get_session_options().intra_op_num_threads == 1

    script = load_checkpoint(TORCHSCRIPT, device="cpu", warn_defaults=False, threads=1)
    backend = script._backend
    frozen = backend.module
    seen: list[int] = []

    def recording(tensor: torch.Tensor) -> torch.Tensor:
        seen.append(torch.get_num_threads())
        return frozen(tensor)

    backend.module = recording
    original = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        script.predict(np.zeros((2, 12, 1000), dtype=np.float32))
        assert seen == [1]
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(original)


@pytest.mark.parametrize("threads", [0, -2])
def test_a_thread_count_below_one_is_a_usage_error(threads: int) -> None:
    with pytest.raises(UsageError, match=r"^threads: must be a positive integer"):
        rank([ONNX], TARGET, device="cpu", threads=threads)


def test_cli_threads_option(capsys: pytest.CaptureFixture[str]) -> None:
    code = run(["rank", "-c", str(ONNX), "-t", str(TARGET), "--threads", "1", "-f", "json", "-q"])
    document = json.loads(capsys.readouterr().out)
    assert code == 0
    assert document["results"][0]["status"] == "ok"
    assert run(["rank", "-c", str(ONNX), "-t", str(TARGET), "--threads", "0", "-q"]) == 2
    assert "--threads" in capsys.readouterr().err


def test_default_batch_size_depends_on_the_device() -> None:
    assert default_batch_size("cpu") == DEFAULT_BATCH_SIZE
    assert default_batch_size("cuda:0") == DEFAULT_CUDA_BATCH_SIZE > DEFAULT_BATCH_SIZE
    checkpoint = load_checkpoint(ONNX, device="cpu", warn_defaults=False)
    assert checkpoint.batch_size == DEFAULT_BATCH_SIZE


def test_rank_help_states_both_default_batch_sizes(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "400")  # one line per option: no wrapped words to piece together
    assert run(["rank", "--help"]) == 0
    text = capsys.readouterr().out
    assert f"default {DEFAULT_BATCH_SIZE} on the CPU, {DEFAULT_CUDA_BATCH_SIZE} on CUDA" in text
    assert "--threads 1 is often much faster" in text


def test_torchscript_on_the_cpu_skips_the_profiling_executor() -> None:
    """The first calls of a frozen module run unprofiled (same outputs), and the caller's setting is restored."""
    checkpoint = load_checkpoint(TORCHSCRIPT, device="cpu", warn_defaults=False)
    backend = checkpoint._backend
    frozen = backend.module
    flags: list[bool] = []

    def recording(tensor: torch.Tensor) -> torch.Tensor:
        flags.append(torch._C._get_graph_executor_optimize())
        return frozen(tensor)

    inputs = np.random.default_rng(0).standard_normal((3, 12, 1000)).astype(np.float32)
    raw = frozen(torch.from_numpy(inputs))  # the sample checkpoints return their named outputs as a dict
    optimised = (raw[checkpoint.metadata.scores_output] if isinstance(raw, dict) else raw).detach().numpy()
    backend.module = recording
    outputs = checkpoint.predict(inputs)
    assert flags == [False]
    assert torch._C._get_graph_executor_optimize() is True
    np.testing.assert_allclose(outputs, optimised, rtol=1e-5, atol=1e-5)


def test_onnx_threads_stop_spinning_when_models_share_the_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    alone = load_checkpoint(ONNX, device="cpu", warn_defaults=False)
    shared = load_checkpoint(ONNX, device="cpu", warn_defaults=False, share_cores=True)
    key = "session.intra_op.allow_spinning"
    with pytest.raises(RuntimeError, match="does not have configuration"):  # unset: ORT's default, spinning
        alone._backend.session.get_session_options().get_session_config_entry(key)
    assert shared._backend.session.get_session_options().get_session_config_entry(key) == "0"

    import importlib

    forward_module = importlib.import_module("melep_cli.forward_pass")
    seen: list[bool] = []
    original = forward_module.load_checkpoint

    def recording(*args, **kwargs):
        seen.append(kwargs["share_cores"])
        return original(*args, **kwargs)

    monkeypatch.setattr(forward_module, "load_checkpoint", recording)
    rank([ONNX], TARGET, device="cpu", cache=None)
    rank([ONNX, TORCHSCRIPT], TARGET, device="cpu", cache=None)
    assert seen == [False, True, True]


def test_start_up_leaves_the_slow_optional_imports_until_a_record_needs_them() -> None:
    """scipy.io (.mat records), scipy.signal (resampling), wfdb (unusual WFDB formats) and scipy.special take
    about 0.8 s to import together; ranking an HDF5 target at its own rate needs none of them (the metric's
    sigmoid is numpy's), and every melep call is a new process. Checked in a fresh interpreter: the CLI ranks
    the sample target, then lists what it imported."""
    script = (
        "import sys, contextlib, io\n"
        "from melep_cli.cli import run\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        f"    code = run(['rank', '-c', {str(ONNX)!r}, '-t', {str(TARGET)!r}, '-f', 'json', '-q'])\n"
        "print(code, *sorted(name for name in ('scipy.io', 'scipy.signal', 'scipy.special', 'wfdb')"
        " if name in sys.modules))\n"
    )
    printed = _printed_by_fresh_interpreter(script)
    assert printed == ["0"], f"imported without need: {printed[1:]}"


def test_commands_that_compute_no_metric_do_not_import_scipy_special() -> None:
    """scipy.special (the sigmoid and softmax of the metric) takes about 0.3 s to import: `melep --help` and
    `melep inspect` never need it. Checked in a fresh interpreter."""
    script = (
        "import sys, contextlib, io\n"
        "from melep_cli.cli import run\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    codes = [run(['--help']), "
        f"run(['inspect', {str(TARGET)!r}, '-f', 'json']), run(['inspect', {str(ONNX)!r}, '-f', 'json'])]\n"
        "print(*codes, 'scipy.special' in sys.modules)\n"
    )
    assert _printed_by_fresh_interpreter(script) == ["0", "0", "0", "False"]


def _printed_by_fresh_interpreter(script: str) -> list[str]:
    """The words `script` prints, run by a fresh Python (nothing imported yet); it must exit 0."""
    finished = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=False)
    assert finished.returncode == 0, finished.stderr[-2000:]
    return finished.stdout.split()
