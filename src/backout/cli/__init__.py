"""The command line: ``backout ...``, built with Typer and Rich.

The top layer. Each module holds one group of commands and turns the layers below into
tables, JSON (``--json``) and one-line errors; ``demo`` runs the whole story end to end. It
is the only package that may import every other one.
"""

from backout.cli.app import main

__all__ = ["main"]
