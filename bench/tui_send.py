"""``python -m bench.tui_send``: time from Enter to one's own message in the terminal client's log.

The client must cost the same per send in a room of 10 messages as in one of
100,000 (issue 11: a send used to redraw the whole log, twice). For each room
size this starts nothing new but the rooms: one ``clubroom-server`` process
(``bench.servers``), rooms filled through the protocol (pipelined, so the
store behind the server does not matter), then the real Textual app headless,
logged in, in the room, with its log holding as much history as it keeps
(the log's cap, or the whole room if smaller). Each sample types a line
through the real key path and stops the clock when the stored message is in
the log and the screen has been refreshed once.

Prints p50 / p99 / max per room size and the ratio of each p50 and p99 to the
smallest room's (target: ≤ 1.2). It is a benchmark, not a test: run it by
hand on a quiet machine; ``--quick`` is a smaller run for a smoke check.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from textual import events
from websockets.asyncio.client import connect

from bench.servers import ServerProcess, start_clubroom, wait_listening
from bench.stats import Latency, ratio
from clubroom_tui.app import ClubroomApp
from clubroom_tui.client import ClubroomClient
from clubroom_tui.screens.dashboard import DashboardScreen
from clubroom_tui.screens.room import RoomScreen
from clubroom_tui.widgets.composer import Composer
from clubroom_tui.widgets.message_log import MAX_ENTRIES, MessageLog
from protocol import (
    MAX_SERVER_FRAME_BYTES,
    SUBPROTOCOL,
    CreateRoom,
    Error,
    Register,
    Send,
    Sent,
    decode_server_frame,
    encode,
)

PASSWORD = "bench-password-1!"
SIZES = (10, 1_000, 100_000)
QUICK_SIZES = (10, 1_000, 5_000)
POLL_SECONDS = 0.0005


def text(frame: Register | CreateRoom | Send) -> str:
    """A request as the text frame the server expects."""
    return encode(frame).decode()


async def fill_room(url: str, room: str, count: int, window: int = 500) -> float:
    """Create ``room`` with ``count`` messages over one pipelined connection; return seconds."""
    started = time.monotonic()
    async with connect(url, subprotocols=[SUBPROTOCOL], max_size=MAX_SERVER_FRAME_BYTES) as ws:
        await ws.send(text(Register(id=1, username=f"filler{uuid.uuid4().hex[:8]}",
                                      password=PASSWORD)))  # fmt: skip
        await ws.recv()
        await ws.send(text(CreateRoom(id=2, room=room)))
        await ws.recv()
        sent = acked = 0
        while acked < count:
            while sent < count and sent - acked < window:
                await ws.send(text(Send(id=3 + sent, room=room, text=f"filler {sent:06d}")))
                sent += 1
            frame = decode_server_frame(await ws.recv())
            if isinstance(frame, Error):
                raise RuntimeError(f"filling {room!r} failed: {frame.message}")
            acked += isinstance(frame, Sent)
    return time.monotonic() - started


def press(app: ClubroomApp, text: str) -> None:
    """Type ``text`` and Enter through the driver, as a terminal would deliver them."""
    driver = app._driver
    assert driver is not None
    for char in text:
        driver.send_message(events.Key(char if char.isalnum() else "space", char))
    driver.send_message(events.Key("enter", "\r"))


async def until(
    condition: Callable[[], object], what: str | Callable[[], str], within: float = 30.0
) -> None:
    """Poll ``condition``; on timeout, say ``what`` (a callable is asked only then)."""
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            said = what() if callable(what) else what
            raise TimeoutError(f"timed out waiting for {said}")
        await asyncio.sleep(POLL_SECONDS)


async def measure_room(url: str, room: str, samples: int) -> list[int]:
    """Time-to-own-message samples (ns) in one room, from a fresh app that joined it."""
    user = f"u{uuid.uuid4().hex[:10]}"
    app = ClubroomApp(ClubroomClient(url))
    latencies: list[int] = []
    async with app.run_test(size=(80, 24)) as pilot:
        await until(lambda: app.client.ready, "the connection")
        await app.client.register(user, PASSWORD)
        await app.client.join_room(room)
        app.post_message(DashboardScreen.RoomChosen(room))  # as a pick on the dashboard would
        await until(
            lambda: isinstance(app.screen, RoomScreen) and app.screen.query(MessageLog),
            "the room screen",
        )
        await pilot.pause()
        log = app.screen.query_one(MessageLog)
        await fill_log(app, log, room)
        for n in range(samples):
            text = f"probe {n} {user}"
            started = time.perf_counter_ns()
            press(app, text)
            await until(
                lambda t=text: last_text(log) == t,
                lambda t=text: f"{t!r} in the log (on screen: {screen_state(app)})",
            )
            await pilot.pause()  # one refresh: the message is drawn
            latencies.append(time.perf_counter_ns() - started)
        await app.client.close()
    return latencies


async def fill_log(app: ClubroomApp, log: MessageLog, room: str) -> None:
    """Page history into the log until it holds what it would keep (its cap, or the room)."""
    state = app.client.rooms[room.casefold()]
    while state.has_older and len(log.shown_ids) < MAX_ENTRIES:
        page = await app.client.history(room, limit=100)
        log.add_older(page.messages)


def screen_state(app: ClubroomApp) -> str:
    """What the room screen says, for a timeout message."""
    screen = app.screen
    notice = screen.query_one("#room-notice").render() if screen.query("#room-notice") else ""
    box = screen.query_one(Composer).value if screen.query(Composer) else ""
    return f"box={box!r} notice={str(notice)!r} state={app.client.state}"


def last_text(log: MessageLog) -> str | None:
    entries = log._entries
    return entries[-1].text if entries and hasattr(entries[-1], "text") else None


async def run(sizes: tuple[int, ...], samples: int, workdir: Path) -> dict[int, Latency]:
    server: ServerProcess = wait_listening(start_clubroom(workdir, workdir / "bench.db"))
    url = f"ws://127.0.0.1:{server.port}"
    try:
        results: dict[int, Latency] = {}
        for size in sizes:
            room = f"r{size}"
            seconds = await fill_room(url, room, size)
            print(f"  filled {room!r} with {size:,} messages in {seconds:.1f} s", flush=True)
            results[size] = Latency.of(await measure_room(url, room, samples))
        return results
    finally:
        server.stop()


def report(results: dict[int, Latency]) -> str:
    smallest = results[min(results)]
    lines = ["room size   p50 ms   p99 ms   max ms   p50 ×   p99 ×"]
    for size, latency in results.items():
        p50x, p99x = ratio(latency.p50_ms, smallest.p50_ms), ratio(latency.p99_ms, smallest.p99_ms)
        lines.append(
            f"{size:>9,} {latency.p50_ms:8.1f} {latency.p99_ms:8.1f} {latency.max_ms:8.1f}"
            f" {p50x or 0:7.2f} {p99x or 0:7.2f}"
        )
    largest = results[max(results)]
    worst = ratio(largest.p50_ms, smallest.p50_ms) or 0
    verdict = "met" if worst <= 1.2 else "NOT met"
    lines.append(f"target p50(largest) ≤ 1.2 × p50(smallest): {worst:.2f} × — {verdict}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.tui_send", description=__doc__)
    parser.add_argument("--samples", type=int, default=100, help="sends per room (default 100)")
    parser.add_argument("--quick", action="store_true", help=f"rooms of {QUICK_SIZES}, 20 sends")
    parser.add_argument("--sizes", type=int, nargs="+", help=f"room sizes (default {SIZES})")
    args = parser.parse_args(argv)
    sizes = tuple(args.sizes) if args.sizes else QUICK_SIZES if args.quick else SIZES
    samples = 20 if args.quick else args.samples
    with tempfile.TemporaryDirectory(prefix="clubroom-tui-bench-") as tmp:
        results = asyncio.run(run(sizes, samples, Path(tmp)))
    print(report(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
