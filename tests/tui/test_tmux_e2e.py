"""The installed ``clubroom connect`` in a real terminal (tmux), typed at, read from the screen.

Pilot drives the app from inside; this drives it as a person does: keystrokes
into a terminal, the escape-sequence parser, the real driver, and what the
terminal then shows. One test, the main path: register, create a room, type
lines fast, and a separate protocol client receives exactly those lines.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.server.serverprocess import ServerProcess
from tests.tui.conftest import PASSWORD, TIMEOUT
from tests.wsclient import WireClient, user

TMUX = shutil.which("tmux")
CLUBROOM = shutil.which("clubroom", path=str(Path(sys.executable).parent)) or shutil.which(
    "clubroom"
)

pytestmark = [
    pytest.mark.skipif(TMUX is None, reason="tmux is not installed (apt-get install tmux)"),
    pytest.mark.skipif(
        CLUBROOM is None, reason="the clubroom command is not installed (pip install -e .)"
    ),
]


class Terminal:
    """One tmux session on a private socket (never the user's own tmux server)."""

    def __init__(self, socket: Path) -> None:
        self.socket = socket

    def _tmux(self, *args: str) -> str:
        assert TMUX is not None
        done = subprocess.run(
            [TMUX, "-S", str(self.socket), *args], capture_output=True, text=True, check=True
        )
        return done.stdout

    def start(self, command: list[str], width: int, height: int, config_dir: Path) -> None:
        self._tmux(
            "-f", "/dev/null", "new-session", "-d", "-s", "e2e",
            "-x", str(width), "-y", str(height),
            "-e", f"CLUBROOM_CONFIG_DIR={config_dir}",
            *command,
        )  # fmt: skip

    def type(self, text: str) -> None:
        """Send literal characters, as typed."""
        self._tmux("send-keys", "-t", "e2e", "-l", text)

    def press(self, *keys: str) -> None:
        """Send named keys such as ``Enter`` or ``C-r``."""
        self._tmux("send-keys", "-t", "e2e", *keys)

    def screen(self) -> str:
        return self._tmux("capture-pane", "-p", "-t", "e2e")

    async def wait_for(self, *texts: str) -> str:
        """Poll the screen until every text is on it."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + TIMEOUT * 2
        while True:
            shown = self.screen()
            if all(text in shown for text in texts):
                return shown
            if loop.time() > deadline:
                raise AssertionError(f"not on screen: {texts!r}\n--- screen ---\n{shown}")
            await asyncio.sleep(0.05)

    def close(self) -> None:
        command = [TMUX or "tmux", "-S", str(self.socket), "kill-server"]
        subprocess.run(command, capture_output=True, check=False)


@pytest.fixture
async def chat_server(tmp_path: Path) -> AsyncIterator[ServerProcess]:
    server = await ServerProcess.start(
        "--port", "0", "--db", str(tmp_path / "e2e.db"), "--argon2-profile", "cheapest",
        "--rate-limit", "0", "--room-rate-limit", "0",
    )  # fmt: skip
    yield server
    await server.terminate()


@pytest.fixture
def terminal(tmp_path: Path) -> Iterator[Terminal]:
    term = Terminal(tmp_path / "tmux.sock")
    yield term
    term.close()


async def received_texts(client: WireClient, count: int) -> list[str]:
    """The texts of the next ``count`` messages the client is sent."""
    texts: list[str] = []
    while len(texts) < count:
        event = await client.event("message")
        texts.append(event["message"]["text"])
    return texts


async def test_typed_in_a_real_terminal_lines_arrive_one_to_one(
    chat_server: ServerProcess, terminal: Terminal, tmp_path: Path
) -> None:
    """In tmux at 80×24: register, create a room, type 10 lines fast; bob gets exactly those."""
    assert CLUBROOM is not None
    terminal.start([CLUBROOM, "connect", chat_server.url], 80, 24, tmp_path / "config")
    await terminal.wait_for("● connected", "Username")
    terminal.type("alice")
    terminal.press("Enter")
    terminal.type(PASSWORD)
    terminal.press("C-r")
    await terminal.wait_for("Hello, alice!")
    terminal.press("C-n")
    terminal.type("#e2e")
    terminal.press("Enter")
    await terminal.wait_for("# e2e", "Members (1)")
    bob = await user(chat_server.url, "bob")
    await bob.ok("join_room", room="e2e")
    await terminal.wait_for("Members (2)")
    lines = [f"line {n} from alice" for n in range(10)]
    for line in lines:
        terminal.type(line)
        terminal.press("Enter")
    async with asyncio.timeout(TIMEOUT * 2):
        assert await received_texts(bob, len(lines)) == lines
    await terminal.wait_for("alice: line 9 from alice")
    await bob.close()
