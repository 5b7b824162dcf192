"""Every character the client draws is readable: WCAG AA (4.5:1) in the dark and light themes.

The ratios are computed from what Textual actually renders (each segment's
resolved foreground and background, after the theme's variables, opacity
and tints are applied), screen by screen, with every focusable widget
focused in turn, so a colour cannot hide behind a selector or a state.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from rich.segment import Segment
from textual.app import App
from textual.color import Color
from textual.pilot import Pilot

from clubroom_tui.client import ConnectionState
from clubroom_tui.readable import BUTTONS, ROLES, readable_variables
from tests.conftest import RunningServer
from tests.contrast import AA_NORMAL_TEXT, contrast_ratio
from tests.tui.conftest import (
    MakeClient,
    enter_room,
    fill_login,
    log_in,
    make_app,
    say,
    wait_for,
    wait_for_text,
)

THEMES = ("textual-dark", "textual-light")
# Box drawing and block elements draw borders, rules and scrollbars, not text.
NOT_TEXT = {chr(code) for code in range(0x2500, 0x25A0)} | {" ", "\u00a0"}


def unreadable_segments(pilot: Pilot[Any], where: str) -> list[str]:
    """Each run of text on screen below AA, described with its colours and ratio."""
    found = []
    for row, strip in enumerate(pilot.app.screen._compositor.render_strips()):
        for segment in strip:
            problem = _problem(segment)
            if problem:
                found.append(f"{pilot.app.theme} · {where} · row {row}: {problem}")
    return found


def ratios_of(pilot: Pilot[Any], text: str) -> list[float]:
    """The contrast of every segment on screen that draws exactly ``text`` (fails if none)."""
    ratios = [
        contrast_ratio(
            Color.from_rich_color(segment.style.color),
            Color.from_rich_color(segment.style.bgcolor),
        )
        for strip in pilot.app.screen._compositor.render_strips()
        for segment in strip
        if segment.text.strip() == text and segment.style and segment.style.color
    ]
    assert ratios, f"{text!r} is not drawn on its own"
    return ratios


def _problem(segment: Segment) -> str | None:
    text, style = segment.text, segment.style
    if not set(text) - NOT_TEXT or style is None:
        return None
    if style.color is None or style.bgcolor is None:
        return f"{text.strip()!r} has no explicit colour ({style})"
    foreground = Color.from_rich_color(style.color)
    background = Color.from_rich_color(style.bgcolor)
    if style.reverse:
        foreground, background = background, foreground
    if style.dim:
        foreground = background.blend(foreground, 0.5)  # as a terminal shows "dim"
    if foreground == background:
        return None  # ink of the background's colour draws nothing (an unchecked box's "X")
    ratio = contrast_ratio(foreground, background)
    if ratio >= AA_NORMAL_TEXT:
        return None
    return f"{text.strip()!r} {foreground.hex} on {background.hex} = {ratio:.2f}:1"


async def check_every_focus(pilot: Pilot[Any], where: str) -> list[str]:
    """The screen as it is, then with each focusable widget focused in turn."""
    found = unreadable_segments(pilot, where)
    for widget in list(pilot.app.screen.focus_chain):
        widget.focus()
        await pilot.pause()
        found += unreadable_segments(pilot, f"{where}, {widget!r} focused")
    return found


@pytest.mark.parametrize("theme", THEMES)
async def test_every_screen_is_readable(
    server: RunningServer, config_dir: Path, make_client: MakeClient, theme: str
) -> None:
    """Login with an error, dashboard, a busy room, and a room offline with a pending send."""
    bob = await make_client("bob")
    await bob.create_room("lobby")
    await make_client("ann")
    app = make_app(server.url, config_dir)
    app.theme = theme
    found: list[str] = []
    async with app.run_test(size=(100, 30)) as pilot:
        await fill_login(pilot, "ann", "wrong-password-9!")
        await pilot.press("enter")
        await wait_for_text(pilot, "do not match")
        found += await check_every_focus(pilot, "login, refused")
        await log_in(pilot, "ann", register=False)
        found += await check_every_focus(pilot, "dashboard")
        await enter_room(pilot, "lobby", create=False)
        await bob.send("lobby", "a message from bob")
        await say(pilot, "and one from ann")
        carol = await make_client("carol")
        await carol.join_room("lobby")
        await wait_for_text(pilot, "bob: a message from bob", "ann: and one from ann", "carol")
        found += await check_every_focus(pilot, "room")
        # the two colours the issue measured are among those checked, and pass
        assert min(ratios_of(pilot, "bob")) >= AA_NORMAL_TEXT
        assert min(ratios_of(pilot, "Members (3)")) >= AA_NORMAL_TEXT
        await server.stop()
        await wait_for(lambda: app.connection_state is not ConnectionState.CONNECTED, "offline")
        await say(pilot, "waiting to be sent")
        await wait_for_text(pilot, "waiting to be sent")
        found += await check_every_focus(pilot, "room, offline, a send pending")
    assert found == [], "\n".join(dict.fromkeys(found))


@pytest.mark.parametrize("theme", sorted(App().available_themes))
def test_clubroom_colours_are_readable_in_every_textual_theme(theme: str) -> None:
    """Each $clubroom-* text colour reaches AA on each background it is meant for, in any theme."""
    app = App()
    app.theme = theme
    variables = readable_variables(app.get_css_variables())
    surface, foreground = Color.parse(variables["surface"]), Color.parse(variables["foreground"])
    backgrounds = {
        name: Color.parse(variables[name]) for name in ("background", "surface", "panel")
    }
    backgrounds["surface-focused"] = surface + foreground.with_alpha(0.05)
    for name in ("primary-background", "footer-background"):
        backgrounds[name] = Color.parse(variables["background"]) + Color.parse(variables[name])
    low = {}
    for name, role in ROLES.items():
        for background in role.backgrounds:
            ratio = contrast_ratio(Color.parse(variables[name]), backgrounds[background])
            if ratio < AA_NORMAL_TEXT:
                low[f"{name} on {background}"] = round(ratio, 2)
    for button in BUTTONS:
        label = Color.parse(variables[f"{button}-text"])
        ratio = contrast_ratio(label, Color.parse(variables[button]))
        if ratio < AA_NORMAL_TEXT:
            low[button] = round(ratio, 2)
    assert low == {}
