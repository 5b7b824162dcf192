"""Which event loop ``serve`` runs on: uvloop when it is installed, else asyncio's own.

uvloop (``pip install 'clubroom[speed]'``) does the socket writes and the
loop's bookkeeping in C; a fan-out server spends much of its time exactly
there. It stays optional: the server is the same program on either loop, and
``--event-loop asyncio`` (``CLUBROOM_EVENT_LOOP=asyncio``) opts out, e.g. to
rule the loop out while hunting a bug.
"""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")
EVENT_LOOPS = ("auto", "uvloop", "asyncio")


class EventLoopError(RuntimeError):
    """The event loop asked for cannot be used (uvloop named but not installed)."""


@dataclass(frozen=True)
class EventLoopChoice:
    """The loop to run on, and how to name it in the start-up lines."""

    name: str
    version: str
    factory: Callable[[], asyncio.AbstractEventLoop] | None  # None: asyncio's default

    @property
    def description(self) -> str:
        return f"{self.name} {self.version}"


def choose(wanted: str) -> EventLoopChoice:
    """``auto``: uvloop if importable, else asyncio; ``uvloop`` without it is an error."""
    if wanted not in EVENT_LOOPS:
        raise EventLoopError(f"unknown event loop {wanted!r}; use one of {', '.join(EVENT_LOOPS)}")
    if wanted != "asyncio":
        try:
            uvloop = importlib.import_module("uvloop")
        except ImportError:
            if wanted == "uvloop":
                raise EventLoopError(
                    "--event-loop uvloop: uvloop is not installed "
                    "(pip install 'clubroom[speed]', or use --event-loop auto)"
                ) from None
        else:
            return EventLoopChoice("uvloop", uvloop.__version__, uvloop.new_event_loop)
    return EventLoopChoice("asyncio", "(standard library)", None)


def run(main: Coroutine[Any, Any, T], choice: EventLoopChoice) -> T:
    """Run ``main`` to completion on the chosen loop (like ``asyncio.run``)."""
    with asyncio.Runner(loop_factory=choice.factory) as runner:
        return runner.run(main)


def running() -> str:
    """The name of the loop running now (``uvloop`` or ``asyncio``), for logs and tests."""
    module = type(asyncio.get_running_loop()).__module__
    return "uvloop" if module.startswith("uvloop") else "asyncio"
