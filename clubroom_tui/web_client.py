"""The client process ``clubroom web`` starts for each browser tab: ``clubroom`` plus a watchdog.

Run as ``python -m clubroom_tui.web_client connect --no-remember URL``. It
is the ordinary ``clubroom`` command, except that it ends itself when the
web host that started it is gone: a web host killed outright (SIGKILL, the
OOM killer) cannot stop its tabs' clients, and Textual's web driver does not
end the app when its input closes, so each client would otherwise live on,
still logged in and reconnecting to the chat server, with nobody behind it.
"""

from __future__ import annotations

import os
import signal
import threading
import time

WATCH_SECONDS = 1.0
"""How often the client checks that the web host is still its parent."""

WEB_HOST_PID_ENV = "CLUBROOM_WEB_HOST_PID"
"""Set by ``clubroom web``: its own process id (read at start-up, it could already be gone)."""

FORCE_EXIT_SECONDS = 3.0
"""After SIGTERM, how long before the process is ended regardless."""


def watch_parent(parent: int, interval: float = WATCH_SECONDS) -> threading.Thread:
    """Start a daemon thread that ends this process once ``parent`` is no longer its parent."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(interval)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(FORCE_EXIT_SECONDS)
        os._exit(1)  # SIGTERM was handled and did not end us: end now

    thread = threading.Thread(target=watch, name="clubroom-web-parent-watch", daemon=True)
    thread.start()
    return thread


def main() -> None:
    from clubroom_tui.cli import main as clubroom

    watch_parent(web_host_pid())
    clubroom()


def web_host_pid() -> int:
    """The web host's process id: as it said, since by now we may have been orphaned already."""
    try:
        return int(os.environ[WEB_HOST_PID_ENV])
    except (KeyError, ValueError):
        return os.getppid()


if __name__ == "__main__":
    main()
