"""One name, one definition: every CLI choice list is the library's tuple, and shared names are one object."""

from __future__ import annotations

import enum
import typing
from typing import Any

import pytest

from melep_cli import matrices, preprocess
from melep_cli.checkpoints import metadata
from melep_cli.checkpoints.devices import PRECISIONS
from melep_cli.cli import app
from melep_cli.cli.annotate import AggregateName, CropName, DtypeName, LayoutName, MissingLeadsName, NormalizationName
from melep_cli.cli.app import ActivationName, WeightingName
from melep_cli.cli.checkpoint_options import PrecisionName
from melep_cli.cli.target_options import PtbxlLabels, TargetFormat
from melep_cli.metric import ACTIVATIONS, WEIGHTINGS
from melep_cli.targets import base, opener
from melep_cli.targets.ptbxl import LABEL_LEVELS

#: Each CLI choice enum and the library tuple it is built from.
ENUMS: list[tuple[type[enum.Enum], tuple[str, ...]]] = [
    (ActivationName, ACTIVATIONS),
    (WeightingName, WEIGHTINGS),
    (LayoutName, preprocess.LAYOUTS),
    (NormalizationName, preprocess.NORMALIZATIONS),
    (DtypeName, preprocess.DTYPES),
    (CropName, preprocess.CROPS),
    (AggregateName, preprocess.AGGREGATES),
    (MissingLeadsName, preprocess.MISSING_LEADS),
    (TargetFormat, opener.TARGET_FORMATS),
    (PtbxlLabels, LABEL_LEVELS),
    (PrecisionName, PRECISIONS),
]

#: (command, parameter) of a choice option, and the library tuple of its choices.
OPTIONS: list[tuple[str, str, tuple[str, ...]]] = [
    ("score", "activation", ACTIVATIONS),
    ("score", "weighting", WEIGHTINGS),
    ("rank", "weighting", WEIGHTINGS),
    ("annotate", "activation", ACTIVATIONS),
    ("annotate", "layout", preprocess.LAYOUTS),
    ("annotate", "normalization", preprocess.NORMALIZATIONS),
    ("annotate", "dtype", preprocess.DTYPES),
    ("annotate", "crop", preprocess.CROPS),
    ("annotate", "aggregate", preprocess.AGGREGATES),
    ("annotate", "missing_leads", preprocess.MISSING_LEADS),
    ("rank", "target_format", opener.TARGET_FORMATS),
    ("inspect", "target_format", opener.TARGET_FORMATS),
    ("rank", "ptbxl_labels", LABEL_LEVELS),
    ("convert", "ptbxl_labels", LABEL_LEVELS),
    ("rank", "precision", PRECISIONS),
    ("forward", "precision", PRECISIONS),
]


def _choice_enum(annotation: Any) -> type[enum.Enum]:
    """The Enum of an `Annotated[Enum | None, typer.Option(...)]` parameter annotation."""
    inner = typing.get_args(annotation)[0]
    (choices,) = [arg for arg in typing.get_args(inner) or (inner,) if isinstance(arg, enum.EnumType)]
    return choices


@pytest.mark.parametrize(("choices", "library"), ENUMS, ids=[choices.__name__ for choices, _ in ENUMS])
def test_cli_enum_is_the_library_tuple(choices: type[enum.Enum], library: tuple[str, ...]) -> None:
    """Members, in order, are the library's values, each named as its value."""
    assert tuple(member.value for member in choices) == library
    assert tuple(member.name for member in choices) == library


@pytest.mark.parametrize(("command", "parameter", "library"), OPTIONS, ids=[f"{c} {p}" for c, p, _ in OPTIONS])
def test_cli_option_choices_are_the_library_tuple(command: str, parameter: str, library: tuple[str, ...]) -> None:
    """The registered command's option takes exactly the library's tuple."""
    (callback,) = [info.callback for info in app.registered_commands if info.name == command]
    annotation = typing.get_type_hints(callback, include_extras=True)[parameter]
    assert tuple(member.value for member in _choice_enum(annotation)) == library


def test_shared_names_are_one_object() -> None:
    """STANDARD_LEADS, HDF5_SUFFIXES and the metadata's outputs are defined once and imported elsewhere."""
    assert base.STANDARD_LEADS is preprocess.STANDARD_LEADS
    assert opener.HDF5_SUFFIXES is matrices.HDF5_SUFFIXES
    assert ".he5" in matrices.HDF5_SUFFIXES
    assert metadata.OUTPUTS is ACTIVATIONS
