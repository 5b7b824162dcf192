"""systemd integration and SIGHUP: notifications on a real socket, reloads of a running server."""

from __future__ import annotations

import asyncio
import signal
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme

from tests.server.serverprocess import ServerProcess
from tests.waiting import wait_until
from tests.wsclient import WireClient, user

CHEAP = ("--argon2-profile", "cheapest")


def plain(folder: Path) -> list[str]:
    """serve's arguments for a throwaway server in ``folder``."""
    return ["--port", "0", "--db", str(folder / "c.db"), *CHEAP]


class NotifySocket:
    """A datagram socket standing in for systemd's ``NOTIFY_SOCKET``."""

    def __init__(self, address: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(address.replace("@", "\0", 1) if address.startswith("@") else address)
        self.sock.setblocking(False)
        self.address = address
        self.messages: list[set[str]] = []

    async def until(self, field: str, within: float = 20.0) -> set[str]:
        """Read notifications until one holds ``field``; return that one."""
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(within):
            while True:
                data = await loop.sock_recv(self.sock, 4096)
                message = set(data.decode().split("\n"))
                self.messages.append(message)
                if field in message:
                    return message


@pytest.fixture(params=["path", "abstract"])
def notify_socket(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[NotifySocket]:
    """Both forms systemd uses: a socket file, and an abstract name (``@…``)."""
    address = str(tmp_path / "notify") if request.param == "path" else f"@clubroom-{id(tmp_path)}"
    notify = NotifySocket(address)
    yield notify
    notify.sock.close()


async def test_systemd_hears_ready_watchdog_and_stopping(
    notify_socket: NotifySocket, tmp_path: Path
) -> None:
    """READY=1 once clients can connect, WATCHDOG=1 while running, STOPPING=1 on SIGTERM."""
    env = {"NOTIFY_SOCKET": notify_socket.address, "WATCHDOG_USEC": "200000"}
    server = await ServerProcess.start(
        "--port", "0", "--db", str(tmp_path / "c.db"), *CHEAP, env=env
    )
    ready = await notify_socket.until("READY=1")
    assert f"MAINPID={server.process.pid}" in ready
    assert any(field.startswith("STATUS=Serving on ws://") for field in ready)
    client = await user(server.url, "ann")  # READY came after the port was open
    await notify_socket.until("WATCHDOG=1")
    await notify_socket.until("WATCHDOG=1")
    server.process.send_signal(signal.SIGTERM)
    await notify_socket.until("STOPPING=1")
    assert await server.wait() == 0
    assert await client.wait_closed() == 1012


async def test_sighup_reload_tells_systemd(notify_socket: NotifySocket, tmp_path: Path) -> None:
    """A reload is announced as RELOADING=1 (with the monotonic time) and then READY=1."""
    env = {"NOTIFY_SOCKET": notify_socket.address}
    server = await ServerProcess.start(
        "--port", "0", "--db", str(tmp_path / "c.db"), *CHEAP, env=env
    )
    await notify_socket.until("READY=1")
    server.process.send_signal(signal.SIGHUP)
    reloading = await notify_socket.until("RELOADING=1")
    assert any(field.startswith("MONOTONIC_USEC=") for field in reloading)
    await notify_socket.until("READY=1")
    assert await server.terminate() == 0


def issue(ca: trustme.CA, folder: Path) -> bytes:
    """Write a new certificate for 127.0.0.1 over the server's files; return it as DER."""
    cert = ca.issue_cert("127.0.0.1")
    cert.cert_chain_pems[0].write_to_path(folder / "cert.pem")
    cert.private_key_pem.write_to_path(folder / "key.pem")
    return ssl.PEM_cert_to_DER_cert(cert.cert_chain_pems[0].bytes().decode())


def served_cert(client: WireClient) -> bytes:
    ssl_object = client.ws.transport.get_extra_info("ssl_object")
    return ssl_object.getpeercert(binary_form=True)


async def test_sighup_picks_up_a_renewed_certificate_without_dropping_anyone(
    tmp_path: Path,
) -> None:
    """After SIGHUP new connections get the new certificate; open ones carry on."""
    ca = trustme.CA()
    first = issue(ca, tmp_path)
    server = await ServerProcess.start(
        "--port", "0", "--db", str(tmp_path / "c.db"), *CHEAP,
        "--certfile", str(tmp_path / "cert.pem"), "--keyfile", str(tmp_path / "key.pem"),
    )  # fmt: skip
    trusting = ssl.create_default_context()
    ca.configure_trust(trusting)
    old = await WireClient.open(server.url, ssl=trusting)
    await old.register("ann")
    assert served_cert(old) == first
    second = issue(ca, tmp_path)
    server.process.send_signal(signal.SIGHUP)
    await wait_until(lambda: "TLS certificate reloaded" in "".join(server.output), 10)
    new = await WireClient.open(server.url, ssl=trusting)
    assert served_cert(new) == second != first
    assert (await new.call("logout"))["type"] == "ok"
    await old.ok("create_room", room="Lobby")  # the old connection never noticed
    assert served_cert(old) == first
    for client in (old, new):
        await client.close()
    assert await server.terminate() == 0


async def test_sighup_with_a_broken_certificate_keeps_the_old_one(tmp_path: Path) -> None:
    """A half-written or mismatched renewal is logged and changes nothing."""
    ca = trustme.CA()
    first = issue(ca, tmp_path)
    server = await ServerProcess.start(
        "--port", "0", "--db", str(tmp_path / "c.db"), *CHEAP,
        "--certfile", str(tmp_path / "cert.pem"), "--keyfile", str(tmp_path / "key.pem"),
    )  # fmt: skip
    (tmp_path / "key.pem").write_bytes(ca.issue_cert("127.0.0.1").private_key_pem.bytes())
    server.process.send_signal(signal.SIGHUP)
    await wait_until(lambda: "reload failed" in "".join(server.output), 10)
    trusting = ssl.create_default_context()
    ca.configure_trust(trusting)
    client = await WireClient.open(server.url, ssl=trusting)
    assert served_cert(client) == first
    await client.close()
    assert await server.terminate() == 0


async def test_sighup_rereads_the_config_file_for_limits_and_log_level(tmp_path: Path) -> None:
    """A new log level and rate limit in the file apply on SIGHUP; restart-only keys are named."""
    config = tmp_path / "clubroom.toml"
    config.write_text('port = 0\ndb = "c.db"\nargon2-profile = "cheapest"\nrate-limit = 0\n')
    server = await ServerProcess.start("--config", str(config))
    ann = await user(server.url, "ann")
    await ann.ok("create_room", room="Lobby")
    for n in range(15):
        await ann.ok("send", room="Lobby", text=f"{n}")  # no limit yet
    config.write_text(
        'port = 1\ndb = "c.db"\nargon2-profile = "cheapest"\n'
        'rate-limit = 0.5\nrate-burst = 1\nlog-level = "DEBUG"\n'
    )
    server.process.send_signal(signal.SIGHUP)
    await wait_until(lambda: "configuration reloaded" in "".join(server.output), 10)
    assert any("only with a restart: port" in line for line in server.output)
    await ann.ok("send", room="Lobby", text="one")
    assert (await ann.call("send", room="Lobby", text="two"))["code"] == "rate_limited"
    other = await WireClient.open(server.url)  # DEBUG now: connections are logged
    await wait_until(lambda: "connection opened" in "".join(server.output), 10)
    for client in (ann, other):
        await client.close()
    assert await server.terminate() == 0
