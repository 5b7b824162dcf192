"""An idle connection costs what websockets costs, not a dict more (issue 17, S3).

CPython keeps up to 30 attributes of a class's instances in one key table
shared by all of them; a 31st, or one first set after construction, gives
every instance a dict of its own: 1.5 KiB per connection here, which was
what put idle connections over 1.25× the bare-websockets ceiling. The server's
connection class keeps its own attributes in slots; this fails if an
attribute added later (by us or a websockets upgrade) brings the dict back.
"""

from __future__ import annotations

import sys

import pytest

from tests.conftest import RunningServer
from tests.server.conftest import Connect
from tests.wsclient import resumed

SHARED_DICT_BYTES = 1024  # a dict of its own is ~1,600 bytes; a view on shared keys ~300


@pytest.mark.sqlite_only
async def test_a_logged_in_connection_keeps_its_attributes_in_the_shared_table(
    server: RunningServer, connect: Connect
) -> None:
    first = await connect("ann")
    second = await resumed(server.url, first.token)
    try:
        assert server.app is not None
        connections = [peer.websocket for peer in server.app.peers]
        assert len(connections) == 2
        for connection in connections:
            assert connection.recv_messages is not None  # the handshake is over: all are set
            assert sys.getsizeof(connection.__dict__) < SHARED_DICT_BYTES, (
                f"{type(connection).__name__} has {len(connection.__dict__)} instance "
                "attributes in a dict of its own; keep new ones in __slots__"
            )
    finally:
        await second.close()
