"""Who may open a connection: addresses, proxies, origins and handshake counts.

Everything here is decided before a connection reaches the chat: which
address a connection belongs to (the TCP peer, or what a trusted proxy
says), whether the web page that opened it may talk to us (``Origin``), and
whether one address already holds too many connections or unfinished
handshakes. No I/O happens here; ``server.py`` wires it to ``websockets``.
"""

from __future__ import annotations

import ipaddress
import logging
import resource
import time
from collections import Counter
from collections.abc import Callable, Iterable
from urllib.parse import urlsplit

from websockets.datastructures import Headers

import protocol

log = logging.getLogger(__name__)

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
UNKNOWN = "unknown"
REFUSAL_LOG_INTERVAL = 60.0  # seconds: one warning per address per minute
MAX_REMEMBERED_REFUSALS = 10_000
OPEN_FILES_WHEN_UNLIMITED = 1 << 20


def parse_networks(values: Iterable[str]) -> tuple[Network, ...]:
    """``--trusted-proxy`` values (addresses or CIDR blocks); raises ValueError on garbage."""
    return tuple(ipaddress.ip_network(value.strip(), strict=False) for value in values)


def split_list(values: Iterable[str]) -> tuple[str, ...]:
    """Options given several times or as one space/comma separated value, flattened."""
    return tuple(part for value in values for part in value.replace(",", " ").split())


class AddressResolver:
    """The client's address: the TCP peer's, or a trusted proxy's ``X-Forwarded-For``.

    Only the right-most entry is believed: it is the one our proxy appended;
    entries to its left were written by whoever connected to the proxy and
    could be anything. An entry that is not an IP address is ignored.
    """

    def __init__(self, trusted: tuple[Network, ...]) -> None:
        self._trusted = trusted

    def is_trusted(self, peer: str) -> bool:
        address = _ip(peer)
        return address is not None and any(address in network for network in self._trusted)

    def resolve(self, peer: str, headers: Headers) -> str:
        if not self._trusted or not self.is_trusted(peer):
            return peer
        values = headers.get_all(protocol.FORWARDED_FOR_HEADER)
        if not values:
            return peer
        forwarded = _ip(values[-1].rsplit(",", 1)[-1].strip())
        return str(forwarded) if forwarded is not None else peer


class OriginPolicy:
    """Which web pages may open a WebSocket to this server.

    Non-browser clients send no ``Origin`` and are welcome. A browser always
    sends one: it is accepted when it names this very server (the ``Host``
    the browser connected to) or is listed in ``--allowed-origin``;
    anything else, ``null`` included, is refused, so a page on another site
    cannot talk to a server on the visitor's machine.
    """

    def __init__(self, allowed: Iterable[str]) -> None:
        self._allowed = frozenset(_normal_origin(origin) for origin in allowed)

    def allows(self, headers: Headers) -> bool:
        origins = headers.get_all("Origin")  # get() would raise on a repeated header
        if not origins:
            return True
        if len(origins) > 1:
            return False
        normal = _normal_origin(origins[0])
        if normal in self._allowed:
            return True
        hosts = headers.get_all("Host")
        return normal != "null" and len(hosts) == 1 and _origin_host(normal) == hosts[0].lower()


def _normal_origin(origin: str) -> str:
    return origin.strip().rstrip("/").lower()


def _origin_host(origin: str) -> str | None:
    try:
        return urlsplit(origin).netloc or None
    except ValueError:
        return None


class HandshakeGate:
    """Counts connections per address from the moment of accept.

    A connection is *pending* from accept until its HTTP request has been
    read. Past ``per_address`` pending from one address, or ``total``
    pending in all, a new connection is dropped at once, before it costs
    more than a socket. Addresses of trusted proxies are not capped here:
    their visitors are counted under their own addresses once the request
    names them.
    """

    def __init__(
        self, per_address: int, total: int, exempt: Callable[[str], bool] = lambda _: False
    ) -> None:
        self.per_address = per_address
        self.total = total
        self._exempt = exempt
        self.pending: Counter[str] = Counter()
        self.pending_total = 0
        self.open: Counter[str] = Counter()

    def admit(self, address: str) -> bool:
        """Count a new TCP connection; False if it must be dropped at once."""
        if self.total > 0 and self.pending_total >= self.total:
            return False
        capped = self.per_address > 0 and not self._exempt(address)
        if capped and self.pending[address] >= self.per_address:
            return False
        self.pending[address] += 1
        self.pending_total += 1
        self.open[address] += 1
        return True

    def handshake_read(self, address: str) -> None:
        """The request arrived (or the socket is gone): no longer a pending handshake."""
        _decrement(self.pending, address)
        self.pending_total -= 1

    def move(self, old: str, new: str) -> None:
        """Count an open connection under the address a trusted proxy named."""
        if old != new:
            _decrement(self.open, old)
            self.open[new] += 1

    def closed(self, address: str) -> None:
        """The socket is gone: it no longer counts for its client address."""
        _decrement(self.open, address)


def _decrement(counter: Counter[str], key: str) -> None:
    counter[key] -= 1
    if counter[key] <= 0:
        del counter[key]


class RefusalLog:
    """Logs a refused connection once per address per minute, never a flood."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._last: dict[str, float] = {}

    def refused(self, address: str, why: str) -> None:
        now = self._clock()
        last = self._last.get(address)
        if last is not None and now - last < REFUSAL_LOG_INTERVAL:
            return
        if len(self._last) >= MAX_REMEMBERED_REFUSALS:
            self._forget_older_than(now - REFUSAL_LOG_INTERVAL)
        self._last[address] = now
        log.warning("refusing connections from %s: %s (logged once a minute)", address, why)

    def _forget_older_than(self, horizon: float) -> None:
        self._last = {a: t for a, t in self._last.items() if t > horizon}
        if len(self._last) >= MAX_REMEMBERED_REFUSALS:
            self._last.clear()


def raise_file_limit() -> int:
    """Raise this process's open-file soft limit to its hard limit; return the new limit.

    Every connection is a file descriptor: the common default of 1,024 lets
    one busy address exhaust the server long before any other limit bites.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, OPEN_FILES_WHEN_UNLIMITED)
    if soft == resource.RLIM_INFINITY or soft >= target:
        return soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError) as exc:
        log.warning("could not raise the open-file limit from %d: %s", soft, exc)
        return soft
    return target


class AcceptErrorFilter(logging.Filter):
    """asyncio logs a traceback for every failed accept (e.g. out of file descriptors).

    The condition is worth one line, not a traceback per attempt: keep the
    message, drop the stack.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and "accept" in str(record.msg):
            exc = record.exc_info[1]
            record.msg = f"{record.getMessage()}: {exc}"
            record.args = ()
            record.exc_info = None
            record.exc_text = None
        return True


def _ip(value: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(value)
    except ValueError:
        return None
