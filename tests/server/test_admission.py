"""Who may connect: health checks, origins, trusted proxies and unfinished handshakes."""

from __future__ import annotations

import asyncio
import logging
import resource

import pytest
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import InvalidStatus

import protocol
from tests.conftest import MakeServer, RunningServer
from tests.waiting import wait_until
from tests.wsclient import PASSWORD, WireClient

OTHER_ADDRESS = "127.0.0.2"


async def http_exchange(port: int, request: bytes, address: str = "127.0.0.1") -> bytes:
    """Send a raw HTTP request and read everything until the server closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(address, 0))
    writer.write(request)
    try:
        return await asyncio.wait_for(reader.read(), 5)
    finally:
        writer.close()


async def test_head_healthz_answers_without_a_body(server: RunningServer) -> None:
    """HEAD /healthz is 200 with headers only; GET /healthz still says ok."""
    head = await http_exchange(server.port, b"HEAD /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    status, _, rest = head.partition(b"\r\n")
    assert status == b"HTTP/1.1 200 OK"
    assert rest.endswith(b"\r\n\r\n"), f"no body may follow the headers: {rest!r}"
    get = await http_exchange(server.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    assert get.startswith(b"HTTP/1.1 200 OK") and get.endswith(b"\r\n\r\nok")


async def refused_status(url: str, **kwargs: object) -> int:
    with pytest.raises(InvalidStatus) as refused:
        await ws_connect(url, **kwargs)  # type: ignore[arg-type]
    return refused.value.response.status_code


@pytest.mark.parametrize("origin", ["https://evil.example", "null", "http://127.0.0.1:1"])
async def test_foreign_origins_are_refused(server: RunningServer, origin: str) -> None:
    """A web page from another origin (or a sandboxed one, ``null``) gets HTTP 403."""
    assert await refused_status(server.url, origin=origin) == 403


@pytest.mark.single_process  # "own origin" is one host:port; a cluster has several
async def test_no_origin_own_origin_and_listed_origins_are_accepted(
    make_server: MakeServer,
) -> None:
    """Tools without Origin, pages of this very host:port and listed origins may connect."""
    server = await make_server(allowed_origins=("https://chat.example.org",))
    own = f"http://127.0.0.1:{server.port}"
    for origin in (None, own, "https://chat.example.org", "HTTPS://Chat.Example.org/"):
        client = await WireClient.open(server.url, origin=origin)
        assert (await client.call("logout"))["type"] == "ok", origin
        await client.close()
    assert await refused_status(server.url, origin="https://other.example.org") == 403


async def failed_logins_from(url: str, forwarded: str | None, attempts: int) -> list[str]:
    """Codes of ``attempts`` wrong logins on one connection claiming ``forwarded``."""
    headers = {protocol.FORWARDED_FOR_HEADER: forwarded} if forwarded else {}
    client = await WireClient.open(url, additional_headers=headers)
    codes = [
        (await client.call("login", username="nobody", password=PASSWORD))["code"]
        for _ in range(attempts)
    ]
    await client.close()
    return codes


async def test_a_trusted_proxy_names_the_client_address(
    make_server: MakeServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Behind a trusted proxy each visitor has their own limits, from the right-most entry."""
    caplog.set_level(logging.INFO)
    server = await make_server(
        trusted_proxies=("127.0.0.0/30",), login_failures_per_address=2, login_failures_per_user=0
    )
    visitor_a = "203.0.113.9, 198.51.100.7"  # the left entry is the visitor's own claim
    assert await failed_logins_from(server.url, visitor_a, 3) == [
        "invalid_credentials",
        "invalid_credentials",
        "too_many_attempts",
    ]
    assert await failed_logins_from(server.url, "203.0.113.9", 1) == ["invalid_credentials"]
    assert await failed_logins_from(server.url, "2001:db8::1", 1) == ["invalid_credentials"]
    assert await failed_logins_from(server.url, "198.51.100.7", 1) == ["too_many_attempts"]
    # Garbage is ignored: the proxy's own address is used.
    assert await failed_logins_from(server.url, "not-an-address", 2) == ["invalid_credentials"] * 2
    assert await failed_logins_from(server.url, None, 1) == ["too_many_attempts"]
    client = await WireClient.open(
        server.url, additional_headers={protocol.FORWARDED_FOR_HEADER: "192.0.2.44"}
    )
    await client.register("ann")
    await client.close()
    assert "registered user ann from 192.0.2.44" in caplog.text


