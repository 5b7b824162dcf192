"""Choosing a message in the room and acting on it, and searching, against a real server."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from textual.pilot import Pilot

from clubroom_tui.screens.search import SearchPanel
from clubroom_tui.widgets.composer import Composer
from clubroom_tui.widgets.message_log import MessageLog
from tests.conftest import RunningServer
from tests.tui.conftest import (
    MakeClient,
    ann_and_bob_in_lobby,
    ann_in_lobby,
    answer,
    choose_newest,
    delete_chosen,
    hear_from,
    logged_in,
    member,
    open_picker,
    say,
    say_and_choose,
    say_and_see,
    screen_text,
    type_into,
    wait_for,
    wait_for_text,
)


async def test_edit_opens_the_composer_with_the_text_and_shows_edited(
    server: RunningServer, config_dir: Path, make_client: MakeClient
) -> None:
    """e on one's own message puts its text in the box; Enter saves; everyone sees "(edited)"."""
    async with ann_and_bob_in_lobby(server.url, config_dir, make_client) as (pilot, bob):
        await say_and_choose(pilot, "see you at noon")
        await pilot.press("e")
        composer = pilot.app.screen.query_one(Composer)
        assert composer.value == "see you at noon" and pilot.app.focused is composer
        await wait_for_text(pilot, "Editing “see you at noon”")
        for _ in range(4):
            await pilot.press("backspace")
        await type_into(pilot, "#composer", "one")
        await pilot.press("enter")
        await wait_for_text(pilot, "ann: see you at one (edited)")
        assert "see you at noon" not in screen_text(pilot.app)
        await wait_for(
            lambda: bob.rooms["lobby"].messages[-1].text == "see you at one", "bob to see it"
        )


async def test_delete_asks_first_then_shows_message_deleted(
    server: RunningServer, config_dir: Path
) -> None:
    """d asks, naming the text; after yes the line reads "message deleted" and the text is gone."""
    async with ann_in_lobby(server.url, config_dir) as pilot:
        await say_and_choose(pilot, "my pin is 4321")
        await pilot.press("d")
        await answer(pilot, "Delete your message “my pin is 4321”?", yes=False)
        assert "ann: my pin is 4321" in screen_text(pilot.app)
        await delete_chosen(pilot, "Delete your message “my pin is 4321”?", "ann")
        assert "4321" not in screen_text(pilot.app)


async def test_the_room_owner_deletes_a_members_message_after_asking(
    server: RunningServer, config_dir: Path, make_client: MakeClient
) -> None:
    """ann made the room, so d on bob's message asks, naming bob, and deletes it."""
    async with ann_and_bob_in_lobby(server.url, config_dir, make_client) as (pilot, bob):
        await hear_from(pilot, bob, "lobby", "buy cheap pills")
        await choose_newest(pilot)
        await pilot.press("e")
        await wait_for_text(pilot, "Only bob can edit that message.")
        await delete_chosen(pilot, "Delete bob's message “buy cheap pills”?", "bob")
        await wait_for(lambda: bob.rooms["lobby"].messages[-1].deleted, "bob to see it")


async def test_react_from_the_picker_and_by_typing(
    server: RunningServer, config_dir: Path, make_client: MakeClient
) -> None:
    """r opens the picker; 1 gives 👍, a typed :tada: works too; counts show under the message."""
    async with ann_and_bob_in_lobby(server.url, config_dir, make_client) as (pilot, bob):
        message = await bob.send("lobby", "release is out")
        await wait_for_text(pilot, "bob: release is out")
        await bob.react("lobby", message.id, "👍")
        await wait_for_text(pilot, "👍 1")
        await choose_newest(pilot)
        await open_picker(pilot)
        await pilot.press("1")
        await wait_for_text(pilot, "👍 2")
        await open_picker(pilot)
        await type_into(pilot, "#react-other", "not one")
        await pilot.press("enter")
        await wait_for_text(pilot, "A reaction is one emoji")
        pilot.app.screen.query_one("#react-other").value = ""
        await type_into(pilot, "#react-other", ":tada:")
        await pilot.press("enter")
        await wait_for_text(pilot, "👍 2  :tada: 1")
        await open_picker(pilot)
        await pilot.press("1")  # chosen again: taken back
        await wait_for_text(pilot, "👍 1  :tada: 1")


