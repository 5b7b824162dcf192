"""Who is typing where: relayed at a bounded pace, expired, never stored.

A client says ``active`` while the user types (renewed every couple of
seconds), ``paused`` when they stop for a while and ``done`` when the draft
is gone. This tracker relays a user's state in a room to the room's other
connections at most once per ``relay_every`` seconds (a state that changes
meanwhile is relayed when the window opens, latest wins), ends an
``active``/``paused`` state that is not renewed within ``expiry`` seconds,
and ends it at once when the user sends a message or leaves the room.

Time comes from an injected ``Clock`` so tests move it by hand.

On a cluster a user's connections may sit on several nodes, each with its
own tracker; an optional ``gate`` (``limits.SharedLimits.claim_relay``)
makes the pace cluster-wide: before relaying a new state, a node claims the
user's window in the room in Redis, and if another node has it, waits for it
to open. The gate compares the clock's ``now``, so on a real clock that is
wall-clock time (comparable between hosts), and waits are capped at one
window whatever the clocks say.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from protocol import TYPING_EXPIRY_SECONDS, TYPING_RELAY_SECONDS, TypingState

log = logging.getLogger(__name__)

Relay = Callable[[int, str, TypingState], None]
"""Deliver (room id, username, state) to the room's other connections."""

Gate = Callable[[int, str, float, float], Awaitable[float]]
"""Claim (room id, user key)'s relay window at ``now`` for ``every`` seconds: 0, or the wait."""


class Timer(Protocol):
    def cancel(self) -> None: ...


class Clock(Protocol):
    def now(self) -> float: ...

    def call_later(self, delay: float, callback: Callable[[], None]) -> Timer: ...


class LoopClock:
    """The real clock: wall-clock time (comparable between nodes) and the loop's timers.

    Wall-clock time may jump; every wait derived from it is capped at one
    relay window, so a jump delays a relay by at most that.
    """

    def now(self) -> float:
        return time.time()

    def call_later(self, delay: float, callback: Callable[[], None]) -> Timer:
        return asyncio.get_running_loop().call_later(delay, callback)


@dataclass
class _Typist:
    username: str
    relayed: TypingState = TypingState.DONE
    relayed_at: float = float("-inf")
    wanted: TypingState = TypingState.DONE
    pending: Timer | None = None
    expiry: Timer | None = None
    claiming: bool = False  # asking the gate; the answer decides


