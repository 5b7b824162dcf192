"""Accounts and sessions: register, login, resume, logout and their errors."""

from __future__ import annotations

import pytest

import protocol
from protocol import parse_time
from tests.conftest import MakeServer, RunningServer
from tests.server.conftest import Connect
from tests.wsclient import PASSWORD, WireClient, resumed


async def test_register_welcomes_with_token_and_canonical_name(connect: Connect) -> None:
    """Registering answers welcome with the spelling given, a token and a 30-day expiry."""
    client = await connect()
    reply = await client.call("register", username="Ann.B-1", password=PASSWORD)
    assert reply["type"] == "welcome" and reply["id"] == 1
    assert reply["username"] == "Ann.B-1"
    assert len(reply["token"]) >= 43  # 256 bits in URL-safe base64
    days = (parse_time(reply["expires_at"]) - parse_time("2026-01-01T00:00:00.000Z")).days
    assert days > 0
    assert reply["expires_at"].endswith("Z") and reply["expires_at"][-5] == "."


async def test_register_authenticates_the_connection(connect: Connect) -> None:
    """After register the same connection may create rooms."""
    client = await connect("ann")
    assert (await client.call("create_room", room="Lobby"))["type"] == "joined"


async def test_password_is_stored_only_as_argon2id(connect: Connect, server: RunningServer) -> None:
    """The database holds an argon2id hash, never the password; tokens only as hashes."""
    client = await connect("ann")
    [(stored,)] = await server.rows("SELECT password_hash FROM users")
    tokens = [row[0] for row in await server.rows("SELECT hash FROM tokens")]
    assert stored.startswith("$argon2id$") and PASSWORD not in stored
    assert client.token not in tokens and len(tokens) == 1


async def test_usernames_are_unique_without_regard_to_case(connect: Connect) -> None:
    """``Ann`` and ``ann`` are one account: the second registration is refused."""
    await connect("Ann")
    other = await connect()
    reply = await other.call("register", username="aNN", password=PASSWORD)
    assert reply["code"] == "username_taken"


async def test_login_accepts_any_case_and_answers_canonical_spelling(connect: Connect) -> None:
    """Logging in as ``ANN`` welcomes ``Ann``."""
    await connect("Ann")
    client = await connect()
    reply = await client.ok("login", username="ANN", password=PASSWORD)
    assert reply["username"] == "Ann"


@pytest.mark.parametrize("username", ["ab", "x" * 33, "has space", "émile", "semi;colon", ""])
async def test_invalid_usernames_are_refused(connect: Connect, username: str) -> None:
    """A username outside 3–32 of A–Z a–z 0–9 _ . - gets invalid_username."""
    client = await connect()
    reply = await client.call("register", username=username, password=PASSWORD)
    assert reply["code"] == "invalid_username"
    assert "3–32" in reply["message"]


@pytest.mark.parametrize(
    ("password", "says"),
    [
        ("a1!", "too short"),
        ("x1!" * 400, "too long"),
        ("12345678!", "letter"),
        ("abcdefgh!", "digit"),
        ("abcdefgh1", "symbol"),
        ("my-carol-99", "username"),
    ],
)
async def test_weak_passwords_say_which_rule_failed(
    connect: Connect, password: str, says: str
) -> None:
    """Each password rule, when broken, is named in the weak_password message."""
    client = await connect()
    reply = await client.call("register", username="Carol", password=password)
    assert reply["code"] == "weak_password"
    assert says in reply["message"]


async def test_wrong_password_and_unknown_user_look_the_same(connect: Connect) -> None:
    """Both answer invalid_credentials with the same message."""
    await connect("ann")
    client = await connect()
    wrong = await client.call("login", username="ann", password="not-it-123!")
    unknown = await client.call("login", username="nobody", password="not-it-123!")
    impossible = await client.call("login", username="no such user!", password="x")
    assert wrong["code"] == unknown["code"] == impossible["code"] == "invalid_credentials"
    assert wrong["message"] == unknown["message"] == impossible["message"]


async def test_failed_logins_are_throttled_per_username(make_server: MakeServer) -> None:
    """After the allowed failures, even the right password gets too_many_attempts."""
    server = await make_server(login_failures_per_user=3, login_failures_per_address=100)
    client = await WireClient.open(server.url)
    await client.register("ann")
    await client.ok("logout")
    for _ in range(3):
        assert (await client.call("login", username="ann", password="bad-pass-1!"))[
            "code"
        ] == "invalid_credentials"
    reply = await client.call("login", username="ann", password=PASSWORD)
    assert reply["code"] == "too_many_attempts"
    assert 0 < reply["retry_after"] <= 60
    other = await client.call("register", username="bob", password=PASSWORD)
    assert other["type"] == "welcome", "another username is not affected"
    await client.close()


