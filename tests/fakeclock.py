"""A clock tests move by hand, for timers the server would otherwise wait out in real time."""

from __future__ import annotations

from collections.abc import Callable


class FakeTimer:
    def __init__(self, when: float, callback: Callable[[], None]) -> None:
        self.when = when
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class FakeClock:
    """``now`` and ``call_later`` like the loop's, but time passes only in ``advance``."""

    def __init__(self) -> None:
        self.time = 1000.0
        self._timers: list[FakeTimer] = []

    def now(self) -> float:
        return self.time

    def call_later(self, delay: float, callback: Callable[[], None]) -> FakeTimer:
        timer = FakeTimer(self.time + delay, callback)
        self._timers.append(timer)
        return timer

    def advance(self, seconds: float) -> None:
        """Move time forward, running every timer that falls due, in order."""
        end = self.time + seconds
        while True:
            due = [t for t in self._timers if not t.cancelled and t.when <= end]
            if not due:
                break
            timer = min(due, key=lambda t: t.when)
            self._timers.remove(timer)
            self.time = max(self.time, timer.when)
            timer.callback()
        self.time = end
