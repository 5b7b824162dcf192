"""The systemd notify protocol (``sd_notify``): READY, RELOADING, STOPPING, WATCHDOG.

Under ``Type=notify`` (or ``notify-reload``) systemd passes a datagram socket
in ``NOTIFY_SOCKET``; a service says how it is doing by sending
``KEY=VALUE`` lines to it. The protocol is a dozen lines, so it is written
here rather than pulled in as a dependency. Outside systemd every call does
nothing. A failed notification is logged once and never stops the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Mapping

log = logging.getLogger(__name__)


class Notifier:
    """Sends state changes to the service manager, if there is one."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        self._address = _socket_address(env.get("NOTIFY_SOCKET", ""))
        self.watchdog_interval = _watchdog_interval(env)
        self._warned = False

    @property
    def enabled(self) -> bool:
        return self._address is not None

    def notify(self, *fields: str) -> None:
        """Send ``KEY=VALUE`` fields in one datagram."""
        if self._address is None:
            return
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.sendto("\n".join(fields).encode(), self._address)
        except OSError as exc:
            if not self._warned:
                self._warned = True
                log.warning("cannot notify the service manager: %s", exc)

    def ready(self, status: str) -> None:
        self.notify("READY=1", f"STATUS={status}", f"MAINPID={os.getpid()}")

    def reloading(self) -> None:
        # MONOTONIC_USEC lets Type=notify-reload match this to the SIGHUP it sent.
        now_usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self.notify("RELOADING=1", f"MONOTONIC_USEC={now_usec}")

    def stopping(self, status: str) -> None:
        self.notify("STOPPING=1", f"STATUS={status}")

    async def watchdog_forever(self, stopped: asyncio.Event) -> None:
        """Tell systemd the event loop is alive, twice per ``WatchdogSec``, until ``stopped``.

        The ping comes from the loop itself, so a loop that hangs stops
        pinging and systemd restarts the service. Stops by flag, not by
        cancellation.
        """
        if self.watchdog_interval is None:
            return
        while not stopped.is_set():
            self.notify("WATCHDOG=1")
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.watchdog_interval):
                    await stopped.wait()


def _socket_address(value: str) -> str | bytes | None:
    """A path, or an abstract socket (``@name`` → ``\\0name``); None when unset."""
    if not value:
        return None
    if value.startswith("@"):
        return b"\0" + value[1:].encode()
    if value.startswith("/"):
        return value
    return None  # vsock and other families: not supported, quietly ignored


def _watchdog_interval(env: Mapping[str, str]) -> float | None:
    """Half of ``WatchdogSec`` when the watchdog is meant for this process, else None."""
    usec = env.get("WATCHDOG_USEC", "")
    pid = env.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    if pid and pid != str(os.getpid()):
        return None
    return int(usec) / 2_000_000
