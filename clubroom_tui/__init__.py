"""Clubroom's terminal client: a protocol client (``client``) and a Textual app on top."""
