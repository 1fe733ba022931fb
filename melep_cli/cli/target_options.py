"""Options that choose a target's records and labels, shared by `rank`, `forward`, `inspect` and `convert`.

Use the Annotated types as parameter annotations and `target_kwargs(...)` to turn the values into
`open_target` keyword arguments. An option the user did not give reaches `open_target` as None (the
`--ptbxl-labels` callback sees to it even where a command declares the default superclass), so that
only options really given for another format are usage errors.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from melep_cli.cli.app import choice_enum, split_names
from melep_cli.targets.opener import TARGET_FORMATS
from melep_cli.targets.ptbxl import LABEL_LEVELS

TARGET_PANEL = "Target"


#: Choices of --target-format (`melep_cli.targets.opener.TARGET_FORMATS`).
TargetFormat = choice_enum("TargetFormat", TARGET_FORMATS, "How to read the target (default: detected from the path).")
#: Choices of --ptbxl-labels (`melep_cli.targets.ptbxl.LABEL_LEVELS`).
PtbxlLabels = choice_enum("PtbxlLabels", LABEL_LEVELS, "Which PTB-XL statements become target labels.")


TargetArgument = Annotated[
    Path,
    typer.Argument(
        help="Labelled ECG records: an HDF5 file, a WFDB / PhysioNet Challenge directory or a PTB-XL directory.",
        show_default=False,
    ),
]
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


def target_kwargs(
    *,
    target_format: TargetFormat | str | None = None,
    labels: str | None = None,
    labels_csv: Path | None = None,
    min_positives: int = 10,
    ptbxl_labels: PtbxlLabels | str | None = None,
    folds: str | None = None,
    sampling_rate: float | None = None,
    strict: bool = False,
    lead_names: str | None = None,
) -> dict[str, Any]:
    """The CLI's target option values as `open_target` keyword arguments.

    None means "not given" (open_target's defaults apply); a value given for a format it does not apply
    to is open_target's usage error.
    """
    return {
        "lead_names": split_names(lead_names),
        "target_format": target_format.value if isinstance(target_format, TargetFormat) else target_format,
        "labels": split_names(labels),
        "labels_csv": labels_csv,
        "min_positives": min_positives,
        "ptbxl_labels": ptbxl_labels.value if isinstance(ptbxl_labels, PtbxlLabels) else ptbxl_labels,
        "folds": folds,
        "sampling_rate": sampling_rate,
        "strict": strict,
    }
