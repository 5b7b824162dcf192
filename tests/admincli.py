"""Running ``clubroom-server`` admin commands as an operator does: a subprocess each."""

from __future__ import annotations

import asyncio
import sys


async def admin(*args: str, stdin: str | None = None) -> tuple[int, str]:
    """Run ``clubroom-server ARGS`` in a subprocess; return its exit code and output."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "clubroom_server",
        *args,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(process.communicate(stdin.encode() if stdin else b""), 60)
    assert process.returncode is not None
    return process.returncode, out.decode()


async def admin_ok(*args: str, stdin: str | None = None) -> str:
    """Run an admin command that must succeed (exit 0, no traceback); return its output."""
    code, out = await admin(*args, stdin=stdin)
    assert code == 0, out
    assert "Traceback" not in out
    return out
