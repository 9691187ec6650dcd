"""``python -m streams`` runs the ``fraudstream`` command."""

from streams.cli import main

main()
