"""The server while its PostgreSQL is away: ``unavailable`` answers, then recovery by itself."""

from __future__ import annotations

from clubroom_server.config import Settings
from tests.conftest import TEST_DEFAULTS, RunningServer
from tests.pginstance import OwnPostgres, private_postgres
from tests.waiting import wait_until
from tests.wsclient import in_room, user

__all__ = ["private_postgres"]  # the fixture


async def test_requests_answer_unavailable_while_postgres_is_down_then_work_again(
    private_postgres: OwnPostgres,
) -> None:
    """With the database down, sends answer unavailable; once it is back, chat goes on."""
    async with private_postgres.fresh_database() as url:
        server = RunningServer(Settings(**{**TEST_DEFAULTS, "db": url, "rate_limit": 0}))
        await server.start()
        try:
            ann, bob = await user(server.url, "ann"), await user(server.url, "bob")
            await in_room([ann, bob])
            before = await ann.ok("send", room="Lobby", text="before")
            private_postgres.stop("immediate")
            try:
                refused = await ann.call("send", room="Lobby", text="during")
                assert refused["type"] == "error" and refused["code"] == "unavailable"
                assert "retry" in refused["message"].lower()
                paged = await bob.call("history", room="Lobby", before=10**9, limit=10)
                assert paged["code"] == "unavailable"
            finally:
                private_postgres.start()
            replies: list[dict] = []  # type: ignore[type-arg]

            async def sent_again() -> bool:
                replies.append(await ann.call("send", room="Lobby", text="after"))
                return replies[-1]["type"] == "sent"

            await wait_until(sent_again, within=20)
            assert {r["code"] for r in replies[:-1]} <= {"unavailable"}
            seen = [(await bob.event("message"))["message"]["text"] for _ in range(2)]
            assert seen == ["before", "after"], "the refused message was never shown"
            page = await bob.ok("history", room="Lobby", before=10**9, limit=10)
            assert [m["text"] for m in page["messages"]] == ["before", "after"]
            assert page["messages"][0] == before["message"]
            for client in (ann, bob):
                await client.close()
        finally:
            await server.stop()


async def test_a_room_emptied_while_postgres_is_down_is_deleted_once_it_is_back(
    private_postgres: OwnPostgres,
) -> None:
    """The last leave during an outage still deletes the room and its messages afterwards."""
    async with private_postgres.fresh_database() as url:
        server = RunningServer(Settings(**{**TEST_DEFAULTS, "db": url}))
        await server.start()
        try:
            ann = await user(server.url, "ann")
            await ann.ok("create_room", room="Secret")
            await ann.ok("send", room="Secret", text="burn after reading")
            private_postgres.stop("immediate")
            try:
                await ann.ok("leave_room", room="Secret")
                refused = await ann.call("create_room", room="Secret")
                assert refused["code"] == "unavailable"
            finally:
                private_postgres.start()

            async def created_again() -> bool:
                return (await ann.call("create_room", room="Secret"))["type"] == "joined"

            await wait_until(created_again, within=20)
            assert await server.rows("SELECT text FROM messages") == []
            assert await server.rows("SELECT name FROM rooms") == [("Secret",)]
            await ann.close()
        finally:
            await server.stop()
