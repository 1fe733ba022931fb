"""`melep score`: MELEP from model outputs and target labels a user already has on disk."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from melep_cli.errors import InputError
from melep_cli.matrices import load_matrix
from melep_cli.metric import Activation, MelepResult, Weighting, melep, probabilities_declared_as

log = logging.getLogger("melep")


def score(
    outputs: str | Path,
    labels: str | Path,
    *,
    activation: Activation = "logits",
    weighting: Weighting = "prevalence",
    label_names: Sequence[str] | None = None,
    source_names: Sequence[str] | None = None,
    source_weights: Sequence[float] | None = None,
) -> MelepResult:
    """MELEP of the outputs in file `outputs` (n x Z) for the labels in file `labels` (n x Y).

    Files are `.npy`, `.csv` (a header row gives names) or `file.h5:dataset`. Names given
    here win over names found in the files.
    """
    output_matrix = load_matrix(outputs)
    label_matrix = load_matrix(labels)
    n_outputs, n_labels = output_matrix.values.shape[0], label_matrix.values.shape[0]
    if n_outputs != n_labels:
        raise InputError(
            f"{output_matrix.source} has {n_outputs} records (shape {output_matrix.values.shape}) but "
            f"{label_matrix.source} has {n_labels} (shape {label_matrix.values.shape})"
        )
    try:
        result = melep(
            output_matrix.values,
            label_matrix.values,
            activation=activation,
            weighting=weighting,
            source_weights=source_weights,
            label_names=label_names if label_names is not None else label_matrix.names,
            source_names=source_names if source_names is not None else output_matrix.names,
        )
    except InputError as error:
        raise InputError(f"{output_matrix.source} / {label_matrix.source}: {error}") from None
    suspicion = probabilities_declared_as(output_matrix.values, activation)
    if suspicion:
        log.warning(f"{output_matrix.source}: {suspicion}; if they are probabilities, use activation probabilities")
    return result
