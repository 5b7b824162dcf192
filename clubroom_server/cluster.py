"""A node's share of message delivery in a cluster: publish after commit, deliver in seq order.

Single process (``LocalBus``): nothing here is used; a commit goes straight
to the room registry, as fast as before.

Cluster (``RedisBus``): every message this node stores is published on the
bus right after its commit (the store calls ``stored`` in commit order) and
offered to this node's ``OrderedDelivery`` at once, so local members do not
wait for the Redis round trip. Other nodes' messages arrive from the bus and
go through the same ``OrderedDelivery``: whichever copy comes first is
delivered, in the room's ``seq`` order, gaps read from the database, the
second copy dropped. The registry (``rooms.py``) then does what it does on
one process: buffer for joiners, floors against the snapshot, fan-out.

A node *serves* a room while one of its connections is in it: it is
subscribed to the room's channel and the room is anchored at the message
the room had reached when the subscription became active.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from clubroom_server.bus import Bus, BusEvent
from clubroom_server.ordering import Clock, OrderedDelivery, Sequenced
from clubroom_server.store import MessageRecord, Store

log = logging.getLogger(__name__)

FILL_PAGE = 500  # messages read per round trip when filling a gap

# (room id, record) -> the encoded ``message`` event, or None if the room is not served here.
Encode = Callable[[int, MessageRecord], bytes | None]
# (room id, message id, encoded event) -> hand to the registry for local fan-out.
Deliver = Callable[[int, int, bytes], None]


class ClusterDelivery:
    """Glue between the store, the bus, the in-order delivery and the registry."""

    def __init__(
        self,
        bus: Bus,
        store: Store,
        node_id: str,
        encode: Encode,
        deliver: Deliver,
        clock: Clock | None = None,
    ) -> None:
        self._bus = bus
        self._store = store
        self.node_id = node_id
        self._encode = encode
        self._deliver = deliver
        self.order = OrderedDelivery(self._in_order, self._fetch_after, clock)

    async def start(self) -> None:
        await self._bus.start(self._heard, self.order.resync)

    async def close(self) -> None:
        self.order.close()
        await self.order.wait_idle()
        await self._bus.close()

    @property
    def healthy(self) -> bool:
        return self._bus.healthy

    # ----------------------------------------------------------- serving rooms

    async def serve(self, room_id: int) -> None:
        """Start serving a room: subscription active first, then the anchor is read.

        Anything committed after the anchor read is heard on the bus (or
        found by a gap fill); anything before it is in every joiner's
        snapshot, which is read after this returns. ``BusUnavailable`` or a
        ``StoreError`` propagate: the join is answered ``unavailable``.
        """
        if self.order.last_delivered(room_id) is not None:
            return
        self.order.track(room_id)
        try:
            await self._bus.subscribe(room_id)
            latest, _ = await self._store.latest_messages(room_id, 1)
        except BaseException:
            self.release(room_id)
            raise
        last = latest[-1] if latest else None
        self.order.anchor(room_id, last.seq if last else 0, last.id if last else 0)

    def release(self, room_id: int) -> None:
        """No connection of this node is in the room any more (or it was deleted)."""
        self.order.forget(room_id)
        self._bus.unsubscribe(room_id)

    # -------------------------------------------------------------- messages

    def stored(self, record: MessageRecord, data: bytes) -> None:
        """This node committed a message (called in commit order): publish, deliver locally."""
        self._bus.publish(BusEvent(record.room_id, record.seq, record.id, data, self.node_id))
        self.order.offer(record.room_id, Sequenced(record.seq, record.id, data))

    def _heard(self, event: BusEvent) -> None:
        if event.seq == 0:
            return  # presence news: not sent by this version (cluster presence is not built yet)
        self.order.offer(event.room_id, Sequenced(event.seq, event.message_id, event.data))

    def _in_order(self, room_id: int, item: Sequenced) -> None:
        self._deliver(room_id, item.message_id, item.data)

    async def _fetch_after(self, room_id: int, after_id: int) -> tuple[Sequence[Sequenced], bool]:
        records, more = await self._store.messages_after(room_id, after_id, FILL_PAGE)
        items = []
        for record in records:
            data = self._encode(room_id, record)
            if data is None:
                return [], False  # the room is not served here any more
            items.append(Sequenced(record.seq, record.id, data))
        return items, more
