"""``clubroom web``: the very same terminal client, served to browsers by textual-serve.

Each browser tab gets its own ``clubroom connect`` process (textual-serve
starts one per page), so tabs share nothing. Those processes run with
``--no-remember``: on a machine serving many visitors a token file would be
shared by all of them, so nobody's session is ever written to disk here.

On top of textual-serve this module adds what a public page needs:

* each tab's client tells the chat server its visitor's own address
  (``web_forwarding``), so one visitor's failed logins lock out only them;
* stopping the web host closes every tab at once, and each tab says
  "The Clubroom web client stopped" instead of looking connected;
* the page loads nothing from any other origin (its own page template, the
  font textual-serve ships, a favicon) and forbids it with a
  Content-Security-Policy.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shlex
import sys
from asyncio.subprocess import Process
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any

import textual_serve
from aiohttp import WSCloseCode, web
from textual_serve.app_service import AppService
from textual_serve.server import Server, to_int

from clubroom_tui.web_client import WEB_HOST_PID_ENV
from clubroom_tui.web_forwarding import (
    FORWARDED_FOR_ENV,
    Network,
    parse_networks,
    visitor_address,
)
from protocol import FORWARDED_FOR_HEADER

log = logging.getLogger("clubroom.web")

ASSETS = Path(__file__).with_name("web_assets")
TEXTUAL_SERVE_STATIC = Path(textual_serve.__file__).with_name("static")

STOPPED_REASON = b"the Clubroom web client stopped"
"""Sent with close code 1001 (going away) to every tab when the web host stops."""

CLIENT_ENDED_REASON = b"the client ended unexpectedly"
"""Sent with close code 1011 when a tab's client process dies without quitting."""

QUIT_GRACE_SECONDS = 5.0
"""How long a tab's client gets to quit cleanly before it is killed."""

SOCKET_CLOSE_SECONDS = 2.0
"""How long to wait for a browser to answer a close (a gone browser never does)."""

MALFORMED = (ValueError, KeyError, TypeError, IndexError, AssertionError, AttributeError)
"""What textual-serve's message loop raises on a browser message it cannot read."""

CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'self'",
        # the page's own inline bootstrap; textual.js sets inline styles
        "script-src 'self' 'unsafe-inline'",
        "style-src 'self' 'unsafe-inline'",
        "img-src 'self' data:",
        "font-src 'self'",
        "connect-src 'self'",
        "frame-ancestors 'none'",
        "base-uri 'none'",
        "form-action 'none'",
    )
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}


def client_command(server_url: str, cafile: str | None = None) -> str:
    """The shell command textual-serve runs for each browser tab."""
    argv = [sys.executable, "-m", "clubroom_tui.web_client", "connect", "--no-remember"]
    if cafile:
        argv += ["--cafile", cafile]
    argv.append(server_url)
    return shlex.join(argv)


class VisitorAppService(AppService):
    """One tab's client process, told who its visitor is, and stopped for sure."""

    def __init__(
        self,
        command: str,
        *,
        visitor: str | None,
        close_with: Callable[[int, bytes], Awaitable[object]],
        **options: Any,
    ) -> None:
        super().__init__(command, **options)
        self.remote_close_with = close_with
        self.visitor = visitor
        self._stopping: asyncio.Future[None] | None = None

    def _build_environment(self, width: int = 80, height: int = 24) -> dict[str, str]:
        environment = super()._build_environment(width=width, height=height)
        # never inherit a value from the web host's own environment
        environment.pop(FORWARDED_FOR_ENV, None)
        if self.visitor is not None:
            environment[FORWARDED_FOR_ENV] = self.visitor
        environment[WEB_HOST_PID_ENV] = str(os.getpid())
        return environment

    async def _open_app_process(self, width: int = 80, height: int = 24) -> Process:
        """textual-serve's, without a shell and in a session of its own.

        Without a shell in between, the client's parent is the web host, so
        it notices when the web host is gone (``web_client``). In its own
        session, Ctrl+C in the web host's terminal (which signals the whole
        process group) reaches only the web host, which stops the clients in
        order after telling their tabs why.
        """
        self._process = process = await asyncio.create_subprocess_exec(
            *shlex.split(self.command),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=self._build_environment(width=width, height=height),
            start_new_session=True,
        )
        assert process.stdin is not None
        self._stdin = process.stdin
        return process

    async def run(self) -> None:
        """Relay the client's output; when the client is gone, close its tab.

        textual-serve leaves the tab open when a client dies without saying
        goodbye (killed, crashed): the tab would look alive while keys go
        nowhere. A client that quits normally has closed it already.
        """
        await super().run()
        with contextlib.suppress(Exception):
            await self.remote_close_with(WSCloseCode.INTERNAL_ERROR, CLIENT_ENDED_REASON)

    async def stop(self) -> None:
        """Ask the client to quit; kill it if it has not within the grace period.

        textual-serve waits for the process forever, so one stuck client
        would hold up stopping the web host for everyone. Both the tab's
        handler and the shutdown stop a session: each waits for the same end.
        """
        if self._stopping is None:
            self._stopping = asyncio.ensure_future(self._stop_once())
        await self._stopping

    async def _stop_once(self) -> None:
        task, self._task = self._task, None
        if task is None:
            return
        await self._download_manager.cancel_app_downloads(app_service_id=self.app_service_id)
        await self.send_meta({"type": "quit"})
        done, _ = await asyncio.wait({task}, timeout=QUIT_GRACE_SECONDS)
        if not done and self._process is not None:
            log.warning("a web client did not quit within %.0f s; killing it", QUIT_GRACE_SECONDS)
            with contextlib.suppress(ProcessLookupError):
                self._process.kill()
        await task
        if self._process is not None:
            await self._process.wait()


