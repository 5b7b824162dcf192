"""``clubroom send`` and ``clubroom tail`` run as real subprocesses against a real server."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from clubroom_tui.sessions import SavedSession, SessionStore
from tests.conftest import RunningServer
from tests.wsclient import WireClient, user

CLUBROOM = str(Path(sys.executable).with_name("clubroom"))


class Run:
    """A finished command: its exit code and what it printed."""

    def __init__(self, code: int, out: str, err: str) -> None:
        self.code, self.out, self.err = code, out, err


async def clubroom(config: Path, *args: str, stdin: str | None = None) -> Run:
    """Run the ``clubroom`` command with a saved-session directory, to completion."""
    process = await asyncio.create_subprocess_exec(
        CLUBROOM,
        *args,
        "--config-dir",
        str(config),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate((stdin or "").encode()), 30)
    assert process.returncode is not None
    return Run(process.returncode, out.decode(), err.decode())


async def start_tail(
    server: RunningServer, config: Path, *options: str, env: dict[str, str] | None = None
) -> asyncio.subprocess.Process:
    """Start ``clubroom tail Lobby`` with the session saved in ``config``; it runs until stopped.

    Its output and errors are pipes to read; ``env`` replaces the environment.
    """
    return await asyncio.create_subprocess_exec(
        CLUBROOM,
        "tail",
        "Lobby",
        *options,
        "--server",
        server.url,
        "--config-dir",
        str(config),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )


@pytest.fixture
async def ann(server: RunningServer, tmp_path: Path) -> AsyncIterator[tuple[WireClient, Path]]:
    """ann, in a room called Lobby, with her session saved as 'Remember me' would."""
    client = await user(server.url, "ann")
    await client.ok("create_room", room="Lobby")
    config = tmp_path / "config"
    SessionStore(config).save(server.url, SavedSession(client.token or ""))
    yield client, config
    await client.close()


async def test_send_delivers_the_argument_and_stdin(
    server: RunningServer, ann: tuple[WireClient, Path]
) -> None:
    """``send ROOM TEXT`` and ``send ROOM`` with stdin post one message each and exit 0."""
    watcher, config = ann
    first = await clubroom(config, "send", "lobby", "hello from cron", "--server", server.url)
    assert (first.code, first.err) == (0, "")
    second = await clubroom(
        config, "send", "Lobby", "--server", server.url, stdin="line 1\nline 2\n"
    )
    assert second.code == 0, second.err
    texts = [(await watcher.event("message"))["message"]["text"] for _ in range(2)]
    assert texts == ["hello from cron", "line 1\nline 2"]


async def test_send_failures_have_distinct_exit_codes(
    server: RunningServer, ann: tuple[WireClient, Path], tmp_path: Path
) -> None:
    """No session 3, empty text 2, unknown room 5, refused text 6, unreachable server 4."""
    _, config = ann
    url = ["--server", server.url]
    nobody = await clubroom(tmp_path / "empty", "send", "Lobby", "hi", *url)
    assert nobody.code == 3 and "clubroom connect" in nobody.err
    empty = await clubroom(config, "send", "Lobby", *url, stdin="  \n")
    assert empty.code == 2 and "empty" in empty.err
    missing = await clubroom(config, "send", "Nowhere", "hi", *url)
    assert missing.code == 5 and "Nowhere" in missing.err
    refused = await clubroom(config, "send", "Lobby", "x" * 5000, *url)
    assert refused.code == 6 and "4000" in refused.err
    down = await clubroom(
        config, "send", "Lobby", "hi", "--server", "ws://127.0.0.1:9", "--timeout", "1"
    )
    assert down.code == 3  # no session saved for that address either
    SessionStore(config).save("ws://127.0.0.1:9", SessionStore(config).load(server.url))  # type: ignore[arg-type]
    down = await clubroom(
        config, "send", "Lobby", "hi", "--server", "ws://127.0.0.1:9", "--timeout", "1"
    )
    assert down.code == 4 and "cannot reach" in down.err


async def test_an_expired_session_says_log_in_again(
    server: RunningServer, ann: tuple[WireClient, Path]
) -> None:
    """After logging out elsewhere, the saved token fails: exit 3, one line on stderr."""
    client, config = ann
    await client.ok("logout")
    ended = await clubroom(config, "send", "Lobby", "hi", "--server", server.url)
    assert ended.code == 3 and "log in again" in ended.err
    assert ended.err.count("\n") == 1


async def test_tail_json_prints_one_line_per_event_until_interrupted(
    server: RunningServer, ann: tuple[WireClient, Path]
) -> None:
    """``tail --json`` prints the latest messages, then new events, and exits 0 on Ctrl-C."""
    client, config = ann
    await client.ok("send", room="Lobby", text="before")
    process = await start_tail(server, config, "--json")
    assert process.stdout is not None
    try:
        first = json.loads(await asyncio.wait_for(process.stdout.readline(), 15))
        assert (first["type"], first["text"], first["author"]) == ("message", "before", "ann")
        await client.ok("send", room="Lobby", text="\tlive\nand more")
        second = json.loads(await asyncio.wait_for(process.stdout.readline(), 15))
        assert second["text"] == "\tlive\nand more"
        await client.ok("set_topic", room="Lobby", topic="Scripts welcome")
        third = json.loads(await asyncio.wait_for(process.stdout.readline(), 15))
        assert third == {"type": "topic", "room": "Lobby", "topic": "Scripts welcome", "by": "ann"}
    finally:
        process.send_signal(signal.SIGINT)
        code = await asyncio.wait_for(process.wait(), 15)
    assert code == 0


async def test_tail_text_is_terminal_safe_and_exits_7_when_removed(
    server: RunningServer, ann: tuple[WireClient, Path], tmp_path: Path
) -> None:
    """Plain ``tail`` shows escapes as symbols with a hanging indent; a kick ends it with 7."""
    owner, _ = ann
    bob = await user(server.url, "bob")
    config = tmp_path / "bob"
    SessionStore(config).save(server.url, SavedSession(bob.token or ""))
    process = await start_tail(server, config, env={**os.environ, "TZ": "UTC"})
    assert process.stdout is not None and process.stderr is not None
    await owner.event("member_joined")
    await owner.ok("send", room="Lobby", text="\u202ereversed?\nsecond line")
    line = (await asyncio.wait_for(process.stdout.readline(), 15)).decode()
    assert "<ann> \\u202ereversed?" in line and "\u202e" not in line
    indent = (await asyncio.wait_for(process.stdout.readline(), 15)).decode()
    assert indent.rstrip("\n") == " " * line.index("\\u202e") + "second line"
    await owner.ok("kick", room="Lobby", username="bob", reason="bots elsewhere")
    assert await asyncio.wait_for(process.wait(), 15) == 7
    assert "bots elsewhere" in (await process.stderr.read()).decode()
    await bob.close()
