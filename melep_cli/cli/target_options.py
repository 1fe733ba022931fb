"""Options that choose a target's records and labels, shared by `rank`, `forward`, `inspect` and `convert`.

A command takes them as one `TargetOptions` through `@takes_target_options`. An option the user did
not give reaches TargetOptions as None (the `--ptbxl-labels` callback sees to it although help shows
the default superclass), so that only options really given for another format are usage errors.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from melep_cli.cli.app import choice_enum, cli_errors
from melep_cli.targets.opener import TARGET_FORMATS, TargetOptions
from melep_cli.targets.ptbxl import LABEL_LEVELS

_Command = TypeVar("_Command", bound=Callable[..., Any])

TARGET_PANEL = "Target"


#: Choices of --target-format (`melep_cli.targets.opener.TARGET_FORMATS`).
TargetFormat = choice_enum("TargetFormat", TARGET_FORMATS, "How to read the target (default: detected from the path).")
#: Choices of --ptbxl-labels (`melep_cli.targets.ptbxl.LABEL_LEVELS`).
PtbxlLabels = choice_enum("PtbxlLabels", LABEL_LEVELS, "Which PTB-XL statements become target labels.")


TARGET_HELP = "Labelled ECG records: an HDF5 file, a WFDB / PhysioNet Challenge directory or a PTB-XL directory."
TargetArgument = Annotated[Path, typer.Argument(help=TARGET_HELP, show_default=False)]
#: The target of `rank` and `forward` (an option there, beside --checkpoints).
TargetOption = Annotated[Path, typer.Option("--target", "-t", metavar="PATH", help=TARGET_HELP, show_default=False)]
TargetFormatOption = Annotated[
    TargetFormat | None,
    typer.Option(
        "--target-format",
        help="Read the target as this format instead of detecting it from the path.",
        case_sensitive=False,
        rich_help_panel=TARGET_PANEL,
    ),
]
LabelsOption = Annotated[
    str | None,
    typer.Option(
        "--labels",
        metavar="LIST",
        help=(
            "Comma-separated target labels: names, Challenge abbreviations or SNOMED CT codes, PTB-XL statements "
            "or classes. Default: every label with at least --min-positives positives and one negative."
        ),
        rich_help_panel=TARGET_PANEL,
    ),
]
LabelsCsvOption = Annotated[
    Path | None,
    typer.Option(
        "--labels-csv",
        metavar="FILE",
        help="CSV with one row per record id and one 0/1 column per label (e.g. CODE-15%'s exams.csv); joined by id. "
        "HDF5 and WFDB targets only.",
        rich_help_panel=TARGET_PANEL,
    ),
]
MinPositivesOption = Annotated[
    int,
    typer.Option(
        "--min-positives",
        metavar="N",
        min=1,
        help="Default label set: labels with at least this many positive records (and one negative).",
        rich_help_panel=TARGET_PANEL,
    ),
]


def given_only(ctx: typer.Context, param: typer.CallbackParam, value: Any) -> Any:
    """The option's value when the user gave it, else None: a default must never count as given.

    A target option given for a format it does not apply to is an error (`open_target`), so an option
    shown with a default (`--ptbxl-labels`, default superclass) must tell the two apart.
    """
    source = ctx.get_parameter_source(param.name) if param.name else None
    return None if source is None or source.name == "DEFAULT" else value


PtbxlLabelsOption = Annotated[
    PtbxlLabels | None,
    typer.Option(
        "--ptbxl-labels",
        help="PTB-XL labels: diagnostic superclasses (the default), subclasses, diagnostic/form/rhythm statements, "
        "or all. PTB-XL targets only.",
        case_sensitive=False,
        callback=given_only,
        rich_help_panel=TARGET_PANEL,
    ),
]
FoldsOption = Annotated[
    str | None,
    typer.Option(
        "--folds",
        metavar="LIST",
        help="PTB-XL strat_fold selection, e.g. '9,10' or '1-8'. PTB-XL targets only.",
        rich_help_panel=TARGET_PANEL,
    ),
]
TargetSamplingRateOption = Annotated[
    float | None,
    typer.Option(
        "--sampling-rate",
        metavar="HZ",
        help="The rate the records are read at. PTB-XL: read the 100 or 500 Hz files (default 100). HDF5: the rate "
        "of a file without the attribute. Not for WFDB (headers give the rate).",
        rich_help_panel=TARGET_PANEL,
    ),
]
StrictOption = Annotated[
    bool,
    typer.Option(
        "--strict",
        help="Fail on the first unreadable, NaN or flat record (or unlabelled id) instead of skipping it.",
        rich_help_panel=TARGET_PANEL,
    ),
]


LeadNamesOption = Annotated[
    str | None,
    typer.Option(
        "--lead-names",
        metavar="LIST",
        help="The target's lead names in order, replacing what its files say (e.g. for leads exported as "
        "L1..L12). Common other names are understood anyway: DI/DII/DIII, MLII, AVR, 'Lead II'.",
        show_default=False,
        rich_help_panel=TARGET_PANEL,
    ),
]


#: The target options every command that opens a target takes, in the order help lists them:
#: name -> (annotation, default). The names are TargetOptions' fields.
TARGET_OPTIONS: dict[str, tuple[Any, Any]] = {
    "target_format": (TargetFormatOption, None),
    "labels": (LabelsOption, None),
    "labels_csv": (LabelsCsvOption, None),
    "min_positives": (MinPositivesOption, TargetOptions().min_positives),
    "ptbxl_labels": (PtbxlLabelsOption, PtbxlLabels.superclass),  # shown as the default; given_only makes it None
    "folds": (FoldsOption, None),
    "sampling_rate": (TargetSamplingRateOption, None),
    "strict": (StrictOption, False),
    "lead_names": (LeadNamesOption, None),
}


def takes_target_options(command: _Command) -> _Command:
    """Declare the target options once for every command that opens a target.

    `command` has a parameter `target_options` (annotated `TargetOptions | None`, default None); the
    returned function has TARGET_OPTIONS' parameters in its place, as Typer reads them, and calls
    `command` with the one TargetOptions they make (a bad value is one error line naming the flag, as
    `cli_errors` shows every UsageError). Apply it below `@app.command`.
    """
    hints = typing.get_type_hints(command, include_extras=True)
    signature = inspect.signature(command)
    parameters: list[inspect.Parameter] = []
    for parameter in signature.parameters.values():
        if parameter.name != "target_options":
            parameters.append(parameter.replace(annotation=hints[parameter.name]))
            continue
        parameters.extend(
            inspect.Parameter(name, parameter.kind, annotation=annotation, default=default)
            for name, (annotation, default) in TARGET_OPTIONS.items()
        )
    if len(parameters) == len(signature.parameters):
        raise TypeError(f"{command.__name__} has no target_options parameter")

    def with_target_options(**values: Any) -> Any:
        with cli_errors(bool(values.get("debug"))):
            options = TargetOptions(**{name: values.pop(name) for name in TARGET_OPTIONS})
        return command(**values, target_options=options)

    # The annotations are objects, not strings: Typer and `_roles` (which finds --labels-csv as an input
    # that --output may not replace) read them off this function.
    with_target_options.__signature__ = signature.replace(parameters=parameters)  # type: ignore[attr-defined]
    with_target_options.__annotations__ = {parameter.name: parameter.annotation for parameter in parameters}
    for attribute in ("__module__", "__name__", "__qualname__", "__doc__"):
        setattr(with_target_options, attribute, getattr(command, attribute))
    return typing.cast(_Command, with_target_options)
