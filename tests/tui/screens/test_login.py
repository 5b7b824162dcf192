"""The login screen against a real server: register, log in, errors, remember me."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from clubroom_tui.app import ClubroomApp
from clubroom_tui.sessions import SavedSession, SessionStore
from tests.conftest import MakeServer, RunningServer
from tests.tui.conftest import (
    MakeClient,
    fast_client,
    fill_login,
    free_port,
    log_in,
    logged_in,
    make_app,
    quit_app,
    screen_text,
    type_into,
    wait_for,
    wait_for_text,
)


async def test_register_leads_to_the_dashboard(server: RunningServer, config_dir: Path) -> None:
    """Registering a new account shows the dashboard greeting the user by name."""
    async with logged_in(server.url, config_dir) as pilot:
        await wait_for_text(pilot, "Create Room", "Join Room", "Log out")


async def test_log_in_with_an_existing_account(
    server: RunningServer, config_dir: Path, make_client: MakeClient
) -> None:
    """An account made elsewhere logs in with its password and reaches the dashboard."""
    await make_client("bob")
    async with logged_in(server.url, config_dir, "bob", register=False) as pilot:
        await wait_for_text(pilot, "Hello, bob!", "Create Room")


async def test_password_is_masked(server: RunningServer, config_dir: Path) -> None:
    """The password field never shows what is typed."""
    app = make_app(server.url, config_dir)
    async with app.run_test() as pilot:
        await wait_for_text(pilot, "● connected")
        await type_into(pilot, "#password", "hunter2-secret!")
        assert "hunter2" not in screen_text(app)


@pytest.mark.parametrize(
    ("username", "password", "register", "sentence", "code"),
    [
        pytest.param(
            "bob",
            "wrong-password-9!",
            False,
            "That username and password do not match.",
            "invalid_credentials",
            id="wrong-password",
        ),
        pytest.param(
            "ann",
            "password!",
            True,
            "The password needs at least one digit.",
            "weak_password",
            id="weak-password-names-the-rule",
        ),
        pytest.param(
            "Bob",
            "another-pass-1!",
            True,
            "is taken; pick another.",
            "username_taken",
            id="taken-username",
        ),
    ],
)
async def test_a_refused_login_or_registration_is_explained_inline(
    server: RunningServer,
    config_dir: Path,
    make_client: MakeClient,
    username: str,
    password: str,
    register: bool,
    sentence: str,
    code: str,
) -> None:
    """The server's sentence, never its error code, shows on the login screen, which stays.

    bob exists: logging in as him with a wrong password (Enter in the form) is
    refused, and so is registering "Bob" or an account whose password lacks a digit.
    """
    await make_client("bob")
    app = make_app(server.url, config_dir)
    async with app.run_test(size=(100, 30)) as pilot:
        await fill_login(pilot, username, password)
        if register:
            await pilot.click("#register")
        else:
            await pilot.press("enter")
        shown = await wait_for_text(pilot, sentence, "Welcome to Clubroom", "Log in")
        assert code not in shown


async def test_registration_shows_the_password_rules(
    server: RunningServer, config_dir: Path
) -> None:
    """The login screen tells a newcomer what a password needs before they try."""
    app = make_app(server.url, config_dir)
    async with app.run_test() as pilot:
        await wait_for_text(pilot, "at least one letter, one digit", "and one symbol")


async def test_remember_me_resumes_without_a_password(
    server: RunningServer, config_dir: Path
) -> None:
    """With "Remember me", the next start goes straight to the dashboard and the rooms."""
    async with logged_in(server.url, config_dir, remember=True, room="lobby") as pilot:
        await quit_app(pilot)
    second = make_app(server.url, config_dir)
    async with second.run_test() as pilot:
        await wait_for_text(pilot, "Hello, ann!", "# lobby")


async def test_remembered_token_file_is_private(server: RunningServer, config_dir: Path) -> None:
    """The remembered token is stored in the config directory with mode 0600."""
    async with logged_in(server.url, config_dir, remember=True) as pilot:
        client = pilot.app.client
    path = config_dir / "sessions.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert client.token and client.token in path.read_text()


async def test_without_remember_me_nothing_is_stored(
    server: RunningServer, config_dir: Path
) -> None:
    """Logging in without "Remember me" leaves no token on disk."""
    async with logged_in(server.url, config_dir) as pilot:
        assert pilot.app.client.token
    assert SessionStore(config_dir).load(server.url) is None


async def test_invalid_saved_token_falls_back_to_login(
    server: RunningServer, config_dir: Path
) -> None:
    """A saved token the server rejects shows the login screen with a reason and is forgotten."""
    store = SessionStore(config_dir)
    store.save(server.url, SavedSession("not-a-real-token"))
    app = make_app(server.url, config_dir)
    async with app.run_test() as pilot:
        await wait_for_text(pilot, "Your saved session has expired", "Log in")
        await wait_for(lambda: store.load(server.url) is None, "the token to be forgotten")


async def test_unreachable_server_is_explained_and_retried(
    make_server: MakeServer, config_dir: Path
) -> None:
    """At start, an unreachable server gives a plain message; the app connects once it is up."""
    port = free_port()
    app = make_app(f"ws://127.0.0.1:{port}", config_dir)
    async with app.run_test(size=(100, 30)) as pilot:
        shown = await wait_for_text(pilot, "Cannot reach", "connection refused", "retrying in")
        assert "Traceback" not in shown
        await make_server(port=port)
        await log_in(pilot, "ann", register=True)


async def test_without_a_session_store_there_is_no_remember_me(server: RunningServer) -> None:
    """With --no-remember (no session store) the login screen offers no "Remember me"."""
    app = ClubroomApp(fast_client(server.url), sessions=None)
    async with app.run_test() as pilot:
        shown = await wait_for_text(pilot, "● connected", "Register")
        assert "Remember me" not in shown
        await log_in(pilot, "ann", register=True)
