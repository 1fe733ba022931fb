"""The `melep` command line: parses options, calls the library, renders. Nothing else."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from melep_cli.cli import annotate as _annotate  # noqa: F401  (registers the command)
from melep_cli.cli import cache as _cache  # noqa: F401  (registers the command)
from melep_cli.cli import convert as _convert  # noqa: F401  (registers the command)
from melep_cli.cli import evaluate as _evaluate  # noqa: F401  (registers the command)
from melep_cli.cli import forward as _forward  # noqa: F401  (registers the command)
from melep_cli.cli import inspect as _inspect  # noqa: F401  (registers the command)
from melep_cli.cli import rank as _rank  # noqa: F401  (registers the command)
from melep_cli.cli import report as _report  # noqa: F401  (registers the command)
from melep_cli.cli import score as _score  # noqa: F401  (registers the command)
from melep_cli.cli.app import app, run


def main(argv: Sequence[str] | None = None) -> None:
    """Console-script entry point."""
    sys.exit(run(argv))


__all__ = ["app", "main", "run"]
