"""Bad input gets a clear error, the connection stays usable, and nothing is mixed up."""

from __future__ import annotations

import json

import pytest

from tests.conftest import MakeServer
from tests.server.conftest import Connect
from tests.wsclient import WireClient


async def still_works(client: WireClient) -> None:
    """The same connection still answers a well-formed request."""
    assert (await client.call("logout"))["type"] == "ok"


@pytest.mark.parametrize(
    ("frame", "says"),
    [
        (b'{"type": "logout"}', "Binary"),
        ("{not json", "not valid JSON"),
        ("[1, 2, 3]", "JSON object"),
        ('"a string"', "JSON object"),
        ("null", "JSON object"),
        ("{}", "`type`"),
        ('{"type": 7}', "`type`"),
        ('{"type": "login", "username": "ann"}', "password"),
        ('{"type": "login", "username": 5, "password": "x"}', "$.username"),
        ('{"type": "send", "room": "x", "text": ["hi"]}', "$.text"),
        ('{"type": "history", "room": "x", "before": "10"}', "$.before"),
        ('{"type": "join_room", "room": "x", "after": -1}', "$.after"),
        ('{"type": "join_room", "room": "x", "after": 99999999999999999999999}', "$.after"),
        ('{"type": "send", "room": "x", "text": "t", "nonce": "' + "n" * 65 + '"}', "$.nonce"),
        ('{"type": "resume", "token": null}', "$.token"),
    ],
)
async def test_malformed_frames_get_bad_request(
    connect: Connect, frame: str | bytes, says: str
) -> None:
    """Each malformed frame gets bad_request saying what is wrong; the connection survives."""
    client = await connect()
    reply = await client.send_raw(frame)
    assert reply["type"] == "error" and reply["code"] == "bad_request"
    assert says in reply["message"]
    await still_works(client)


async def test_unknown_type_echoes_the_id(connect: Connect) -> None:
    """An unknown type gets unknown_type with the request's id."""
    client = await connect()
    reply = await client.call("teleport", to="mars")
    assert reply["code"] == "unknown_type" and reply["id"] == 1
    await still_works(client)


@pytest.mark.parametrize("bad_id", ["x" * 65, True, 1.5, [1], {"a": 1}])
async def test_invalid_ids_are_reported_without_echo(connect: Connect, bad_id: object) -> None:
    """An over-long or mistyped id is a bad_request whose reply carries no id."""
    client = await connect()
    reply = await client.send_raw(json.dumps({"type": "logout", "id": bad_id}))
    assert reply["code"] == "bad_request" and "id" not in reply
    assert "$.id" in reply["message"]
    await still_works(client)


async def test_string_and_integer_ids_are_echoed_exactly(connect: Connect) -> None:
    """A 64-character string id and a big integer id come back unchanged."""
    client = await connect()
    for request_id in ("k" * 64, 2**70, -3, 0):
        await client.ws.send(json.dumps({"type": "logout", "id": request_id}))
        reply = await client.unmatched()
        assert reply == {"type": "ok", "id": request_id}


async def test_requests_without_id_get_replies_without_id(connect: Connect) -> None:
    """A request with no id is still answered, and the reply has no id."""
    client = await connect()
    reply = await client.send_raw('{"type": "logout"}')
    assert reply == {"type": "ok"}


async def test_unknown_extra_fields_are_ignored(connect: Connect) -> None:
    """Extra fields are ignored, not errors."""
    client = await connect()
    reply = await client.call("logout", colour="blue", nested={"x": [1]})
    assert reply["type"] == "ok"


async def test_replies_come_in_request_order(connect: Connect) -> None:
    """Pipelined requests are answered in the order they were sent."""
    client = await connect("ann")
    ids = list(range(100, 140))
    for request_id in ids:
        await client.ws.send(json.dumps({"type": "join_room", "id": request_id, "room": "x"}))
    replies = [await client.unmatched() for _ in ids]
    assert [r["id"] for r in replies] == ids


async def test_oversized_frame_closes_with_1009(make_server: MakeServer) -> None:
    """A frame over the limit closes the connection with code 1009; others carry on."""
    server = await make_server(max_frame=4096)
    big = await WireClient.open(server.url)
    other = await WireClient.open(server.url)
    await big.ws.send(json.dumps({"type": "logout", "pad": "x" * 5000}))
    assert await big.wait_closed() == 1009
    assert (await other.call("logout"))["type"] == "ok"
    await other.close()


async def test_text_frame_with_invalid_utf8_closes_with_1007(connect: Connect) -> None:
    """Invalid UTF-8 in a text frame is a protocol violation (1007), by RFC 6455."""
    client = await connect()
    transport = client.ws.transport
    # A masked text frame whose payload is the lone byte 0xff.
    transport.write(bytes([0x81, 0x81, 0, 0, 0, 0, 0xFF]))
    assert await client.wait_closed() == 1007


async def test_no_traceback_reaches_a_client(connect: Connect) -> None:
    """Hostile field values are answered with plain sentences, never Python internals."""
    client = await connect()
    frames = [
        {"type": "login", "username": "\udcff" * 3, "password": "\x00"},
        {"type": "register", "username": "a" * 10000, "password": "b" * 10000},
        {"type": "resume", "token": "\ud800"},
    ]
    for frame in frames:
        reply = await client.send_raw(json.dumps(frame))
        assert reply["type"] == "error"
        assert "Traceback" not in reply["message"] and 'File "' not in reply["message"]
    await still_works(client)


@pytest.mark.parametrize(
    "frame",
    [
        "[" * 5000 + "]" * 5000,
        '{"type": "send", "room": "x", "text": ' + "[" * 5000 + "]" * 5000 + "}",
        '{"type": "logout", "pad": ' + '{"a":' * 3000 + "1" + "}" * 3000 + "}",
    ],
    ids=["arrays", "inside-a-request", "objects"],
)
async def test_deep_nesting_is_a_bad_request_without_a_traceback(
    connect: Connect, caplog: pytest.LogCaptureFixture, frame: str
) -> None:
    """A deeply nested frame gets bad_request on an open connection and logs no traceback."""
    client = await connect()
    for _ in range(3):
        reply = await client.send_raw(frame)
        assert reply["type"] == "error" and reply["code"] == "bad_request"
    await still_works(client)
    assert not [r for r in caplog.records if r.exc_info], "no traceback was logged"
