"""What the user was writing in each room, kept while they look at another one."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Draft:
    """One room's unsent text and the last line sent from it (Up brings that back).

    The app keeps one per room so that switching rooms, or going to the
    dashboard and back, never loses a half-written message.
    """

    text: str = ""
    last_sent: str = ""
