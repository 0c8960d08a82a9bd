"""``python -m recompose`` runs the command line."""

from recompose.cli.main import main

main()
