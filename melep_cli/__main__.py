"""`python -m melep_cli` works like `melep`."""

from melep_cli.cli import main

if __name__ == "__main__":
    main()
