"""The event loop: uvloop picked up by itself when installed, asyncio on request or without it."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.server.serverprocess import ServerProcess
from tests.waiting import wait_until
from tests.wsclient import user

pytest.importorskip("uvloop", reason="the test extra installs uvloop (the 'speed' extra)")

CHEAP = ("--port", "0", "--argon2-profile", "cheapest")


async def chat_and_stop(server: ServerProcess) -> str:
    """A real exchange on the server; then SIGTERM; returns the loop it said it ran on."""
    ann = await user(server.url, "ann")
    await ann.ok("create_room", room="Lobby")
    sent = await ann.ok("send", room="Lobby", text="hello")
    assert (await ann.event("message"))["message"] == sent["message"]
    await wait_until(lambda: any("Event loop:" in line for line in server.output))
    assert await server.terminate() == 0
    assert "Traceback" not in "".join(server.output)
    (line,) = [line for line in server.output if line.startswith("Event loop:")]
    return line.split(":", 1)[1].strip()


async def test_the_server_runs_on_uvloop_when_it_is_installed(tmp_path: Path) -> None:
    """No flag needed: an installed uvloop is used, and the start-up lines say so."""
    server = await ServerProcess.start(*CHEAP, "--db", str(tmp_path / "c.db"))
    assert await chat_and_stop(server) == "uvloop"


async def test_the_event_loop_flag_and_variable_opt_out(tmp_path: Path) -> None:
    """--event-loop asyncio, or CLUBROOM_EVENT_LOOP=asyncio, keeps asyncio's own loop."""
    by_flag = await ServerProcess.start(
        *CHEAP, "--db", str(tmp_path / "a.db"), "--event-loop", "asyncio"
    )
    assert await chat_and_stop(by_flag) == "asyncio"
    by_env = await ServerProcess.start(
        *CHEAP, "--db", str(tmp_path / "b.db"), env={"CLUBROOM_EVENT_LOOP": "asyncio"}
    )
    assert await chat_and_stop(by_env) == "asyncio"


def without_uvloop(tmp_path: Path) -> dict[str, str]:
    """An environment where ``import uvloop`` fails, as on a machine without it."""
    shadow = tmp_path / "no-uvloop"
    shadow.mkdir()
    (shadow / "uvloop.py").write_text('raise ImportError("No module named uvloop")\n')
    return {"PYTHONPATH": str(shadow)}


async def test_without_uvloop_auto_falls_back_to_asyncio(tmp_path: Path) -> None:
    """uvloop is optional: without it the server runs on asyncio, no flag needed."""
    server = await ServerProcess.start(
        *CHEAP, "--db", str(tmp_path / "c.db"), env=without_uvloop(tmp_path)
    )
    assert await chat_and_stop(server) == "asyncio"


async def test_asking_for_uvloop_without_it_is_a_clear_one_line_error(tmp_path: Path) -> None:
    """--event-loop uvloop where it is not installed: exit 2 and how to install it."""
    with pytest.raises(RuntimeError) as failure:
        await ServerProcess.start(
            *CHEAP,
            "--db",
            str(tmp_path / "c.db"),
            "--event-loop",
            "uvloop",
            env=without_uvloop(tmp_path),
        )
    output = str(failure.value)
    assert "uvloop is not installed" in output and "clubroom[speed]" in output
    assert "Traceback" not in output
