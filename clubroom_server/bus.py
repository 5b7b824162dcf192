"""The bus: how a node hears about events stored by other nodes.

One process needs no bus at all: a commit is delivered to the room directly
(``LocalBus`` does nothing, so the default costs nothing). A cluster node
publishes every event after its commit on a Redis channel per room and
subscribes to the rooms it serves. Redis pub/sub is fire-and-forget — a
subscriber that loses its connection misses what was published meanwhile —
so the bus promises little and says when it broke: after it regains Redis it
calls ``on_resync``, and the node re-reads, for every room it serves,
everything after what it last delivered (see ``ordering.py``). Messages are
never *only* on the bus: the database has them first.

A node that sees a gap in a room's sequence first asks the bus whether it
has caught up (``caught_up``: a PING on the subscriber connection, whose
PONG comes after everything Redis had queued for this node), and reads the
database only if the gap is still open then. Under load the missing message
is usually already in this node's socket, unread: one Redis round trip is
then enough where a read of the database would cost several.

Wire format of one bus payload: an ASCII header line
``<room id> <seq> <message id> <origin node>\\n`` then the frame exactly as
clients receive it. ``seq`` 0 marks an event outside the message order
(a member joining or leaving); a node ignores its own such events, which it
has already delivered locally.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import urlsplit

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

log = logging.getLogger(__name__)

BACKOFF_FIRST = 0.1  # seconds before the first reconnection attempt
BACKOFF_MAX = 5.0
PING_INTERVAL = 2.0  # a silent subscriber connection is checked this often
MAX_UNPUBLISHED = 10_000  # events kept for re-publishing while Redis is away
SUBSCRIBE_TIMEOUT = 5.0


class BusStartupError(Exception):
    """The bus cannot connect at start-up: one sentence naming the Redis (never a password)."""


class BusUnavailable(Exception):
    """The bus cannot serve a new room now (Redis is down); the request should be retried."""


@dataclass(frozen=True, slots=True)
class BusEvent:
    """One event for a room's clients, as it travels between nodes."""

    room_id: int
    seq: int  # the room's dense sequence number; 0 = not a message (presence)
    message_id: int  # 0 when not a message
    data: bytes  # the encoded frame, exactly as clients receive it
    origin: str = ""  # the node that stored it


# Room ids start at 1: room 0 is the channel every node hears (session ends and
# other node-wide news).
NODE_WIDE = 0

OnEvent = Callable[[BusEvent], None]
OnResync = Callable[[], None]


class Bus(Protocol):
    """What the chat needs from a bus; ``LocalBus`` and ``RedisBus`` provide it."""

    @property
    def clustered(self) -> bool:
        """False: every event is local, delivered directly; nothing else to do."""

    @property
    def healthy(self) -> bool:
        """Connected (always true for the local bus)."""

    async def start(self, on_event: OnEvent, on_resync: OnResync) -> None:
        """Connect; ``on_event`` receives other nodes' events, ``on_resync`` follows a reconnect."""

    def publish(self, event: BusEvent) -> None:
        """Send an event to every node serving its room (after its commit; never blocks)."""

    async def caught_up(self) -> None:
        """Return once every event Redis had for this node at the call was handed to
        ``on_event`` (at once if that cannot be known: the bus is reconnecting)."""

    async def subscribe(self, room_id: int) -> None:
        """Receive the room's events; returns once the subscription is active.

        Raises ``BusUnavailable`` when it cannot be made active now.
        """

    def unsubscribe(self, room_id: int) -> None:
        """Stop receiving the room's events (no member on this node any more)."""

    async def close(self) -> None:
        """Disconnect (idempotent)."""


class LocalBus:
    """One process: every event is already local, so the bus does nothing at all."""

    clustered = False
    healthy = True

    async def start(self, on_event: OnEvent, on_resync: OnResync) -> None:
        return None

    def publish(self, event: BusEvent) -> None:
        return None

    async def caught_up(self) -> None:
        return None

    async def subscribe(self, room_id: int) -> None:
        return None

    def unsubscribe(self, room_id: int) -> None:
        return None

    async def close(self) -> None:
        return None


def describe_redis(url: str) -> str:
    """Redis at host:port/db, for messages (never the password)."""
    parts = urlsplit(url)
    if parts.scheme == "unix":
        return f"Redis at {parts.path}"
    port = parts.port or 6379
    db = parts.path.lstrip("/") or "0"
    return f"Redis at {parts.hostname or 'localhost'}:{port}/{db}"


