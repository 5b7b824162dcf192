"""A load-generator process: owns many raw connections and runs commands on them.

The coordinator (``bench.run``) never touches a socket. It sends small
commands over a pipe — open these connections, send these requests, offer
this rate for that long, collect what arrived — and each worker runs them on
its own event loop (uvloop when available), so the load can be spread over
several processes and the coordinator's bookkeeping never delays a frame.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import threading
import time
import traceback
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

import msgspec

from bench.wsclient import FrameClient, Recorder, connect, stamped_text

HOST = "127.0.0.1"
_TICK_SECONDS = 0.002
_BEHIND_NS = 20_000_000  # a send this late was the load generator's fault


@dataclass(frozen=True)
class ClientSpec:
    """How to open one connection: its global id, server port, path and dialect."""

    cid: int
    port: int
    path: str = "/"
    subprotocol: str | None = None
    json_mode: bool = True


def cpu_seconds() -> float:
    """This process's CPU time (user + system), to show the load generator's own load."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class Worker:
    """Holds this process's connections and executes the coordinator's commands."""

    def __init__(self, conn: Connection, index: int) -> None:
        self.conn = conn
        self.index = index
        self.clients: dict[int, FrameClient] = {}
        self.recorder = Recorder()
        self.side_recorder = Recorder()  # for connections whose frames are not measured
        self.stop: asyncio.Future[None] | None = None
        self._run_cpu = 0.0
        self._nonce = 0
        self._halt = False
        self._commands: dict[str, Callable[..., Awaitable[Any]]] = {
            "open": self.cmd_open,
            "request": self.cmd_request,
            "arm": self.cmd_arm,
            "run": self.cmd_run,
            "halt": self.cmd_halt,
            "collect": self.cmd_collect,
            "fill": self.cmd_fill,
            "close": self.cmd_close,
            "status": self.cmd_status,
            "exit": self.cmd_exit,
        }
        self._tasks: set[asyncio.Task[None]] = set()

    async def serve(self) -> None:
        """Read commands from the pipe until told to exit; each runs as its own task.

        A thread does the blocking reads: registering the pipe with the loop
        (``add_reader``) would make it non-blocking, and large replies would
        then fail with EAGAIN instead of waiting for the coordinator to read.
        """
        loop = asyncio.get_running_loop()
        self.stop = loop.create_future()
        reader = threading.Thread(target=self._read_commands, args=(loop,), daemon=True)
        reader.start()
        try:
            await self.stop
        finally:
            for client in self.clients.values():
                client.abort()

    def _read_commands(self, loop: asyncio.AbstractEventLoop) -> None:
        while True:
            try:
                command = self.conn.recv()
            except (EOFError, OSError):  # the coordinator is gone
                loop.call_soon_threadsafe(self._finish)
                return
            loop.call_soon_threadsafe(self._start, command)
            if command[1] == "exit":
                return

    def _start(self, command: tuple[int, str, dict[str, Any]]) -> None:
        task = asyncio.ensure_future(self._execute(*command))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _finish(self) -> None:
        if self.stop is not None and not self.stop.done():
            self.stop.set_result(None)

    async def _execute(self, seq: int, name: str, kwargs: dict[str, Any]) -> None:
        try:
            result = await self._commands[name](**kwargs)
            self.conn.send((seq, True, result))
        except Exception:  # reported to the coordinator, which raises it there
            self.conn.send((seq, False, traceback.format_exc()))

    # -- commands ------------------------------------------------------------

    async def cmd_open(
        self, specs: list[ClientSpec], concurrency: int = 200, measured: bool = True
    ) -> dict[str, Any]:
        """Open connections (bounded concurrency); report how many failed and why."""
        gate = asyncio.Semaphore(concurrency)
        recorder = self.recorder if measured else self.side_recorder
        failures: list[str] = []

        async def one(spec: ClientSpec) -> None:
            async with gate:
                try:
                    self.clients[spec.cid] = await connect(
                        HOST,
                        spec.port,
                        spec.path,
                        recorder,
                        subprotocol=spec.subprotocol,
                        json_mode=spec.json_mode,
                    )
                except (OSError, TimeoutError) as exc:
                    failures.append(f"cid {spec.cid}: {exc!r}")

        await asyncio.gather(*(one(spec) for spec in specs))
        return {"opened": len(specs) - len(failures), "failures": failures[:5]}

    async def cmd_request(
        self,
        items: list[tuple[int, dict[str, Any] | None]],
        concurrency: int = 100,
        wait_seconds: float = 60.0,
        start_at_ns: int | None = None,
    ) -> list[dict[str, Any]]:
        """Send requests (or, with ``None``, an echo probe) and time each reply.

        ``start_at_ns`` lets several workers fire at one agreed instant (the
        login storm); elapsed times are measured here, next to the socket.
        """
        if start_at_ns is not None:
            await asyncio.sleep(max(0.0, (start_at_ns - time.monotonic_ns()) / 1e9))
        gate = asyncio.Semaphore(concurrency)

        async def one(cid: int, frame: dict[str, Any] | None) -> dict[str, Any]:
            async with gate:
                client = self.clients[cid]
                sent_ns = time.monotonic_ns()
                try:
                    if frame is None:
                        received_ns = await asyncio.wait_for(self._echo(client), wait_seconds)
                        reply: dict[str, Any] = {"type": "echo"}
                    else:
                        reply = await asyncio.wait_for(client.request(frame), wait_seconds)
                        received_ns = reply.pop("_received_ns")
                except (ConnectionError, TimeoutError) as exc:
                    return {"cid": cid, "type": "failed", "error": repr(exc), "sent_ns": sent_ns}
                reply.update(cid=cid, sent_ns=sent_ns, elapsed_ns=received_ns - sent_ns)
                return reply

        return list(await asyncio.gather(*(one(cid, frame) for cid, frame in items)))

    async def _echo(self, client: FrameClient) -> int:
        client.echo_waiter = asyncio.get_running_loop().create_future()
        client.send_text(stamped_text(time.monotonic_ns()).encode())
        try:
            return await client.echo_waiter
        finally:
            client.echo_waiter = None

    async def cmd_arm(self, since_ns: int) -> None:
        """Start counting deliveries stamped from ``since_ns`` on.

        Every worker is armed before any starts sending, or a fast worker's
        first messages could reach a slower one before it began to count.
        """
        self.recorder.reset(since_ns)
        self._run_cpu = cpu_seconds()

    async def cmd_run(
        self,
        senders: list[tuple[int, str]],
        rate: float,
        duration: float,
        measure_from_ns: int | None = None,
    ) -> dict[str, Any]:
        """Offer ``rate`` sends/s spread over ``senders`` for ``duration`` seconds.

        Open loop: sends are due by the clock, not by replies, so a slow server
        shows up as latency rather than as a politely reduced load. Senders take
        turns, so each sends at the same fixed rate. Sends before
        ``measure_from_ns`` are the warm-up: made, but not counted.

        How far sends fell behind their due time is reported (``behind_*``):
        a worker whose loop is too busy to send on time is the limit then, not
        the server, and the step must say so.
        """
        plan = [(self.clients[cid], room, msgspec.json.encode(room)) for cid, room in senders]
        sends: Counter[str] = Counter()
        self._halt = False
        start = time.monotonic_ns()
        end = start + int(duration * 1e9)
        measure_from = measure_from_ns or start
        issued = 0
        behind_max = 0
        behind_sends = 0  # counted sends made more than _BEHIND_NS after they were due
        measuring = False
        while (now := time.monotonic_ns()) < end and not self._halt:
            due = int((now - start) * rate / 1e9) + 1 - issued if plan and rate > 0 else 0
            if due > 0:
                behind = now - (start + int(issued * 1e9 / rate))
                counted = now >= measure_from
                if counted and not measuring:  # the warm-up is over: CPU counts from here
                    measuring = True
                    self._run_cpu = cpu_seconds()
                if counted:
                    behind_max = max(behind_max, behind)
                    if behind > _BEHIND_NS:
                        behind_sends += due
            for _ in range(due):
                client, room, room_json = plan[issued % len(plan)]
                if counted:
                    self._send_chat(client, room_json, time.monotonic_ns())
                    sends[room] += 1
                else:  # a warm-up stamp stays before the measurement, whatever the clock says
                    self._send_chat(client, room_json, min(time.monotonic_ns(), measure_from - 1))
                issued += 1
            await asyncio.sleep(_TICK_SECONDS)
        return {
            "sends": dict(sends),
            "seconds": (time.monotonic_ns() - measure_from) / 1e9,
            "behind_max_ms": behind_max / 1e6,
            "behind_sends": behind_sends,
        }

    async def cmd_halt(self) -> None:
        """End the current run early (it was started open-ended, e.g. to outlast a storm)."""
        self._halt = True

    def _send_chat(self, client: FrameClient, room_json: bytes, stamp_ns: int) -> None:
        """One stamped chat message; its nonce is unique for the worker's whole life
        (a repeated nonce would be answered from storage and never broadcast)."""
        self._nonce += 1
        text = stamped_text(stamp_ns, self._nonce).encode()
        if not client.json_mode:
            client.send_text(text)
            return
        client.send_text(
            b'{"type":"send","id":%d,"room":%s,"text":"%s","nonce":"w%d-%d"}'
            % (client.take_id(), room_json, text, self.index, self._nonce)
        )

    async def cmd_collect(self, expected: int, wait_seconds: float) -> dict[str, Any]:
        """Wait until ``expected`` deliveries arrived (or ``wait_seconds``), then hand them over.

        Polling every 5 ms is cheaper than waking a waiter on every delivery.
        """
        recorder = self.recorder
        deadline = time.monotonic() + wait_seconds
        while recorder.count < expected and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.005)
        result = {
            "count": recorder.count,
            "late": recorder.late,
            "last_ns": recorder.last_ns,
            "latencies": recorder.latencies.tobytes(),
            "stamps": recorder.stamps.tobytes(),
            "cpu": cpu_seconds() - self._run_cpu,
            "errors": sum(client.errors for client in self.clients.values()),
            "closed": sum(1 for client in self.clients.values() if not client.is_open),
        }
        recorder.reset(1 << 62)
        return result

    async def cmd_fill(
        self, cid: int, room: str, count: int, window: int = 256, wait_seconds: float = 120.0
    ) -> dict[str, Any]:
        """Store ``count`` messages in ``room`` with up to ``window`` sends in flight."""
        client = self.clients[cid]
        room_json = msgspec.json.encode(room)
        base_acked, base_errors = client.acked, client.errors
        issued = 0
        start = time.monotonic_ns()

        def answered() -> int:
            return client.acked - base_acked + client.errors - base_errors

        while answered() < count:
            while issued < count and issued - answered() < window:
                client.send_text(
                    b'{"type":"send","id":%d,"room":%s,"text":"fill message %d of cid %d"}'
                    % (client.take_id(), room_json, issued, cid)
                )
                issued += 1
            client.ack_waiter = asyncio.get_running_loop().create_future()
            await asyncio.wait_for(client.ack_waiter, wait_seconds)
        client.ack_waiter = None
        return {
            "acked": client.acked - base_acked,
            "errors": client.errors - base_errors,
            "last_error": client.last_error,
            "elapsed_ns": time.monotonic_ns() - start,
        }

    async def cmd_close(self, cids: list[int] | None = None) -> int:
        """Reset the given connections (all when ``None``) and forget them."""
        chosen = list(self.clients) if cids is None else [c for c in cids if c in self.clients]
        for cid in chosen:
            self.clients.pop(cid).abort()
        await asyncio.sleep(0)
        return len(chosen)

    async def cmd_status(self, cids: list[int] | None = None) -> dict[str, int]:
        """How many of the given connections are still open, and their error count."""
        chosen = [self.clients[c] for c in (cids or self.clients) if c in self.clients]
        return {
            "open": sum(1 for client in chosen if client.is_open),
            "errors": sum(client.errors for client in chosen),
        }

    async def cmd_exit(self) -> None:
        """Stop serving (the process then exits)."""
        asyncio.get_running_loop().call_soon(self._finish)


def worker_main(conn: Connection, index: int, cpus: set[int] | None = None) -> None:
    """Process entry point: run a ``Worker`` on uvloop if it is installed."""
    if cpus:
        os.sched_setaffinity(0, cpus)
    runner: Callable[[Any], Any] = asyncio.run
    with contextlib.suppress(ImportError):
        import uvloop

        runner = uvloop.run
    with contextlib.suppress(KeyboardInterrupt):
        runner(Worker(conn, index).serve())
