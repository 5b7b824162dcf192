"""WCAG 2.x contrast ratios, for the colours the TUI draws and the page shows.

https://www.w3.org/TR/WCAG21/#dfn-contrast-ratio: AA asks for 4.5:1 between
normal text and its background. Written apart from clubroom_tui/readable.py
on purpose: the oracle a test checks against must not be the code under test.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from textual.color import Color

if TYPE_CHECKING:
    from playwright.async_api import Page

AA_NORMAL_TEXT = 4.5


def relative_luminance(color: Color) -> float:
    """WCAG relative luminance of an opaque sRGB colour."""

    def channel(value: int) -> float:
        c = value / 255
        return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4

    return 0.2126 * channel(color.r) + 0.7152 * channel(color.g) + 0.0722 * channel(color.b)


def contrast_ratio(foreground: Color, background: Color) -> float:
    """The contrast of ``foreground`` drawn on ``background`` (a translucent one is blended)."""
    background = background.clamped if background.a == 1 else Color(0, 0, 0) + background
    seen = background + foreground  # blends a translucent foreground onto the background
    lighter, darker = sorted((relative_luminance(seen), relative_luminance(background)))[::-1]
    return (lighter + 0.05) / (darker + 0.05)


# The colour of each element's text and of the nearest background painted behind it.
_PAGE_COLOURS = """(selectors) => {
  const out = [];
  for (const selector of selectors) {
    for (const element of document.querySelectorAll(selector)) {
      if (element.getClientRects().length === 0) continue;  // not displayed
      let background = "rgb(255, 255, 255)";
      for (let node = element; node; node = node.parentElement) {
        const paint = getComputedStyle(node).backgroundColor;
        if (paint !== "rgba(0, 0, 0, 0)" && paint !== "transparent") {
          background = paint;
          break;
        }
      }
      out.push([selector + " " + element.textContent.trim(), getComputedStyle(element).color,
                background]);
    }
  }
  return out;
}"""


async def page_text_contrasts(page: Page, *selectors: str) -> dict[str, float]:
    """The contrast ratio of every displayed element matching ``selectors``, by its text."""
    found = await page.evaluate(_PAGE_COLOURS, list(selectors))
    return {
        what: round(contrast_ratio(Color.parse(fg), Color.parse(bg)), 2) for what, fg, bg in found
    }