def _reason(exc: BaseException) -> str:
    """A short reason for a failed connection (redis-py messages may repeat the address)."""
    text = str(exc).split(". ", 1)[0] if str(exc) else type(exc).__name__
    return text.rstrip(".")


def encode_event(event: BusEvent) -> bytes:
    header = f"{event.room_id} {event.seq} {event.message_id} {event.origin}\n"
    return header.encode("ascii") + event.data


def decode_event(payload: bytes) -> BusEvent:
    """The event in a payload; ``ValueError`` for anything else found on our channels."""
    header, newline, data = payload.partition(b"\n")
    parts = header.decode("ascii").split(" ")
    if not newline or len(parts) != 4:
        raise ValueError("not a Clubroom bus event")
    room_id, seq, message_id = (int(part) for part in parts[:3])
    return BusEvent(room_id, seq, message_id, data, parts[3])


@dataclass(slots=True)
class BusStats:
    """What the bus has been through, for the metrics (plain ints, bumped by the bus's tasks)."""

    published: int = 0  # events handed to Redis
    publish_failures: int = 0  # pipelines Redis did not take (each retried)
    dropped: int = 0  # oldest unpublished events let go while Redis was away too long
    reconnects: int = 0  # times the subscriber connection was made again after a loss


class RedisBus:
    """Redis pub/sub, one channel per room, with reconnection and a resync signal.

    redis-py would reconnect a pub/sub connection silently and resubscribe,
    which would hide exactly the gap we must repair; so its retries are off
    and this class reconnects itself, then says ``on_resync``.
    """

    clustered = True

    def __init__(self, url: str, node_id: str, prefix: str = "clubroom") -> None:
        self._url = url
        self.node_id = node_id
        self._prefix = prefix
        self._control = f"{prefix}:node"
        self._client: aioredis.Redis | None = None
        self._pubsub: aioredis.client.PubSub | None = None
        self._rooms: dict[int, asyncio.Future[None]] = {}  # served rooms: subscription active
        self._confirmations: dict[bytes, deque[asyncio.Future[None]]] = {}
        self._subscribed = False
        self._publish_ok = True
        self._unpublished: deque[BusEvent] = deque()
        self._commands: asyncio.Queue[tuple[str, str]] = asyncio.Queue()
        # Barriers: callers waiting for the next PING to be sent, then one group per
        # PING in flight (its PONG releases the group; a keep-alive PING has none).
        self._unpinged: list[asyncio.Future[None]] = []
        self._pings: deque[list[asyncio.Future[None]]] = deque()
        self._wake_publisher = asyncio.Event()
        self._up = asyncio.Event()
        self._on_event: OnEvent = lambda event: None
        self._on_resync: OnResync = lambda: None
        self._tasks: list[asyncio.Task[None]] = []
        self._closing = False
        self.stats = BusStats()

    # ------------------------------------------------------------------ life

    @property
    def healthy(self) -> bool:
        return self._subscribed and self._publish_ok

    @property
    def unpublished(self) -> int:
        """Events committed but not yet handed to Redis (kept while it is away)."""
        return len(self._unpublished)

    async def start(self, on_event: OnEvent, on_resync: OnResync) -> None:
        """Connect now (a node with no Redis at start-up fails loudly), then keep connected."""
        self._on_event, self._on_resync = on_event, on_resync
        self._client = aioredis.Redis.from_url(
            self._url,
            retry=Retry(NoBackoff(), 0),
            socket_connect_timeout=2,
            socket_keepalive=True,
            health_check_interval=0,
        )
        try:
            await self._client.ping()
            await self._connect_subscriber()
        except (RedisError, OSError, TimeoutError) as exc:
            await self._client.aclose()
            raise BusStartupError(
                f"The bus ({describe_redis(self._url)}) does not answer: {_reason(exc)}"
            ) from None
        self._tasks = [
            asyncio.create_task(self._subscriber_loop(), name="bus-subscriber"),
            asyncio.create_task(self._publisher_loop(), name="bus-publisher"),
            asyncio.create_task(self._command_loop(), name="bus-commands"),
        ]

    async def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        self._wake_publisher.set()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self._drop_subscriber()
        if self._client is not None:
            await self._client.aclose()

    # -------------------------------------------------------------- channels

    def channel(self, room_id: int) -> str:
        if room_id == NODE_WIDE:
            return self._control
        return f"{self._prefix}:room:{room_id}"

    async def subscribe(self, room_id: int) -> None:
        confirmed = self._rooms.get(room_id)
        if confirmed is None:
            if not self._subscribed or self._pubsub is None:
                raise BusUnavailable("the bus is reconnecting")
            name = self.channel(room_id)
            confirmed = self._rooms[room_id] = asyncio.get_running_loop().create_future()
            self._confirmations.setdefault(name.encode(), deque()).append(confirmed)
            self._command("subscribe", name)
        try:
            async with asyncio.timeout(SUBSCRIBE_TIMEOUT):
                await asyncio.shield(confirmed)
        except (BusUnavailable, TimeoutError):
            self._failed(room_id, confirmed)
            raise BusUnavailable("the bus did not confirm the subscription") from None

    def _failed(self, room_id: int, confirmed: asyncio.Future[None]) -> None:
        if self._rooms.get(room_id) is confirmed:
            del self._rooms[room_id]
        if not confirmed.done():
            confirmed.set_exception(BusUnavailable("subscribing failed"))
        confirmed.exception()  # retrieved: whoever waits re-raises it

    def unsubscribe(self, room_id: int) -> None:
        if self._rooms.pop(room_id, None) is not None:
            self._command("unsubscribe", self.channel(room_id))

    def _command(self, verb: str, channel: str = "") -> None:
        """Queue a (un)subscription or a PING: one task sends them in call order.

        Order matters: a room left and joined again at once must end up
        subscribed, which an unsubscribe overtaking the subscribe would undo.
        """
        self._commands.put_nowait((verb, channel))

    async def _command_loop(self) -> None:
        while not self._closing:
            verb, channel = await self._commands.get()
            pubsub = self._pubsub
            if pubsub is None:
                continue  # reconnecting: it subscribes to the rooms served by then
            with contextlib.suppress(RedisError, OSError):
                if verb == "ping":
                    await self._ping(pubsub)
                else:
                    await getattr(pubsub, verb)(channel)

    async def caught_up(self) -> None:
        """One PING on the subscriber connection, shared by every caller waiting for the
        next one; its PONG comes after all that Redis had queued for us when it was sent."""
        if not self._subscribed or self._pubsub is None:
            return
        waiter = asyncio.get_running_loop().create_future()
        self._unpinged.append(waiter)
        if len(self._unpinged) == 1:
            self._command("ping")
        await asyncio.shield(waiter)  # a caller that stops waiting leaves the PING be

    async def _ping(self, pubsub: aioredis.client.PubSub) -> None:
        """Send a PING whose PONG releases whoever waits for one (``_dispatch``)."""
        group, self._unpinged = self._unpinged, []
        self._pings.append(group)
        await pubsub.ping()

    def _release_barriers(self) -> None:
        """The connection is gone: nobody waits for a PONG that will not come."""
        for group in [*self._pings, self._unpinged]:
            for waiter in group:
                if not waiter.done():
                    waiter.set_result(None)
        self._pings.clear()
        self._unpinged = []

    # ------------------------------------------------------------ subscriber

    async def _connect_subscriber(self) -> None:
        """One pub/sub connection with every room served; active once the control channel is.

        Redis confirms subscriptions in order, so the confirmation of the
        control channel, subscribed last, means every room's is active too.
        """
        assert self._client is not None
        pubsub = self._client.pubsub()
        channels = [self.channel(room) for room in sorted(self._rooms)] + [self._control]
        await pubsub.subscribe(*channels)
        async with asyncio.timeout(SUBSCRIBE_TIMEOUT):
            while True:
                message = await pubsub.get_message(timeout=SUBSCRIBE_TIMEOUT)
                if message is None:
                    continue
                if message["type"] == "subscribe" and message["channel"] == self._control.encode():
                    break
                self._dispatch(message)
        self._pubsub = pubsub
        self._subscribed = True
        for room_id, confirmed in self._rooms.items():
            if not confirmed.done() or confirmed.exception() is not None:
                self._rooms[room_id] = _done()

    async def _drop_subscriber(self) -> None:
        self._subscribed = False
        pubsub, self._pubsub = self._pubsub, None
        self._release_barriers()
        for waiting in self._confirmations.values():
            for future in waiting:
                if not future.done():
                    future.set_exception(BusUnavailable("the bus connection was lost"))
                    future.exception()  # retrieved: whoever waits re-raises it
        self._confirmations.clear()
        if pubsub is not None:
            with contextlib.suppress(Exception):
                await pubsub.aclose()

    async def _subscriber_loop(self) -> None:
        while not self._closing:
            try:
                await self._read_until_error()
            except (RedisError, OSError, TimeoutError) as exc:
                if self._closing:
                    return
                log.warning("lost the bus (Redis): %s; reconnecting", exc)
            await self._drop_subscriber()
            await self._reconnect()

    async def _read_until_error(self) -> None:
        """Dispatch messages; a ping every few quiet seconds finds a dead connection."""
        assert self._pubsub is not None
        loop = asyncio.get_running_loop()
        last_heard = loop.time()
        pinged = False
        while not self._closing:
            message = await self._pubsub.get_message(timeout=PING_INTERVAL / 2)
            if message is not None:
                last_heard, pinged = loop.time(), False
                self._dispatch(message)
            elif loop.time() - last_heard > PING_INTERVAL:
                if pinged:
                    raise TimeoutError("Redis did not answer a ping")
                await self._ping(self._pubsub)
                last_heard, pinged = loop.time(), True

    async def _reconnect(self) -> None:
        """Try again with growing, jittered waits; say ``resync`` once subscribed again."""
        wait = BACKOFF_FIRST
        while not self._closing:
            await asyncio.sleep(wait * (0.5 + random.random() / 2))
            try:
                await self._connect_subscriber()
            except (RedisError, OSError, TimeoutError) as exc:
                log.debug("bus reconnection failed: %s", exc)
                await self._drop_subscriber()
                wait = min(wait * 2, BACKOFF_MAX)
                continue
            log.info("bus (Redis) is back; re-reading the rooms this node serves")
            self.stats.reconnects += 1
            self._wake_publisher.set()
            self._on_resync()
            return

    def _dispatch(self, message: dict[str, object]) -> None:
        kind = message["type"]
        channel = message["channel"]
        if kind == "pong":
            for waiter in self._pings.popleft() if self._pings else ():
                if not waiter.done():
                    waiter.set_result(None)
            return
        if kind == "subscribe":
            assert isinstance(channel, bytes)
            waiting = self._confirmations.get(channel)
            if waiting:
                future = waiting.popleft()
                if not future.done():
                    future.set_result(None)
                if not waiting:
                    del self._confirmations[channel]
            return
        if kind != "message":
            return
        data = message["data"]
        assert isinstance(data, bytes)
        try:
            event = decode_event(data)
        except (ValueError, UnicodeDecodeError):
            log.warning("ignoring a malformed event on the bus")
            return
        if event.seq == 0 and event.origin == self.node_id:
            return  # our own presence news, delivered locally already
        try:
            self._on_event(event)
        except Exception:
            log.exception("delivering a bus event failed")

    # ------------------------------------------------------------- publisher

    def publish(self, event: BusEvent) -> None:
        if len(self._unpublished) >= MAX_UNPUBLISHED:
            # Keep the newest: a later message of a room reveals any gap before
            # it, which receivers then read from the database.
            self._unpublished.popleft()
            self.stats.dropped += 1
        self._unpublished.append(event)
        self._wake_publisher.set()

    async def _publisher_loop(self) -> None:
        """Send what was committed, in commit order, pipelined; keep it while Redis is away."""
        wait = BACKOFF_FIRST
        while not self._closing:
            await self._wake_publisher.wait()
            self._wake_publisher.clear()
            while self._unpublished and not self._closing:
                batch, self._unpublished = self._unpublished, deque()
                try:
                    await self._send(batch)
                except (RedisError, OSError) as exc:
                    if self._publish_ok:
                        log.warning("publishing on the bus failed: %s; will retry", exc)
                    self._publish_ok = False
                    self.stats.publish_failures += 1
                    batch.extend(self._unpublished)
                    self._unpublished = batch
                    while len(self._unpublished) > MAX_UNPUBLISHED:
                        self._unpublished.popleft()
                        self.stats.dropped += 1
                    await asyncio.sleep(wait * (0.5 + random.random() / 2))
                    wait = min(wait * 2, BACKOFF_MAX)
                    continue
                self._publish_ok, wait = True, BACKOFF_FIRST
                self.stats.published += len(batch)

    async def _send(self, batch: deque[BusEvent]) -> None:
        assert self._client is not None
        async with self._client.pipeline(transaction=False) as pipe:
            for event in batch:
                pipe.publish(self.channel(event.room_id), encode_event(event))
            await pipe.execute()


def _done() -> asyncio.Future[None]:
    future = asyncio.get_running_loop().create_future()
    future.set_result(None)
    return future
