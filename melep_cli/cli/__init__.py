"""The `melep` command line: parses options, calls the library, renders. Nothing else."""

from __future__ import annotations

from melep_cli.cli import score as _score  # noqa: F401  (registers the command)
from melep_cli.cli.app import app


def main() -> None:
    """Console-script entry point."""
    app()


__all__ = ["app", "main"]
