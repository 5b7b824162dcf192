"""The ceiling reference: the least a WebSocket chat server can do in Python.

It relays each text frame to every connection whose request path names the same
room, with ``websockets.broadcast`` (one encoding, no awaiting per client) —
no authentication, no JSON, no storage. Whatever Clubroom costs beyond this is
the price of its features; the benchmark reports Clubroom as a ratio to it.

Run as ``python -m bench.ceiling --port 0``; it prints
``Ceiling listening on ws://HOST:PORT`` once it accepts connections.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http
import signal
from collections import defaultdict

from websockets.asyncio.server import ServerConnection, broadcast, serve
from websockets.http11 import Request, Response

_rooms: defaultdict[str, set[ServerConnection]] = defaultdict(set)


async def _relay(connection: ServerConnection) -> None:
    """Put the connection in the room named by its path and relay its text frames."""
    room = _rooms[connection.request.path if connection.request else "/"]
    room.add(connection)
    try:
        async for message in connection:
            if isinstance(message, str):
                broadcast(room, message)
    finally:
        room.discard(connection)


def _healthz(connection: ServerConnection, request: Request) -> Response | None:
    """Answer ``GET /healthz`` like Clubroom does, so both are probed the same way."""
    if request.path == "/healthz":
        return connection.respond(http.HTTPStatus.OK, "ok\n")
    return None


async def _serve(host: str, port: int) -> None:
    stop = asyncio.get_running_loop().create_future()
    for signum in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(signum, stop.set_result, None)
    async with serve(_relay, host, port, compression=None, process_request=_healthz) as server:
        bound = next(iter(server.sockets)).getsockname()[1]
        print(f"Ceiling listening on ws://{host}:{bound}", flush=True)
        await stop


def main() -> None:
    """Parse flags and serve until SIGINT/SIGTERM."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument(
        "--loop", choices=("uvloop", "asyncio"), default="asyncio", help="event loop to use"
    )
    args = parser.parse_args()
    runner = asyncio.run
    if args.loop == "uvloop":
        import uvloop

        runner = uvloop.run
    with contextlib.suppress(KeyboardInterrupt):
        runner(_serve(args.host, args.port))


if __name__ == "__main__":
    main()
