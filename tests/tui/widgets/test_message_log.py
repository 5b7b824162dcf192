"""The message log on its own: what other people's text can and cannot do to the screen."""

from __future__ import annotations

from textual.app import App, ComposeResult
from textual.pilot import Pilot

from clubroom_tui.widgets.message_log import MessageLog
from protocol import Message
from tests.tui.conftest import screen_text


class LogApp(App[None]):
    """Just a message log, as the room screen shows it."""

    def compose(self) -> ComposeResult:
        yield MessageLog("ann", id="log")


def message(
    id: int, text: str, author: str = "bob", at: str = "2026-11-24T05:01:33.123Z"
) -> Message:
    return Message(id=id, room="lobby", author=author, text=text, at=at)


async def show(app: LogApp, pilot: Pilot[None], *messages: Message) -> str:
    """Add messages to the log and return the screen once drawn."""
    app.query_one(MessageLog).add_messages(messages)
    await pilot.pause()
    await pilot.pause()
    return screen_text(app)


async def test_escape_sequences_are_made_visible() -> None:
    """ESC, other C0/C1 controls and direction overrides show as visible stand-ins."""
    app = LogApp()
    async with app.run_test(size=(100, 10)) as pilot:
        shown = await show(app, pilot, message(1, "\x1b[2Jred\x1b[31m \x9b1m \x07 \u202eevil"))
    assert "␛[2Jred␛[31m \\x9b1m ␇ \\u202eevil" in shown
    assert "\x1b" not in shown and "\x9b" not in shown and "\u202e" not in shown


async def test_markup_in_a_username_is_literal() -> None:
    """A name that looks like markup is printed as typed."""
    app = LogApp()
    async with app.run_test(size=(100, 10)) as pilot:
        shown = await show(app, pilot, message(1, "hi", author="[reverse]x"))
    assert "[reverse]x: hi" in shown


async def test_a_message_is_shown_once_however_often_it_arrives() -> None:
    """Adding a message twice (snapshot and live event) shows it once."""
    app = LogApp()
    async with app.run_test(size=(100, 10)) as pilot:
        await show(app, pilot, message(1, "only once"))
        shown = await show(app, pilot, message(1, "only once"))
    assert shown.count("only once") == 1


async def test_older_messages_go_above_with_a_day_separator() -> None:
    """Older messages are inserted on top, each day headed by its own separator."""
    app = LogApp()
    async with app.run_test(size=(100, 12)) as pilot:
        await show(app, pilot, message(5, "today", at="2026-11-24T12:00:00.000Z"))
        app.query_one(MessageLog).add_older([message(2, "earlier", at="2026-11-20T12:00:00.000Z")])
        await pilot.pause()
        shown = screen_text(app)
    assert shown.index("earlier") < shown.index("today")
    separators = [line for line in shown.splitlines() if line.strip().startswith("── ")]
    assert len(separators) == 2


async def test_long_messages_rewrap_when_the_terminal_resizes() -> None:
    """A long line is wrapped to the new width after a resize, losing no words."""
    words = " ".join(f"word{n}" for n in range(40))
    app = LogApp()
    async with app.run_test(size=(60, 20)) as pilot:
        await show(app, pilot, message(1, words))
        await pilot.resize_terminal(120, 20)
        await pilot.pause()
        await pilot.pause()
        lines = [line for line in screen_text(app).splitlines() if "word" in line]
    assert len(lines) <= 3
    assert "word39" in "".join(lines)


def reversed_rows(app: LogApp) -> set[str]:
    """The texts of screen rows drawn in reverse video (the chosen message)."""
    rows = app.screen._compositor.render_strips()
    return {
        strip.text.strip("│ ")
        for strip in rows
        if any(seg.style is not None and seg.style.reverse and seg.text.strip() for seg in strip)
    }


async def test_choosing_moves_the_highlight_one_message_at_a_time() -> None:
    """up/down in the focused log choose a message; exactly its lines are highlighted."""
    app = LogApp()
    async with app.run_test(size=(60, 12)) as pilot:
        await show(app, pilot, *(message(n, f"line {n}") for n in range(1, 6)))
        log = app.query_one(MessageLog)
        log.focus()
        await pilot.press("up")  # the first choice is the newest message
        await pilot.pause()
        assert log.selected == 5
        await pilot.press("up", "up")
        await pilot.pause()
        assert log.selected == 3
        chosen = reversed_rows(app)
        assert len(chosen) == 1 and next(iter(chosen)).endswith("bob: line 3")
        await pilot.press("down")
        await pilot.pause()
        assert [row[-11:] for row in reversed_rows(app)] == ["bob: line 4"]


async def test_changes_show_edited_deleted_reactions_and_replies() -> None:
    """A changed message is drawn as it is now: (edited), message deleted, counts, excerpt."""
    from protocol import Reaction, ReplyRef

    app = LogApp()
    async with app.run_test(size=(80, 12)) as pilot:
        await show(app, pilot, message(1, "helo"), message(2, "secret"), message(3, "ok"))
        log = app.query_one(MessageLog)
        log.update_messages(
            [
                Message(1, "lobby", "bob", "hello", "2026-11-24T05:01:33.123Z",
                        edited_at="2026-11-24T05:02:00.000Z",
                        reactions=[Reaction("👍", 2, True), Reaction(":tada:", 1)]),
                Message(2, "lobby", "bob", "", "2026-11-24T05:01:33.123Z", deleted=True),
                Message(3, "lobby", "bob", "ok", "2026-11-24T05:01:33.123Z",
                        reply_to=ReplyRef(2, "bob", deleted=True)),
            ]
        )  # fmt: skip
        await pilot.pause()
        shown = screen_text(app)
    assert "bob: hello (edited)" in shown and "👍 2  :tada: 1" in shown
    assert "bob: message deleted" in shown and "secret" not in shown
    assert "↪ bob: message deleted" in shown


async def test_a_click_chooses_the_message_under_it() -> None:
    """Clicking a message's line chooses that message."""
    app = LogApp()
    async with app.run_test(size=(60, 12)) as pilot:
        shown = await show(app, pilot, *(message(n, f"line {n}") for n in range(1, 4)))
        row = next(y for y, text in enumerate(shown.splitlines()) if "bob: line 2" in text)
        await pilot.click(MessageLog, offset=(10, row))
        await pilot.pause()
        assert app.query_one(MessageLog).selected == 2