async def test_reply_shows_the_excerpt_it_answers(server: RunningServer, config_dir: Path) -> None:
    """t on a message, then a send: the new message shows what it answers above it."""
    async with ann_in_lobby(server.url, config_dir) as pilot:
        await say_and_see(pilot, "who has the keys?", "anyone?")
        await choose_newest(pilot)
        await pilot.press("up", "t")
        await wait_for_text(pilot, "Replying to ann: “who has the keys?”")
        await say(pilot, "I do")
        shown = await wait_for_text(pilot, "↪ ann: who has the keys?", "ann: I do")
        assert shown.index("↪ ann: who has the keys?") < shown.index("ann: I do")


async def test_copy_puts_the_chosen_text_on_the_clipboard(
    server: RunningServer, config_dir: Path
) -> None:
    """c copies the chosen message's text, exactly, and says so."""
    async with ann_in_lobby(server.url, config_dir) as pilot:
        await say_and_choose(pilot, "ssh [bold]host[/bold]")
        await pilot.press("c")
        await wait_for_text(pilot, "Copied the message's text.")
        assert pilot.app.clipboard == "ssh [bold]host[/bold]"


async def test_search_finds_and_jumps_to_a_message_loading_history(
    server: RunningServer, config_dir: Path, make_client: MakeClient
) -> None:
    """/search opens the results; choosing one far back loads the history and selects it."""
    bob = await member(make_client, "lobby", create=True)
    needle = await bob.send("lobby", "the wifi password is on the fridge")
    for n in range(120):
        await bob.send("lobby", f"chatter {n}")
    async with logged_in(
        server.url, config_dir, room="lobby", create=False, size=(100, 30)
    ) as pilot:
        await wait_for_text(pilot, "bob: chatter 119")
        log = pilot.app.screen.query_one(MessageLog)
        assert not log.has_shown(needle.id)
        await say(pilot, "/search fridge")
        await wait_for(lambda: isinstance(pilot.app.screen, SearchPanel), "the search panel")
        await wait_for_text(pilot, "1 found", "bob: the wifi password is on the fridge")
        await pilot.press("enter")
        await wait_for(lambda: log.selected == needle.id, "the jump to the result")
        await wait_for_text(pilot, "bob: the wifi password is on the fridge")
        assert pilot.app.focused is log


async def test_a_refused_edit_stays_an_edit(
    server: RunningServer, config_dir: Path, make_client: MakeClient
) -> None:
    """If the message was deleted meanwhile, Enter says why and sends nothing new."""
    async with ann_in_lobby(server.url, config_dir) as pilot:
        await say_and_choose(pilot, "tbd")
        await pilot.press("e")
        await wait_for_text(pilot, "Editing “tbd”")
        other = await make_client()
        await wait_ready_and_resume(other, pilot)
        await other.join_room("lobby")
        message = other.rooms["lobby"].messages[-1]
        await other.delete("lobby", message.id)
        await wait_for_text(pilot, "ann: message deleted")
        await type_into(pilot, "#composer", " later")
        await pilot.press("enter")
        await wait_for_text(pilot, "Not edited:", "Editing “tbd”")
        assert pilot.app.screen.query_one(Composer).value == "tbd later"
        assert "ann: tbd later" not in screen_text(pilot.app)


async def wait_ready_and_resume(client: Any, pilot: Pilot[Any]) -> None:
    """A second connection of the app's user (the same session token)."""
    await wait_for(lambda: client.ready, "the second connection")
    await client.resume(pilot.app.client.token)
