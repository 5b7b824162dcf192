"""Run ``clubroom-server serve`` as a real subprocess, as an operator would."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from pathlib import Path

URL_RE = re.compile(r"listening on (wss?://\S+)")


class ServerProcess:
    """A ``python -m clubroom_server serve`` child; ``url`` is read from its stdout."""

    def __init__(self, process: asyncio.subprocess.Process, url: str, output: list[str]) -> None:
        self.process = process
        self.url = url
        self.output = output

    @classmethod
    async def start(
        cls, *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
    ) -> ServerProcess:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "clubroom_server",
            "serve",
            *args,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            cwd=cwd,
        )
        output: list[str] = []
        assert process.stdout is not None
        async with asyncio.timeout(20):
            while True:
                line = (await process.stdout.readline()).decode()
                if not line:
                    raise RuntimeError("server exited early:\n" + "".join(output))
                output.append(line)
                if match := URL_RE.search(line):
                    break
        server = cls(process, match.group(1), output)
        server._pump = asyncio.create_task(server._read_rest())
        return server

    async def _read_rest(self) -> None:
        assert self.process.stdout is not None
        while line := await self.process.stdout.readline():
            self.output.append(line.decode())

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    async def terminate(self) -> int:
        """SIGTERM, then the exit code."""
        self.process.send_signal(signal.SIGTERM)
        return await self.wait()

    async def kill(self) -> int:
        """SIGKILL: no chance to clean up."""
        self.process.kill()
        return await self.wait()

    async def wait(self) -> int:
        code = await asyncio.wait_for(self.process.wait(), 20)
        await self._pump
        return code