class TypingTracker:
    """Typing state per (room id, user key), and the timers that relay and expire it."""

    def __init__(
        self,
        relay: Relay,
        clock: Clock | None = None,
        relay_every: float = TYPING_RELAY_SECONDS,
        expiry: float = TYPING_EXPIRY_SECONDS,
        gate: Gate | None = None,
    ) -> None:
        self._relay = relay
        self.gate = gate
        self._claims: set[asyncio.Task[None]] = set()
        self.clock: Clock = clock or LoopClock()
        self.relay_every = relay_every
        self.expiry = expiry
        self._typists: dict[tuple[int, str], _Typist] = {}
        # When a state last ended with a relayed ``done``: a new ``active``
        # waits for the window too, so toggling cannot flood the room. Kept in
        # time order and only for one window (``_forget_ended``).
        self._ended: dict[tuple[int, str], float] = {}
        self._forgetting: Timer | None = None

    def __len__(self) -> int:
        return len(self._typists)

    def update(self, room_id: int, user_key: str, username: str, state: TypingState) -> None:
        """A client's typing state; relayed now or when this user's window opens."""
        key = (room_id, user_key)
        typist = self._typists.get(key)
        if typist is None:
            if state is TypingState.DONE:
                return
            typist = self._typists[key] = _Typist(username)
            typist.relayed_at = self._ended.pop(key, typist.relayed_at)
        typist.wanted = state
        _cancel(typist.expiry)
        typist.expiry = None
        if state is not TypingState.DONE:
            typist.expiry = self.clock.call_later(self.expiry, lambda: self.end(*key))
        self._flush(key, typist)

    def end(self, room_id: int, user_key: str) -> None:
        """The user sent a message, left, disconnected or went quiet: relay ``done`` now."""
        typist = self._typists.pop((room_id, user_key), None)
        if typist is None:
            return
        _cancel(typist.expiry)
        _cancel(typist.pending)
        if typist.relayed is not TypingState.DONE:
            self._relay(room_id, typist.username, TypingState.DONE)
            self._note_ended((room_id, user_key))

    def _note_ended(self, key: tuple[int, str]) -> None:
        self._ended.pop(key, None)
        self._ended[key] = self.clock.now()  # last: the table stays in time order
        if self._forgetting is None:
            self._forgetting = self.clock.call_later(self.relay_every, self._forget_ended)

    def _forget_ended(self) -> None:
        """Drop ends older than one window (they no longer delay anything); again later if any.

        One timer for the whole table: typists come and go, and an end must
        not outlive the window it guards, or the table would hold every
        (room, user) that ever typed.
        """
        self._forgetting = None
        horizon = self.clock.now() - self.relay_every
        while self._ended:
            key, ended_at = next(iter(self._ended.items()))
            if ended_at > horizon:
                break
            del self._ended[key]
        if self._ended:
            self._forgetting = self.clock.call_later(self.relay_every, self._forget_ended)

    def forget_room(self, room_id: int) -> None:
        """The room is gone: drop its states without relaying anything."""
        self._ended = {k: t for k, t in self._ended.items() if k[0] != room_id}
        for key in [k for k in self._typists if k[0] == room_id]:
            typist = self._typists.pop(key)
            _cancel(typist.expiry)
            _cancel(typist.pending)

    def typing_in(self, room_id: int) -> list[str]:
        """Who is shown as typing in the room now (for a joiner's first view)."""
        return sorted(
            (
                t.username
                for (r, _), t in self._typists.items()
                if r == room_id and t.relayed is TypingState.ACTIVE
            ),
            key=str.casefold,
        )

    def _flush(self, key: tuple[int, str], typist: _Typist) -> None:
        if typist.wanted is typist.relayed:
            if typist.wanted is TypingState.DONE:
                self._typists.pop(key, None)
            return
        if typist.wanted is TypingState.DONE:
            self.end(*key)
            return
        if typist.claiming:
            return  # the gate's answer flushes the latest wanted state
        wait = min(self.relay_every, typist.relayed_at + self.relay_every - self.clock.now())
        if wait > 0:
            self._wait(key, typist, wait)
            return
        if self.gate is not None:
            typist.claiming = True
            task = asyncio.get_running_loop().create_task(self._claim(key, typist))
            self._claims.add(task)
            task.add_done_callback(self._claims.discard)
            return
        self._send(key, typist)

    def _wait(self, key: tuple[int, str], typist: _Typist, wait: float) -> None:
        if typist.pending is None:
            typist.pending = self.clock.call_later(wait, lambda: self._window_open(key))

    def _send(self, key: tuple[int, str], typist: _Typist) -> None:
        typist.relayed, typist.relayed_at = typist.wanted, self.clock.now()
        self._relay(key[0], typist.username, typist.wanted)

    async def _claim(self, key: tuple[int, str], typist: _Typist) -> None:
        """Ask the cluster for the user's window; relay the latest state then, or later."""
        assert self.gate is not None
        wait = 0.0
        try:
            wait = await self.gate(key[0], key[1], self.clock.now(), self.relay_every)
        except Exception:  # the gate must never lose a relay; it fails open
            log.exception("the shared typing pace could not be asked")
        finally:
            typist.claiming = False
        if self._typists.get(key) is not typist or typist.wanted is typist.relayed:
            return  # ended (relayed done) or settled meanwhile
        if typist.wanted is TypingState.DONE:
            self.end(*key)
        elif wait > 0:
            self._wait(key, typist, min(wait, self.relay_every))
        else:
            self._send(key, typist)

    def _window_open(self, key: tuple[int, str]) -> None:
        typist = self._typists.get(key)
        if typist is not None:
            typist.pending = None
            self._flush(key, typist)

    def close(self) -> None:
        for task in self._claims:
            task.cancel()
        for typist in self._typists.values():
            _cancel(typist.expiry)
            _cancel(typist.pending)
        self._typists.clear()
        self._ended.clear()
        _cancel(self._forgetting)
        self._forgetting = None


def _cancel(timer: Timer | None) -> None:
    if timer is not None:
        timer.cancel()
