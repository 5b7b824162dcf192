"""Administering Clubroom: the ``users``/``rooms``/``sessions``/``backup``/``check`` commands
(``cli.py``) and the running server's side of them (``live.py``)."""
