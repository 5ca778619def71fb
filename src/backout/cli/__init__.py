"""The command line: ``backout ...``, built with Typer and Rich.

The top layer. Each module holds one command or group of commands, named after it, and
turns the layers below into tables, JSON (``--json``) and one-line errors. ``output`` holds
what they share, ``app`` the root app and its global options, and ``main`` mounts every
command on it; ``demo_runner`` tells the demo's whole story end to end. It is the only
package that may import every other one.
"""

from backout.cli.main import main

__all__ = ["main"]
