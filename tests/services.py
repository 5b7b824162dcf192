"""The machine's PostgreSQL and Redis, for tests that need them.

Tests read their addresses from ``CLUBROOM_TEST_POSTGRES`` (a libpq URL of a
database the tests may create databases from, e.g.
``postgresql://postgres@127.0.0.1:5432/test``) and ``CLUBROOM_TEST_REDIS``
(e.g. ``redis://127.0.0.1:6379``). Where a variable is unset or the service
does not answer, the test is skipped with the reason in pytest's summary,
unless ``CLUBROOM_REQUIRE_SERVICES=1`` (``.ci/run`` sets it): then it fails,
so a green CI always means both backends were exercised.
"""

from __future__ import annotations

import os
import socket
from urllib.parse import urlsplit

import pytest

POSTGRES_VAR = "CLUBROOM_TEST_POSTGRES"
REDIS_VAR = "CLUBROOM_TEST_REDIS"
REQUIRE_VAR = "CLUBROOM_REQUIRE_SERVICES"


def _required() -> bool:
    return os.environ.get(REQUIRE_VAR, "") not in ("", "0")


def unusable(reason: str) -> None:
    """Skip with ``reason`` (printed in the summary), or fail where services are required.

    Also for what else CI's machine must provide (systemd, a writable cgroup):
    a green ``.ci/run`` never hides a skipped test.
    """
    if _required():
        pytest.fail(f"{reason} ({REQUIRE_VAR} is set, so this is an error, not a skip)")
    pytest.skip(reason)


def _reachable(url: str, default_port: int) -> bool:
    parts = urlsplit(url)
    address = (parts.hostname or "127.0.0.1", parts.port or default_port)
    try:
        with socket.create_connection(address, 2):
            return True
    except OSError:
        return False


def _service_url(variable: str, name: str, default_port: int) -> str:
    url = os.environ.get(variable, "")
    if not url:
        unusable(f"{name} tests need {variable} (e.g. set by .ci/run); it is not set")
    if not _reachable(url, default_port):
        unusable(f"{name} at {variable}={url} does not answer")
    return url


def postgres_url() -> str:
    """The admin URL of the test PostgreSQL, or skip/fail the calling test."""
    return _service_url(POSTGRES_VAR, "PostgreSQL", 5432)


def redis_url() -> str:
    """The URL of the test Redis, or skip/fail the calling test."""
    return _service_url(REDIS_VAR, "Redis", 6379)
