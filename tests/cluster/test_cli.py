"""``serve --bus`` as an operator meets it: clear refusals, one-line start-up failures."""

from __future__ import annotations

import asyncio
import sys

import pytest

from tests.databases import fresh_postgres
from tests.redisserver import free_port


async def serve(*args: str) -> tuple[int, str]:
    """Run ``clubroom-server serve`` expecting it to stop by itself; exit code and output."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "clubroom_server",
        "serve",
        "--port",
        "0",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(process.communicate(), 30)
    return process.returncode or 0, output.decode()


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("--bus", "redis://127.0.0.1:6379/0"), "needs a database all nodes share"),
        (("--bus", "redis://127.0.0.1:6379/0", "--db", "chat.db"), "postgresql://"),
        (("--bus", "http://example.org", "--db", "postgresql://x@h/d"), "takes a Redis URL"),
        (("--bus", "redis://h", "--node-id", "two words"), "--node-id"),
    ],
)
async def test_a_cluster_needs_postgresql_and_a_redis_url(args: tuple[str, ...], says: str) -> None:
    """--bus with SQLite, a non-Redis bus or an odd node id is a usage error naming the fix."""
    code, output = await serve(*args)
    assert code == 2 and says in output and "Traceback" not in output


async def test_an_unreachable_bus_is_one_line_and_exit_1() -> None:
    """Redis not answering at start-up: one sentence naming it (no password), exit 1."""
    async with fresh_postgres() as db:
        dead = f"redis://:hunter2@127.0.0.1:{free_port()}/0"
        code, output = await serve("--db", db, "--bus", dead, "--argon2-profile", "cheapest")
    assert code == 1 and "Traceback" not in output
    assert "does not answer" in output and "hunter2" not in output
    assert output.strip().splitlines()[-1].startswith("Error: The bus (Redis at 127.0.0.1:")
