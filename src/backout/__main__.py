"""``python -m backout``: the command line."""

from backout.cli import main

main()
