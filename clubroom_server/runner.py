"""``serve``'s life in one process: signals, reload, drain, and the service manager.

SIGINT/SIGTERM drain and stop (exit 0); SIGHUP re-reads the configuration
and applies what can change while running. systemd hears READY once
clients can connect, RELOADING/READY around a reload, STOPPING when the
drain starts, and a watchdog ping from the event loop itself.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable

from clubroom_server import eventloop, metrics
from clubroom_server.app import Clubroom
from clubroom_server.collector import freeze_startup, watch_pauses
from clubroom_server.config import Settings
from clubroom_server.store import describe_url
from clubroom_server.systemd import Notifier

log = logging.getLogger(__name__)

Reload = Callable[[], Settings]
"""Reads the configuration again (file, environment, flags) into new settings."""


class Signals:
    """Signals turned into flags the main loop acts on, one at a time, in order."""

    def __init__(self) -> None:
        self.stop = asyncio.Event()
        self.reload = False
        self.wake = asyncio.Event()

    def install(self, loop: asyncio.AbstractEventLoop) -> None:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, self._stop)
        loop.add_signal_handler(signal.SIGHUP, self._reload)

    def _stop(self) -> None:
        self.stop.set()
        self.wake.set()

    def _reload(self) -> None:
        self.reload = True
        self.wake.set()


async def run(settings: Settings, reload: Reload, say: Callable[[str], None]) -> None:
    """Serve until SIGINT/SIGTERM; reload on SIGHUP; drain and close before returning."""
    signals = Signals()
    signals.install(asyncio.get_running_loop())
    notifier = Notifier()
    app = await Clubroom.start(settings)
    frozen = freeze_startup()
    watch_pauses(metrics.gc_paused)
    log.debug("%d start-up objects frozen out of the garbage collector's reach", frozen)
    say(f"Clubroom listening on {app.url}")
    say(f"Database: {describe_url(settings.db)}")
    say(f"Event loop: {eventloop.running()}")
    log.info("running on the %s event loop", eventloop.running())
    if app.metrics is not None:
        say(f"Metrics: http://{app.metrics.address}/metrics")
    notifier.ready(f"Serving on {app.url}")
    watchdog = asyncio.create_task(notifier.watchdog_forever(signals.stop), name="watchdog")
    try:
        while not signals.stop.is_set():
            await signals.wake.wait()
            signals.wake.clear()
            if signals.reload and not signals.stop.is_set():
                signals.reload = False
                _reload(app, reload, notifier)
    finally:
        signals.stop.set()  # also ends the watchdog when we leave by an exception
        notifier.stopping("Draining: asking clients to reconnect later")
        say("Shutting down…")
        await app.close()
        await watchdog


def _reload(app: Clubroom, reload: Reload, notifier: Notifier) -> None:
    """Apply new settings; a bad file or certificate is logged and changes nothing."""
    notifier.reloading()
    try:
        app.reload(reload())
    except Exception as exc:  # the operator's typo must not stop a running server
        log.error("reload failed, keeping the running configuration: %s", _describe(exc))
    notifier.ready(f"Serving on {app.url}")


def _describe(exc: BaseException) -> str:
    message = getattr(exc, "message", None) or getattr(exc, "strerror", None) or str(exc)
    return f"{type(exc).__name__}: {message}"
