"""``python -m backout``: the command line."""

from backout.cli.app import main

main()
