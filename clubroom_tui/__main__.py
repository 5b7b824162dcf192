"""``python -m clubroom_tui`` runs the ``clubroom`` command."""

from clubroom_tui.cli import main

main()
