"""Allow ``python -m clubroom_server``."""

from clubroom_server.cli import main

main()
