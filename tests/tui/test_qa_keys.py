"""Found by typing into the real client in tmux: keys that went to the wrong place.

- Typed while the client starts (before it has put the terminal in raw mode),
  Enter arrives as a line feed (ctrl+j): it did nothing on the login form, so
  the password went on into the username field, in plain sight.
- A key that moves the focus (ctrl+g, ctrl+r, ctrl+n, ctrl+up) moved it only
  after the keys already typed behind it: ``ctrl+g Book Club ⏎`` typed at
  once tried to *create* "Book Club", and ``ctrl+up e`` typed an "e".
- Escape in the log moved the focus back to the box a moment later: what
  was typed right after it fell on the log and vanished.
- The login form offered "f6 Next mention", which means nothing there.
"""

from __future__ import annotations

from pathlib import Path

from tests.conftest import RunningServer
from tests.tui.conftest import (
    PASSWORD,
    MakeClient,
    log_in,
    logged_in,
    make_app,
    member,
    press_at_machine_speed,
    say_and_see,
    to_dashboard,
    type_at_machine_speed,
    wait_for,
    wait_for_text,
)

LINE_FEED = ("ctrl+j", "\n")  # what Enter is before the app has the terminal


def type_ahead(app: object, text: str) -> None:
    """Type ``text`` as it arrives when typed ahead of the app: each newline a line feed."""
    for n, line in enumerate(text.split("\n")):
        if n:
            press_at_machine_speed(app, LINE_FEED)  # type: ignore[arg-type]
        type_at_machine_speed(app, line)  # type: ignore[arg-type]


async def test_enter_typed_ahead_as_a_line_feed_still_logs_in(
    server: RunningServer, config_dir: Path, make_client: MakeClient
) -> None:
    """username ⏎ password ⏎ with ⏎ as a line feed: logged in, the password never shown."""
    await make_client("ann")
    app = make_app(server.url, config_dir)
    async with app.run_test() as pilot:
        await wait_for_text(pilot, "● connected")
        type_ahead(app, f"ann\n{PASSWORD}\n")
        shown = await wait_for_text(pilot, "Hello, ann!")
        assert PASSWORD not in shown


async def test_ctrl_g_then_a_name_at_once_joins(
    server: RunningServer, config_dir: Path, make_client: MakeClient
) -> None:
    """ctrl+g, "Book Club", Enter, all at once: the name goes to the join field, and joins."""
    await member(make_client, "Book Club", create=True)
    async with logged_in(server.url, config_dir) as pilot:
        press_at_machine_speed(pilot.app, ("ctrl+g", "\x07"))
        type_at_machine_speed(pilot.app, "Book Club\n")
        await wait_for_text(pilot, "# Book Club", "Leave")


async def test_ctrl_r_then_enter_at_once_opens_the_room(
    server: RunningServer, config_dir: Path
) -> None:
    """ctrl+r then Enter at once opens the highlighted room (not "Type a room name first.")."""
    async with logged_in(server.url, config_dir, room="den") as pilot:
        await to_dashboard(pilot, "# den")
        press_at_machine_speed(pilot.app, ("ctrl+r", "\x12"), ("enter", "\r"))
        await wait_for_text(pilot, "# den", "Leave")


async def test_ctrl_up_then_e_at_once_edits_the_newest_message(
    server: RunningServer, config_dir: Path
) -> None:
    """ctrl+up e typed at once: the newest message is being edited, no "e" in the box."""
    async with logged_in(server.url, config_dir, room="den") as pilot:
        await say_and_see(pilot, "tea at noon")
        press_at_machine_speed(pilot.app, ("ctrl+up", None), ("e", "e"))
        await wait_for_text(pilot, "Editing “tea at noon”")
        composer = pilot.app.screen.query_one("#composer")
        assert composer.value == "tea at noon"  # type: ignore[attr-defined]


async def test_escape_from_the_log_then_typing_at_once_writes_in_the_box(
    server: RunningServer, config_dir: Path
) -> None:
    """In the log, Escape then "hi" at once: "hi" is in the box, not lost on the log."""
    async with logged_in(server.url, config_dir, room="den") as pilot:
        await say_and_see(pilot, "tea at noon")
        await pilot.press("ctrl+up")
        await wait_for_text(pilot, "esc Back to writing")
        press_at_machine_speed(pilot.app, ("escape", "\x1b"), ("h", "h"), ("i", "i"))
        composer = pilot.app.screen.query_one("#composer")
        await wait_for(lambda: composer.value == "hi", "the typed text in the box")  # type: ignore[attr-defined]


async def test_f6_is_offered_only_once_logged_in(server: RunningServer, config_dir: Path) -> None:
    """The login form's footer does not offer "Next mention"; the dashboard's does."""
    app = make_app(server.url, config_dir)
    async with app.run_test(size=(120, 24)) as pilot:
        shown = await wait_for_text(pilot, "● connected", "^r Register")
        assert "Next mention" not in shown
        await log_in(pilot, "ann", register=True)
        await wait_for_text(pilot, "f6 Next mention")
