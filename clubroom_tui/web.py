"""``clubroom web``: the very same terminal client, served to browsers by textual-serve.

Each browser tab gets its own ``clubroom connect`` process (textual-serve
starts one per page), so tabs share nothing. Those processes run with
``--no-remember``: on a machine serving many visitors a token file would be
shared by all of them, so nobody's session is ever written to disk here.
"""

from __future__ import annotations

import shlex
import sys

from textual_serve.server import Server


def client_command(server_url: str, cafile: str | None = None) -> str:
    """The shell command textual-serve runs for each browser tab."""
    argv = [sys.executable, "-m", "clubroom_tui", "connect", "--no-remember"]
    if cafile:
        argv += ["--cafile", cafile]
    argv.append(server_url)
    return shlex.join(argv)


def build_web_server(
    host: str,
    port: int,
    server_url: str,
    *,
    public_url: str | None = None,
    cafile: str | None = None,
) -> Server:
    """A textual-serve server for the Clubroom client (not started)."""
    display_host = f"[{host}]" if ":" in host else host
    return Server(
        client_command(server_url, cafile),
        host=host,
        port=port,
        title="Clubroom",
        public_url=public_url or f"http://{display_host}:{port}",
    )
