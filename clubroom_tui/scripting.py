"""``clubroom send`` and ``clubroom tail``: Clubroom for shell scripts, bots and pipes.

Both use the session saved by "Remember me" in ``clubroom connect`` (the same
``--config-dir``), the same client library as the terminal client, and exit
with a code a script can act on; every failure is one line on stderr:

    0  done (``tail``: stopped with Ctrl-C or SIGTERM)
    1  something unexpected (a bug: please report it)
    2  wrong usage (click's own code), or an empty message
    3  not logged in: no saved session for this server, or it expired
    4  the server cannot be reached (after ``--timeout`` seconds)
    5  the room cannot be joined (no such room, banned, not invited)
    6  the server refused the message (too long, control characters, rate limit)
    7  ``tail`` only: the room went away (deleted, or you were removed)
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from clubroom_tui.client import (
    ClientError,
    ClubroomClient,
    MembersChanged,
    MessagesAdded,
    RequestFailed,
    RoomInfoChanged,
    RoomLost,
    SessionEnded,
)
from clubroom_tui.plain import printable
from clubroom_tui.sessions import SessionStore
from protocol import ErrorCode, Message, parse_time

OK, BUG, USAGE, NOT_LOGGED_IN, UNREACHABLE, ROOM_REFUSED, MESSAGE_REFUSED, ROOM_LOST = range(8)
_ROOM_CODES = {ErrorCode.NO_SUCH_ROOM, ErrorCode.BANNED, ErrorCode.INVALID_ROOM_NAME}


class ScriptExit(Exception):
    """Stop with ``code``, after saying ``message`` on stderr."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class Target:
    """Where and as whom a script talks."""

    url: str
    config_dir: Path
    timeout: float
    ssl: object = None


def run(work: Callable[[ClubroomClient], Awaitable[int]], target: Target) -> int:
    """Run one scripted job on a resumed connection; the exit code, problems on stderr."""
    try:
        return asyncio.run(_session(work, target))
    except ScriptExit as stop:
        print(f"clubroom: {stop.message}", file=sys.stderr)
        return stop.code
    except KeyboardInterrupt:
        return OK


async def _session(work: Callable[[ClubroomClient], Awaitable[int]], target: Target) -> int:
    saved = SessionStore(target.config_dir).load(target.url)
    if saved is None:
        raise ScriptExit(
            NOT_LOGGED_IN,
            f"no saved session for {target.url}; log in once with "
            f"'clubroom connect {target.url}' and tick 'Remember me'.",
        )
    client = ClubroomClient(target.url, ssl=target.ssl)  # type: ignore[arg-type]
    client.token = saved.token  # the client resumes with it as soon as it connects
    await client.start()
    try:
        try:
            async with asyncio.timeout(target.timeout):
                await client.wait_ready()
        except TimeoutError:
            raise ScriptExit(
                UNREACHABLE,
                f"cannot reach {target.url} within {target.timeout:g} s "
                f"({client.state_detail.rstrip('.')}).",
            ) from None
        if client.username is None:
            raise ScriptExit(
                NOT_LOGGED_IN,
                f"the saved session for {target.url} has ended; log in again with "
                f"'clubroom connect {target.url}'.",
            )
        return await work(client)
    finally:
        await client.close()


async def join(client: ClubroomClient, room: str) -> str:
    """Join ``room`` (exit 5 if refused); its name as the server spells it."""
    try:
        return (await client.join_room(room)).room
    except RequestFailed as exc:
        code = ROOM_REFUSED if exc.code in _ROOM_CODES else BUG
        raise ScriptExit(code, exc.message) from None
    except ClientError as exc:
        raise ScriptExit(UNREACHABLE, str(exc)) from None


def read_text(text: str | None, stdin: TextIO) -> str:
    """The message: the argument, or all of stdin ('-' or no argument); one final newline cut."""
    if text is None or text == "-":
        text = stdin.read()
        text = text.removesuffix("\n")
    if not text.strip():
        raise ScriptExit(USAGE, "nothing to send: the message is empty.")
    return text


def sender(room: str, text: str) -> Callable[[ClubroomClient], Awaitable[int]]:
    async def send(client: ClubroomClient) -> int:
        name = await join(client, room)
        try:
            await client.send(name, text)
        except RequestFailed as exc:
            raise ScriptExit(MESSAGE_REFUSED, exc.message) from None
        except ClientError as exc:
            raise ScriptExit(UNREACHABLE, f"not sent: {exc}") from None
        return OK

    return send


def tailer(room: str, as_json: bool, out: TextIO) -> Callable[[ClubroomClient], Awaitable[int]]:
    """Print the room's latest messages, then every event, until interrupted."""

    async def tail(client: ClubroomClient) -> int:
        events = client.subscribe()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        name = await join(client, room)
        waiter = asyncio.create_task(stop.wait())
        try:
            while not stop.is_set():
                getter = asyncio.create_task(anext(events))
                done, _ = await asyncio.wait({getter, waiter}, return_when=asyncio.FIRST_COMPLETED)
                if getter not in done:
                    getter.cancel()
                    with contextlib.suppress(BaseException):
                        await getter
                    break
                event = getter.result()
                if isinstance(event, SessionEnded):
                    raise ScriptExit(NOT_LOGGED_IN, f"session ended: {event.reason}")
                if getattr(event, "room", None) != name:
                    continue
                if isinstance(event, RoomLost):
                    raise ScriptExit(ROOM_LOST, f"{printable(name)}: {event.reason}")
                for line in render(event, as_json):
                    out.write(line + "\n")
                out.flush()
        finally:
            waiter.cancel()
            events.close()
        return OK

    return tail


def render(event: object, as_json: bool) -> list[str]:
    """One line per happening: JSON objects for ``--json``, readable text otherwise."""
    records: list[dict[str, object]] = []
    if isinstance(event, MessagesAdded):
        records = [_message_record(m) for m in event.messages]
    elif isinstance(event, MembersChanged) and (event.joined or event.left):
        kind = "member_joined" if event.joined else "member_left"
        records = [{"type": kind, "room": event.room, "username": event.joined or event.left}]
    elif isinstance(event, RoomInfoChanged) and event.by is not None:
        records = [{"type": "topic", "room": event.room, "topic": event.topic, "by": event.by}]
    if as_json:
        return [json.dumps(record, ensure_ascii=False) for record in records]
    return [_readable(record) for record in records]


def _message_record(message: Message) -> dict[str, object]:
    return {
        "type": "message",
        "room": message.room,
        "id": message.id,
        "author": message.author,
        "text": message.text,
        "at": message.at,
    }


def _readable(record: dict[str, object]) -> str:
    """A terminal-safe line (control characters and escapes made visible)."""
    kind = record["type"]
    if kind == "message":
        at = parse_time(str(record["at"])).strftime("%H:%M")
        prefix = printable(f"{at} <{record['author']}> ")
        first, *rest = str(record["text"]).split("\n")
        indent = " " * len(prefix)  # a hanging indent keeps a multi-line message together
        return "\n".join([prefix + printable(first), *(indent + printable(line) for line in rest)])
    if kind == "topic":
        return printable(f"-- {record['by']} set the topic: {record['topic']}")
    verb = "joined" if kind == "member_joined" else "left"
    return printable(f"-- {record['username']} {verb}")