async def test_failed_logins_are_throttled_per_address(make_server: MakeServer) -> None:
    """Guessing across many usernames from one address is throttled too."""
    server = await make_server(login_failures_per_user=100, login_failures_per_address=4)
    client = await WireClient.open(server.url)
    for n in range(4):
        await client.call("login", username=f"user{n}", password="bad-pass-1!")
    reply = await client.call("login", username="user9", password="bad-pass-1!")
    assert reply["code"] == "too_many_attempts" and reply["retry_after"] > 0
    await client.close()


async def test_resume_with_token_authenticates_a_new_connection(connect: Connect) -> None:
    """A token from welcome logs a fresh connection in as the same user."""
    first = await connect("ann")
    second = await connect()
    reply = await second.ok("resume", token=first.token)
    assert reply["username"] == "ann" and reply["token"] == first.token


async def test_resume_with_unknown_token_is_refused(connect: Connect) -> None:
    """A made-up token gets invalid_token."""
    client = await connect()
    assert (await client.call("resume", token="made-up"))["code"] == "invalid_token"


async def test_logout_revokes_the_token(connect: Connect) -> None:
    """After logout the token no longer resumes, and the connection is anonymous again."""
    client = await connect("ann")
    assert (await client.call("logout"))["type"] == "ok"
    assert (await client.call("create_room", room="x"))["code"] == "unauthenticated"
    other = await connect()
    assert (await other.call("resume", token=client.token))["code"] == "invalid_token"
    assert (await client.call("login", username="ann", password=PASSWORD))["type"] == "welcome"


async def test_logout_when_anonymous_is_ok(connect: Connect) -> None:
    """logout on an unauthenticated connection answers ok."""
    client = await connect()
    assert (await client.call("logout"))["type"] == "ok"


@pytest.mark.parametrize("kind", ["register", "login", "resume"])
async def test_authenticating_twice_is_refused(connect: Connect, kind: str) -> None:
    """register/login/resume on an authenticated connection: already_authenticated."""
    client = await connect("ann")
    fields = (
        {"token": client.token} if kind == "resume" else {"username": "ann", "password": PASSWORD}
    )
    assert (await client.call(kind, **fields))["code"] == "already_authenticated"


@pytest.mark.parametrize(
    ("kind", "fields"),
    [
        ("create_room", {"room": "x"}),
        ("join_room", {"room": "x"}),
        ("leave_room", {"room": "x"}),
        ("send", {"room": "x", "text": "hi"}),
        ("history", {"room": "x", "before": 10}),
    ],
)
async def test_room_requests_need_authentication(
    connect: Connect, kind: str, fields: dict[str, object]
) -> None:
    """Every room request on an anonymous connection gets unauthenticated."""
    client = await connect()
    assert (await client.call(kind, **fields))["code"] == "unauthenticated"


async def test_expired_tokens_do_not_resume(connect: Connect, server: RunningServer) -> None:
    """A token past its expiry is refused like a revoked one."""
    client = await connect("ann")
    await server.rows("UPDATE tokens SET expires_ms = 1")
    other = await connect()
    assert (await other.call("resume", token=client.token))["code"] == "invalid_token"


async def test_login_rehashes_when_parameters_changed(make_server: MakeServer) -> None:
    """A hash made with older parameters is replaced by one with today's at login."""
    old = await make_server(argon2_profile="cheapest")
    client = await WireClient.open(old.url)
    await client.register("ann")
    await client.close()
    await old.stop()
    new = await make_server(db=old.db, argon2_profile="rfc9106-low-memory")
    client = await WireClient.open(new.url)
    await client.ok("login", username="ann", password=PASSWORD)
    await client.close()
    [(stored,)] = await new.rows("SELECT password_hash FROM users")
    assert "m=65536,t=3,p=4" in stored


async def test_logout_ends_every_connection_of_the_session(
    connect: Connect, server: RunningServer
) -> None:
    """Logging out closes other connections resumed with the same token (4001), at once."""
    first = await connect("ann")
    second = await resumed(server.url, first.token)
    bob = await connect("bob")
    await bob.ok("create_room", room="Lobby")
    await second.ok("join_room", room="Lobby")
    await bob.event("member_joined")
    await first.ok("logout")
    assert await second.wait_closed() == protocol.CLOSE_LOGGED_OUT
    assert "Logged out" in (second.ws.close_reason or "")
    left = await bob.event("member_left")
    assert left["username"] == "ann", "no grace period after a logout"
    again = await connect()
    assert (await again.call("resume", token=first.token))["code"] == "invalid_token"
    assert (await bob.call("send", room="Lobby", text="still here"))["type"] == "sent"
