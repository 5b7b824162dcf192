"""A deliberately tiny WebSocket client that reads frames straight from the socket buffer.

The load generator shares two cores with the server it measures, so it must
spend far less CPU per delivered frame than the server does. A full client
library (``websockets`` itself) costs about as much per frame as the server's
send path; this one does the opening handshake by hand, parses server frames
in place with slicing and ``bytes.find``, never decodes chat JSON on the hot
path, and masks with the all-zero key so that masking is a no-op (RFC 6455
requires a mask, not an unpredictable one, from a server's point of view).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import os
import socket
import struct
import time
from array import array
from typing import Any, cast

import msgspec

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_ZERO_MASK = b"\x00\x00\x00\x00"
_OP_TEXT, _OP_CLOSE, _OP_PING = 0x1, 0x8, 0x9

# A stamp is "@" followed by 19 zero-padded digits of time.monotonic_ns(); on Linux
# that clock is CLOCK_MONOTONIC, shared by every process, so a receiver in another
# process can subtract it from its own reading.
STAMP_DIGITS = 19
_EVENT_PREFIX = b'{"type":"message"'
_SENT_PREFIX = b'{"type":"sent"'
_TEXT_STAMP = b'"text":"@'
_LINGER_RESET = struct.pack("ii", 1, 0)


_FILLER = "x" * 40


def stamped_text(now_ns: int, seq: int = 0) -> str:
    """The chat text every load message carries: its send time, a sequence number, 40 filler
    characters (the shape of the independent measurement in issue 17: 69 characters)."""
    return f"@{now_ns:0{STAMP_DIGITS}d} {seq:08d} {_FILLER}"


class Recorder:
    """Counts deliveries of the current measurement and keeps their latencies.

    One recorder is shared by all clients of a worker, so counting is a single
    attribute increment. Frames stamped before ``since_ns`` belong to an earlier
    step (a backlog that drained late) and are counted apart, never mixed in.
    """

    __slots__ = ("count", "last_ns", "late", "latencies", "since_ns", "stamps")

    def __init__(self) -> None:
        self.since_ns = 1 << 62  # inactive until reset()
        self.count = 0
        self.late = 0
        self.last_ns = 0
        self.latencies = array("q")
        self.stamps = array("q")

    def reset(self, since_ns: int) -> None:
        """Start a new measurement that accepts stamps from ``since_ns`` on."""
        self.since_ns = since_ns
        self.count = 0
        self.late = 0
        self.last_ns = 0
        self.latencies = array("q")
        self.stamps = array("q")

    def record(self, stamp_ns: int, now_ns: int) -> None:
        """Account one delivery (the hot path: kept to a few operations)."""
        if stamp_ns >= self.since_ns:
            self.count += 1
            self.latencies.append(now_ns - stamp_ns)
            self.stamps.append(stamp_ns)
            self.last_ns = now_ns
        else:
            self.late += 1


class FrameClient(asyncio.Protocol):
    """One WebSocket connection: handshake, frame parsing, replies matched by ``id``.

    ``json_mode`` selects the Clubroom dialect (deliveries are ``message``
    events, replies are JSON with ids); without it every text frame carrying a
    stamp is a delivery, as the ceiling server simply echoes what was sent.
    """

    def __init__(
        self,
        host: str,
        port: int,
        path: str,
        recorder: Recorder,
        *,
        subprotocol: str | None = None,
        json_mode: bool = True,
    ) -> None:
        self.host, self.port, self.path = host, port, path
        self.recorder = recorder
        self.subprotocol = subprotocol
        self.json_mode = json_mode
        loop = asyncio.get_running_loop()
        self.ready: asyncio.Future[None] = loop.create_future()
        self.closed: asyncio.Future[int | None] = loop.create_future()
        self.transport: asyncio.Transport | None = None
        self.pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.next_id = 1
        self.acked = 0  # `sent` replies seen (counted without decoding)
        self.errors = 0
        self.last_error: str | None = None
        self.events = 0  # other events (member_joined, ...) seen
        self.ack_waiter: asyncio.Future[None] | None = None
        self.echo_waiter: asyncio.Future[int] | None = None
        self._key = base64.b64encode(os.urandom(16))
        self._buffer = b""
        self._open = False

    # -- asyncio.Protocol ---------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        sock = transport.get_extra_info("socket")
        if sock is not None:  # no Nagle: a small frame must not wait for a delayed ACK
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        lines = [
            f"GET {self.path} HTTP/1.1",
            f"Host: {self.host}:{self.port}",
            "Upgrade: websocket",
            "Connection: Upgrade",
            f"Sec-WebSocket-Key: {self._key.decode()}",
            "Sec-WebSocket-Version: 13",
        ]
        if self.subprotocol:
            lines.append(f"Sec-WebSocket-Protocol: {self.subprotocol}")
        self.transport.write(("\r\n".join(lines) + "\r\n\r\n").encode())

    def data_received(self, data: bytes) -> None:
        buf = self._buffer + data if self._buffer else data
        if not self._open:
            buf = self._finish_handshake(buf)
            if not self._open:
                self._buffer = buf
                return
        self._buffer = self._parse_frames(buf)

    def connection_lost(self, exc: Exception | None) -> None:
        self._open = False
        if not self.ready.done():
            self.ready.set_exception(ConnectionError(f"connection lost in handshake: {exc}"))
        if not self.closed.done():
            self.closed.set_result(None)
        for future in self.pending.values():
            if not future.done():
                future.set_exception(ConnectionError("connection lost"))
        self.pending.clear()

    # -- receiving ----------------------------------------------------------

    def _finish_handshake(self, buf: bytes) -> bytes:
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            return buf
        head = buf[:end].decode("latin-1")
        expected = base64.b64encode(hashlib.sha1(self._key + _GUID).digest()).decode()
        if not head.startswith("HTTP/1.1 101") or expected not in head:
            self.ready.set_exception(ConnectionError(f"handshake refused: {head.splitlines()[0]}"))
            self.abort()
            return b""
        self._open = True
        self.ready.set_result(None)
        return buf[end + 4 :]

    def _parse_frames(self, buf: bytes) -> bytes:
        """Handle every complete frame in ``buf``; return the incomplete tail.

        Server frames are never masked, so a header is 2, 4 or 10 bytes. One
        clock reading serves every frame of one read: they arrived together.
        This loop runs once per delivered frame, so the common case — a timed
        delivery — is handled inline, without a method call per frame.
        """
        now = time.monotonic_ns()
        recorder = self.recorder
        since = recorder.since_ns
        delivered = 0
        size = len(buf)
        pos = 0
        while size - pos >= 2:
            length = buf[pos + 1] & 0x7F
            start = pos + 2
            if length == 126:
                if size - pos < 4:
                    break
                length = int.from_bytes(buf[pos + 2 : pos + 4], "big")
                start = pos + 4
            elif length == 127:
                if size - pos < 10:
                    break
                length = int.from_bytes(buf[pos + 2 : pos + 10], "big")
                start = pos + 10
            end = start + length
            if end > size:
                break
            stamp_at = self._stamp_position(buf, start, end) if buf[pos] & 0x0F == _OP_TEXT else -1
            if stamp_at < 0:
                self._on_other(buf, pos, start, end, now)
            else:
                stamp = int(buf[stamp_at : stamp_at + STAMP_DIGITS])
                if stamp >= since:
                    delivered += 1
                    recorder.latencies.append(now - stamp)
                    recorder.stamps.append(stamp)
                else:
                    recorder.late += 1
            pos = end
        if delivered:
            recorder.count += delivered
            recorder.last_ns = now
        return buf[pos:] if pos < size else b""

    def _stamp_position(self, buf: bytes, start: int, end: int) -> int:
        """Where a timed delivery's stamp digits start, or -1 if the frame is something else."""
        if not self.json_mode:
            return start + 1 if self.echo_waiter is None and buf[start] == 0x40 else -1
        if not buf.startswith(_EVENT_PREFIX, start):
            return -1
        at = buf.find(_TEXT_STAMP, start, end)
        return at + len(_TEXT_STAMP) if at >= 0 else -1

    def _on_other(self, buf: bytes, pos: int, start: int, end: int, now: int) -> None:
        """Every frame that is not a timed delivery: control frames, replies, echoes."""
        opcode = buf[pos] & 0x0F
        if opcode != _OP_TEXT:
            self._on_control(opcode, buf[start:end])
        elif not self.json_mode:
            waiter = self.echo_waiter
            if waiter is not None and not waiter.done():
                waiter.set_result(now)
        elif buf.startswith(_EVENT_PREFIX, start):
            self.events += 1  # a message without a stamp (S5's fill messages)
        elif buf.startswith(_SENT_PREFIX, start) and not self.pending:
            self._note_ack()
        else:
            self._on_json(buf[start:end], now)

    def _on_json(self, payload: bytes, now: int) -> None:
        """The slow path: replies during set-up, errors, and events we don't time."""
        frame = msgspec.json.decode(payload)
        kind = frame.get("type")
        if kind == "error":
            self.errors += 1
            self.last_error = f"{frame.get('code')}: {frame.get('message')}"
            self._wake()
        if kind == "sent":
            self._note_ack()
        future = self.pending.pop(frame.get("id"), None)
        if future is not None and not future.done():
            frame["_received_ns"] = now
            future.set_result(frame)
        elif kind == "message":
            text = frame["message"]["text"]
            if text.startswith("@"):
                self.recorder.record(int(text[1 : 1 + STAMP_DIGITS]), now)
        elif kind != "sent" and kind != "error":
            self.events += 1

    def _note_ack(self) -> None:
        self.acked += 1
        self._wake()

    def _wake(self) -> None:
        waiter = self.ack_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _on_control(self, opcode: int, payload: bytes) -> None:
        if opcode == _OP_PING:
            self._write_frame(0x8A, payload)
        elif opcode == _OP_CLOSE:
            code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else None
            if not self.closed.done():
                self.closed.set_result(code)
            if self._open:
                self._open = False
                self._write_frame(0x88, payload[:2])
            if self.transport is not None:
                self.transport.close()

    # -- sending ------------------------------------------------------------

    def _write_frame(self, first_byte: int, payload: bytes) -> None:
        size = len(payload)
        if size < 126:
            header = bytes((first_byte, 0x80 | size))
        elif size < 65536:
            header = bytes((first_byte, 0xFE)) + size.to_bytes(2, "big")
        else:
            header = bytes((first_byte, 0xFF)) + size.to_bytes(8, "big")
        assert self.transport is not None
        self.transport.write(header + _ZERO_MASK + payload)

    def send_text(self, payload: bytes) -> None:
        """Send one text frame (``payload`` is UTF-8) without waiting for anything."""
        if self._open:
            self._write_frame(0x81, payload)

    def take_id(self) -> int:
        """A fresh request id for this connection."""
        request_id = self.next_id
        self.next_id += 1
        return request_id

    def request(self, frame: dict[str, Any]) -> asyncio.Future[dict[str, Any]]:
        """Send a Clubroom request; the future gets its reply (with ``_received_ns``)."""
        request_id = self.take_id()
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.pending[request_id] = future
        self.send_text(msgspec.json.encode({**frame, "id": request_id}))
        return future

    @property
    def is_open(self) -> bool:
        """True between a successful handshake and the connection's end."""
        return self._open

    def abort(self) -> None:
        """Drop the connection with a TCP reset, so no TIME_WAIT eats local ports."""
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError, AttributeError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
        transport.abort()


async def connect(
    host: str,
    port: int,
    path: str,
    recorder: Recorder,
    *,
    subprotocol: str | None = None,
    json_mode: bool = True,
    handshake_seconds: float = 30.0,
) -> FrameClient:
    """Open a connection and finish its handshake, or raise."""
    loop = asyncio.get_running_loop()
    _, client = await loop.create_connection(
        lambda: FrameClient(
            host, port, path, recorder, subprotocol=subprotocol, json_mode=json_mode
        ),
        host,
        port,
    )
    try:
        await asyncio.wait_for(client.ready, handshake_seconds)
    except BaseException:
        client.abort()
        raise
    return client
