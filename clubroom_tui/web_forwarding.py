"""Who is the visitor? Passing a browser visitor's address from ``clubroom web`` to the server.

Every browser tab's client runs on the web host, so the chat server sees
all of them come from the web host's address, and its per-address limits
(failed logins, connection rates) would lump every visitor together: one
visitor could lock out all the others. So the web host tells each tab's
client process the visitor's own address in an environment variable, and
the client passes it on in ``X-Forwarded-For`` on its WebSocket upgrade.
The server believes that header only from peers it was told to trust
(``clubroom-server serve --trusted-proxy``); from anyone else it is ignored.

This module has no dependency on textual-serve: the terminal client imports
it on every start.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Iterable, Mapping

from protocol import FORWARDED_FOR_HEADER

FORWARDED_FOR_ENV = "CLUBROOM_FORWARDED_FOR"
"""Set by ``clubroom web`` for each tab's client process: the visitor's address."""

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def forwarded_for_headers(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The header a client started by ``clubroom web`` sends, or none.

    Only a well-formed IP address is ever sent: the variable comes from our
    own web host, but a stray value in someone's shell must not end up in a
    request header.
    """
    value = (os.environ if environ is None else environ).get(FORWARDED_FOR_ENV, "").strip()
    address = parse_address(value)
    return {FORWARDED_FOR_HEADER: str(address)} if address is not None else {}


def parse_address(
    value: str,
) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """An IP address, or None for anything else (an IPv4-mapped IPv6 address is unwrapped)."""
    try:
        address = ipaddress.ip_address(value.strip())
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def parse_networks(values: Iterable[str]) -> tuple[Network, ...]:
    """Trusted proxies, each an address (``127.0.0.1``) or a network (``10.0.0.0/8``).

    Raises ValueError naming the first value that is neither.
    """
    networks = []
    for value in values:
        try:
            networks.append(ipaddress.ip_network(value.strip(), strict=False))
        except ValueError:
            raise ValueError(f"{value!r} is not an IP address or network") from None
    return tuple(networks)


def visitor_address(
    peer: str | None, forwarded_for: Iterable[str], trusted: tuple[Network, ...]
) -> str | None:
    """The address of the browser that opened a connection to the web host.

    ``peer`` is the TCP peer. If it is one of our own ``trusted`` reverse
    proxies, the visitor is the right-most address in ``X-Forwarded-For``
    that is not itself a trusted proxy (addresses further left were written
    by whoever sent the request, and can be anything). A header from an
    untrusted peer is ignored: otherwise any visitor could claim any address.
    """
    address = parse_address(peer or "")
    if address is None:
        return None
    hops = [hop for header in forwarded_for for hop in header.split(",")]
    while _is_trusted(address, trusted) and hops:
        forwarded = parse_address(hops.pop())
        if forwarded is None:
            break  # garbage in the chain: stop at the last address we could vouch for
        address = forwarded
    return str(address)


def _is_trusted(
    address: ipaddress.IPv4Address | ipaddress.IPv6Address, trusted: tuple[Network, ...]
) -> bool:
    return any(address.version == net.version and address in net for net in trusted)
