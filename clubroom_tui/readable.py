"""Text colours that stay readable in any theme: WCAG AA (4.5:1) on the backgrounds they sit on.

Textual's themes choose colours for looks: in the default dark theme the
"secondary" colour is #004578, 1.68:1 on the surface, so other people's
names were near invisible; in the light theme the accent is 1.6:1. Rather
than pin hex values that only suit one theme, Clubroom derives its own CSS
variables from whichever theme is active: each starts from the theme's
colour for that role and is lightened (on dark backgrounds) or darkened (on
light ones) just enough to reach the target contrast on every background
it is drawn on. ``clubroom.tcss`` uses these ``$clubroom-*`` variables for
every text colour.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from textual.color import Color

TARGET_CONTRAST = 4.6
"""WCAG AA for normal text is 4.5:1; a little margin for rounding to 8-bit colour."""

SURFACES = ("background", "surface", "panel", "surface-focused")
"""Where message text, names, notices and inputs are drawn (a focused log or input is tinted)."""

STATUS_BAR = ("primary-background",)
FOOTER = ("footer-background",)


@dataclass(frozen=True)
class Role:
    """A text colour: the theme colour it starts from, and the backgrounds it must read on."""

    base: str
    backgrounds: tuple[str, ...]
    weight: float = 1.0  # < 1: start from the base blended toward the first background


ROLES: dict[str, Role] = {
    "clubroom-name": Role("secondary", SURFACES),  # other people's names
    "clubroom-mine": Role("accent", SURFACES),  # one's own messages
    "clubroom-muted": Role("foreground", SURFACES, weight=0.55),  # times, notices, hints
    "clubroom-title": Role("primary", SURFACES),  # border titles ("Members (2)")
    "clubroom-success": Role("success", SURFACES),
    "clubroom-warning": Role("warning", SURFACES),
    "clubroom-error": Role("error", SURFACES),
    "clubroom-status-text": Role("foreground", STATUS_BAR),
    "clubroom-status-success": Role("success", STATUS_BAR),
    "clubroom-status-warning": Role("warning", STATUS_BAR),
    "clubroom-status-error": Role("error", STATUS_BAR),
    "clubroom-footer-key": Role("footer-key-foreground", FOOTER),
}

BUTTONS = {"clubroom-button-primary": "primary", "clubroom-button-error": "error"}
"""Coloured buttons: their background is adjusted to their label, not the other way round."""

BUTTON_TARGET = 5.2
"""A focused button is tinted 5% toward the foreground and drawn reversed: keep a margin."""


def contrast_ratio(foreground: Color, background: Color) -> float:
    """The WCAG contrast ratio of two opaque colours."""
    lighter, darker = sorted(
        (_luminance(foreground), _luminance(background)),
        reverse=True,
    )
    return (lighter + 0.05) / (darker + 0.05)


def _luminance(color: Color) -> float:
    def channel(value: int) -> float:
        c = value / 255
        return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4

    return 0.2126 * channel(color.r) + 0.7152 * channel(color.g) + 0.0722 * channel(color.b)


def readable(color: Color, backgrounds: list[Color], target: float = TARGET_CONTRAST) -> Color:
    """``color``, moved the least toward white or black that reads on every background.

    It moves away from the backgrounds' lightness (lighter on dark ones,
    darker on light ones); if that direction cannot reach the target, the
    opposite extreme is tried, and the better of the two is returned.
    """
    if not backgrounds or min(contrast_ratio(color, bg) for bg in backgrounds) >= target:
        return color
    darkest = min(backgrounds, key=_luminance)
    toward_white = _luminance(darkest) < 0.18
    best = color
    for step in range(1, 51):
        amount = step / 50
        candidate = color.blend(WHITE if toward_white else BLACK, amount)
        if min(contrast_ratio(candidate, bg) for bg in backgrounds) >= target:
            return candidate
        best = candidate
    return best


WHITE = Color(255, 255, 255)
BLACK = Color(0, 0, 0)


def readable_variables(variables: Mapping[str, str]) -> dict[str, str]:
    """The theme's CSS variables plus Clubroom's readable ``clubroom-*`` text colours."""
    resolved = dict(variables)
    surface = _opaque(variables, "surface")
    foreground = _opaque(variables, "foreground")
    colours = {
        name: _opaque(variables, name)
        for name in {role.base for role in ROLES.values()}
        | {bg for role in ROLES.values() for bg in role.backgrounds}
        if name != "surface-focused"
    }
    colours["surface-focused"] = surface + foreground.with_alpha(0.05)
    for name, role in ROLES.items():
        backgrounds = [colours[bg] for bg in role.backgrounds]
        base = colours[role.base]
        if role.weight < 1:
            base = backgrounds[0].blend(base, role.weight)
        resolved[name] = readable(base, backgrounds).hex
    for name, base_name in BUTTONS.items():
        base = _opaque(variables, base_name)
        label = base.get_contrast_text(1.0)
        resolved[name] = readable(base, [label], BUTTON_TARGET).hex
        resolved[f"{name}-text"] = label.hex
    # the highlight of a focused list item or checkbox label is drawn like a primary button
    resolved["block-cursor-background"] = resolved["clubroom-button-primary"]
    resolved["block-cursor-foreground"] = resolved["clubroom-button-primary-text"]
    return resolved


def _opaque(variables: Mapping[str, str], name: str) -> Color:
    """A theme colour as drawn: translucent ones over the theme's background."""
    color = Color.parse(variables[name])
    if color.a == 1:
        return color
    return Color.parse(variables["background"]) + color
