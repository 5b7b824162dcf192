"""Waiting for a condition instead of sleeping a fixed time."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable


async def wait_until(condition: Callable[[], object], within: float = 5.0) -> None:
    """Poll ``condition`` until it is true; fail (TimeoutError) after ``within`` seconds.

    Polling is right here: the things waited for (a row in the database, a
    line on a screen) have no event to await. ``condition`` may be async.
    """
    async with asyncio.timeout(within):
        while not await _holds(condition):  # noqa: ASYNC110
            await asyncio.sleep(0.02)


async def _holds(condition: Callable[[], object]) -> bool:
    result = condition()
    if inspect.isawaitable(result):
        result = await result
    return bool(result)