async def test_forwarded_for_is_ignored_from_an_untrusted_peer(make_server: MakeServer) -> None:
    """Without --trusted-proxy, X-Forwarded-For cannot buy fresh per-address limits."""
    server = await make_server(login_failures_per_address=2, login_failures_per_user=0)
    assert await failed_logins_from(server.url, "198.51.100.1", 2) == ["invalid_credentials"] * 2
    assert await failed_logins_from(server.url, "198.51.100.2", 1) == ["too_many_attempts"]


async def test_unfinished_handshakes_are_capped_per_address(
    make_server: MakeServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Past the cap, new TCP connections from that address are dropped at accept; others pass."""
    server = await make_server(max_handshakes_per_address=5, handshake_timeout=30)
    caplog.set_level(logging.WARNING)
    half_open = [await asyncio.open_connection("127.0.0.1", server.port) for _ in range(5)]
    for _ in range(20):
        dropped = await http_exchange(server.port, b"GET / HTTP/1.1\r\nHost: x\r\n")
        assert dropped == b"", "dropped at once, long before the handshake timeout"
    other = await WireClient.open(server.url, local_addr=(OTHER_ADDRESS, 0))
    assert (await other.call("logout"))["type"] == "ok", "another address is unaffected"
    for _, writer in half_open:
        writer.close()
    await asyncio.gather(*(writer.wait_closed() for _, writer in half_open))
    assert server.app is not None
    edge = server.app.server
    await wait_until(lambda: edge.open_connections("127.0.0.1") == 0)
    again = await WireClient.open(server.url)
    assert (await again.call("logout"))["type"] == "ok"
    refusals = [r for r in caplog.records if "refusing connections from 127.0.0.1" in r.message]
    assert len(refusals) == 1, "one line per address per minute"
    assert not [r for r in caplog.records if r.exc_info], "no traceback"
    await other.close()
    await again.close()


async def test_the_total_of_unfinished_handshakes_is_capped(make_server: MakeServer) -> None:
    """Beyond the server-wide cap of pending handshakes, any address is dropped at accept."""
    server = await make_server(max_handshakes=3, max_handshakes_per_address=0)
    half_open = [await asyncio.open_connection("127.0.0.1", server.port) for _ in range(3)]
    dropped = await http_exchange(server.port, b"GET / HTTP/1.1\r\n", address=OTHER_ADDRESS)
    assert dropped == b""
    for _, writer in half_open:
        writer.close()


async def test_the_open_file_limit_is_raised_at_start(make_server: MakeServer) -> None:
    """Starting the server lifts the soft open-file limit to the hard one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    lowered = min(soft, 512) if hard == resource.RLIM_INFINITY else min(soft, hard, 512)
    resource.setrlimit(resource.RLIMIT_NOFILE, (lowered, hard))
    try:
        await make_server()
        raised, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        assert raised > lowered
        if hard != resource.RLIM_INFINITY:
            assert raised == hard
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


async def test_odd_handshakes_are_answered_without_a_traceback(
    server: RunningServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Repeated Origin or Host headers and junk origins get an HTTP answer, never a traceback."""
    requests = [
        "Origin: https://a.example\r\nOrigin: https://b.example\r\n",
        "Origin: http://[::1\r\n",
        "Host: a\r\nOrigin: http://a\r\n",
    ]
    for extra in requests:
        answer = await http_exchange(
            server.port,
            (
                "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                f"Sec-WebSocket-Version: 13\r\n{extra}\r\n"
            ).encode(),
        )
        assert answer.startswith(b"HTTP/1.1 403"), answer[:60]
    assert not [r for r in caplog.records if r.exc_info], "no traceback"


def test_accept_errors_are_logged_without_a_traceback(caplog: pytest.LogCaptureFixture) -> None:
    """asyncio's report of a failed accept (out of file descriptors) keeps one line, no stack."""
    import clubroom_server.server  # noqa: F401  (installs the filter)

    try:
        raise OSError(24, "Too many open files")
    except OSError as exc:
        logging.getLogger("asyncio").error(
            "socket.accept() out of system resource\nexception: %r", exc, exc_info=exc
        )
    (record,) = [r for r in caplog.records if r.name == "asyncio"]
    assert record.exc_info is None and "Too many open files" in record.getMessage()
