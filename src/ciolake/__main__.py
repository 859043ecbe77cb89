"""``python -m ciolake``: the command line."""

from ciolake.cli.main import main

main()
