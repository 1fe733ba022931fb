"""Options shared by every command that loads checkpoints (`inspect`, `annotate`, `rank`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from melep_cli.checkpoints.checkpoint import DEFAULT_BATCH_SIZE, DEFAULT_CUDA_BATCH_SIZE
from melep_cli.checkpoints.devices import DEVICE_HELP, PRECISIONS
from melep_cli.cli.app import choice_enum

DeviceOption = Annotated[str, typer.Option("--device", "-d", help=f"Where models run: {DEVICE_HELP}.")]
StrictDeviceOption = Annotated[
    bool,
    typer.Option("--strict-device", help="Fail instead of falling back to the CPU when --device cuda is unavailable."),
]
BatchSizeOption = Annotated[
    int | None,
    typer.Option(
        "--batch-size",
        "-b",
        min=1,
        help=f"Records per forward pass (default {DEFAULT_BATCH_SIZE} on the CPU, {DEFAULT_CUDA_BATCH_SIZE} on CUDA); "
        "halved automatically when memory runs out.",
        show_default=False,
    ),
]
CheckpointsOption = Annotated[
    list[Path],
    typer.Option(
        "--checkpoints",
        "-c",
        help="A directory of checkpoints or a checkpoint file (.onnx, .pt, .pth, .ts, .torchscript); repeatable.",
    ),
]
RecursiveOption = Annotated[
    bool, typer.Option("--recursive", "-r", help="Search --checkpoints directories and their subdirectories.")
]
ThreadsOption = Annotated[
    int | None,
    typer.Option(
        "--threads",
        min=1,
        help="CPU threads of each forward pass (torch and ONNX Runtime intra-op threads; default: the cores "
        "available). Records are decoded and prepared on one producer thread, whatever this is. "
        "On a machine busy with other jobs, or with several ranks at once, --threads 1 is often much faster.",
        show_default=False,
    ),
]


#: Choices of --precision (`melep_cli.checkpoints.devices.PRECISIONS`).
PrecisionName = choice_enum("PrecisionName", PRECISIONS, "Choices of --precision.")
PrecisionOption = Annotated[
    PrecisionName,
    typer.Option(
        "--precision",
        help="Arithmetic of the forward pass: float32 (exact), or bfloat16 / float16 for speed at about 3 "
        "significant digits: TorchScript checkpoints on CUDA, or bfloat16 on a CPU with AVX512-BF16 or AMX "
        "(about 1.9x faster for a ResNet); elsewhere float32, with a warning.",
    ),
]