class VisitorSession:
    """A browser tab's socket and the client process behind it."""

    def __init__(self, websocket: web.WebSocketResponse, service: VisitorAppService) -> None:
        self.websocket = websocket
        self.service = service

    async def close_for_shutdown(self) -> None:
        """Tell the tab the web client stopped, then stop its client."""
        with contextlib.suppress(Exception):
            await self.websocket.close(code=WSCloseCode.GOING_AWAY, message=STOPPED_REASON)
        await self.service.stop()


class ClubroomWebServer(Server):
    """textual-serve's server with per-visitor addresses, a clean stop and a self-contained page."""

    def __init__(
        self,
        command: str,
        *,
        host: str,
        port: int,
        public_url: str,
        trusted_proxies: tuple[Network, ...] = (),
    ) -> None:
        super().__init__(
            command,
            host=host,
            port=port,
            title="Clubroom",
            public_url=public_url,
            statics_path=TEXTUAL_SERVE_STATIC,
            templates_path=ASSETS / "templates",
        )
        self.trusted_proxies = trusted_proxies
        self.sessions: set[VisitorSession] = set()

    async def _make_app(self) -> web.Application:
        app = await super()._make_app()
        app.router.add_get("/favicon.ico", self.handle_favicon, name="favicon")
        app.on_response_prepare.append(add_security_headers)
        return app

    async def handle_favicon(self, request: web.Request) -> web.FileResponse:
        return web.FileResponse(
            ASSETS / "favicon.ico", headers={"Content-Type": "image/vnd.microsoft.icon"}
        )

    def visitor_of(self, request: web.Request) -> str | None:
        """The browser's address (behind our own trusted proxies: the one they name)."""
        return visitor_address(
            request.remote, request.headers.getall(FORWARDED_FOR_HEADER, []), self.trusted_proxies
        )

    async def handle_websocket(self, request: web.Request) -> web.WebSocketResponse:
        """textual-serve's handler, with the visitor's address and a registry of open tabs."""
        websocket = web.WebSocketResponse(heartbeat=15, timeout=SOCKET_CLOSE_SECONDS)
        width = to_int(request.query.get("width", "80"), 80)
        height = to_int(request.query.get("height", "24"), 24)
        service = VisitorAppService(
            self.command,
            visitor=self.visitor_of(request),
            write_bytes=websocket.send_bytes,
            write_str=websocket.send_str,
            close=websocket.close,
            close_with=lambda code, reason: websocket.close(code=code, message=reason),
            download_manager=self.download_manager,
            debug=self.debug,
        )
        session = VisitorSession(websocket, service)
        self.sessions.add(session)
        try:
            await websocket.prepare(request)
            await service.start(width, height)
            await self._process_messages(websocket, service)
        except MALFORMED:
            log.info("closing a web session: the browser sent a malformed message")
            await websocket.close(code=WSCloseCode.PROTOCOL_ERROR)
        except asyncio.CancelledError:
            await websocket.close(code=WSCloseCode.GOING_AWAY, message=STOPPED_REASON)
        except Exception:
            log.exception("a web session failed")
        finally:
            self.sessions.discard(session)
            await service.stop()
        return websocket

    async def on_startup(self, app: web.Application) -> None:
        """Say nothing here: ``clubroom web`` prints its own banner."""

    async def on_shutdown(self, app: web.Application) -> None:
        """Close every open tab at once, saying why, and stop every client process."""
        sessions = list(self.sessions)
        if sessions:
            log.info("stopping: closing %d web session(s)", len(sessions))
        await asyncio.gather(*(session.close_for_shutdown() for session in sessions))


async def add_security_headers(request: web.Request, response: web.StreamResponse) -> None:
    """Forbid the page to load anything from, or leak its address to, another origin."""
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)


def build_web_server(
    host: str,
    port: int,
    server_url: str,
    *,
    public_url: str | None = None,
    cafile: str | None = None,
    trusted_proxies: Iterable[str] = (),
) -> ClubroomWebServer:
    """A web server for the Clubroom client (not started).

    Raises ValueError if a trusted proxy is not an address or network.
    """
    display_host = f"[{host}]" if ":" in host else host
    return ClubroomWebServer(
        client_command(server_url, cafile),
        host=host,
        port=port,
        public_url=public_url or f"http://{display_host}:{port}",
        trusted_proxies=parse_networks(trusted_proxies),
    )
