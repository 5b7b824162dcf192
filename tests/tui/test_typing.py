"""Keys at machine speed reach the focused widget in order, and Enter's effect comes first."""

from __future__ import annotations

from pathlib import Path

from textual.widgets import Input

from clubroom_tui.widgets.composer import Composer
from tests.conftest import MakeServer
from tests.tui.conftest import (
    PASSWORD,
    MakeClient,
    logged_in,
    make_app,
    member,
    seed_room,
    type_at_machine_speed,
    wait_for,
    wait_for_text,
)

LINES = [f"join{n}" for n in range(1, 31)]


async def test_lines_typed_at_machine_speed_are_stored_one_to_one(
    make_server: MakeServer, config_dir: Path, make_client: MakeClient
) -> None:
    """30 ``text⏎`` lines typed with no pause in a 500-message room are 30 messages, exactly."""
    server = await make_server(rate_limit=0, room_rate_limit=0)
    bob = await member(make_client, "busy", create=True, url=server.url)
    await seed_room(bob, "busy", 500)
    async with logged_in(server.url, config_dir, room="busy", create=False) as pilot:
        await wait_for_text(pilot, "old 000499")
        type_at_machine_speed(pilot.app, "".join(f"{line}\n" for line in LINES))
        mine = lambda: [m.text for m in bob.rooms["busy"].messages if m.author == "ann"]  # noqa: E731
        await wait_for(lambda: len(mine()) >= len(LINES), "ann's lines to be stored")
        stored = await bob.history("busy", before=bob.rooms["busy"].messages[-1].id + 1, limit=40)
        assert [m.text for m in stored.messages if m.author == "ann"] == LINES
        assert pilot.app.screen.query_one(Composer).value == ""


async def test_login_form_keys_after_enter_go_to_the_password(
    make_server: MakeServer, config_dir: Path
) -> None:
    """``alice⏎password`` typed at once fills each field with its own part, then registers."""
    server = await make_server()
    app = make_app(server.url, config_dir)
    async with app.run_test() as pilot:
        await wait_for_text(pilot, "● connected")
        type_at_machine_speed(app, f"alice\n{PASSWORD}")
        await wait_for(
            lambda: app.screen.query_one("#password", Input).value == PASSWORD, "the password"
        )
        assert app.screen.query_one("#username", Input).value == "alice"
        await pilot.press("ctrl+r")
        await wait_for_text(pilot, "Hello, alice!")


async def test_typed_emoji_keep_their_zero_width_joiners(
    make_server: MakeServer, config_dir: Path, make_client: MakeClient
) -> None:
    """An emoji typed as its code points (with ZWJ) is sent exactly as typed."""
    server = await make_server()
    bob = await member(make_client, "den", create=True, url=server.url)
    async with logged_in(server.url, config_dir, room="den", create=False) as pilot:
        family = "\U0001f468\u200d\U0001f469\u200d\U0001f467 ok\n"
        type_at_machine_speed(pilot.app, family)
        await wait_for(lambda: bob.rooms["den"].messages, "the message")
        assert bob.rooms["den"].messages[-1].text == family.strip("\n")
