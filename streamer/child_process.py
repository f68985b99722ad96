"""A child process started from asyncio code without the event loop's own spawn (``ChildProcess``).

Under ``streamer run`` the loop is uvloop, whose spawn runs an after-fork hook in the child: a lock another
server thread held at the fork then stays held there, the child never reaches exec, and ``uv_spawn``, waiting
for the exec, blocks the event loop for good (seen in CI, 2026-12-07). CPython's ``subprocess`` runs no Python
code between fork and exec, so the child is started by it in a worker thread and its pipes are read as asyncio
streams. A coroutine that starts a process uses this (or runs ``subprocess`` in a thread itself); the tests' loop
refuses its own spawn (tests/conftest.py)."""

from __future__ import annotations

import asyncio
import subprocess
from functools import partial

DEFAULT_LINE_LIMIT = 65536


class ChildProcess:
    """A running child: its ``stdout`` / ``stderr`` as ``asyncio.StreamReader``, ``wait()`` (reaped in a worker
    thread), ``returncode``, signals."""

    def __init__(self, popen: subprocess.Popen[bytes], stdout: asyncio.StreamReader,
                 stderr: asyncio.StreamReader) -> None:
        self.popen, self.stdout, self.stderr = popen, stdout, stderr
        self.pid = popen.pid

    @classmethod
    async def start(cls, command: list[str], *, line_limit: int = DEFAULT_LINE_LIMIT,
                    new_session: bool = False) -> ChildProcess:
        """Start ``command`` (stdin from /dev/null). ``line_limit``: the longest line ``readline`` returns;
        ``new_session``: the child leads a session of its own (signals to the server's group miss it)."""
        spawn = asyncio.ensure_future(asyncio.to_thread(
            subprocess.Popen, command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            start_new_session=new_session,
        ))
        try:
            popen = await asyncio.shield(spawn)
        except asyncio.CancelledError:  # cancelled while the thread started it: the child must not outlive us
            popen = await spawn
            popen.kill()
            await asyncio.to_thread(popen.wait)
            raise
        try:
            loop = asyncio.get_running_loop()
            streams = []
            for pipe in (popen.stdout, popen.stderr):
                stream = asyncio.StreamReader(limit=line_limit)
                await loop.connect_read_pipe(partial(asyncio.StreamReaderProtocol, stream), pipe)
                streams.append(stream)
        except BaseException:
            popen.kill()
            await asyncio.to_thread(popen.wait)
            raise
        return cls(popen, *streams)

    @property
    def returncode(self) -> int | None:
        return self.popen.poll()

    def send_signal(self, signum: int) -> None:
        self.popen.send_signal(signum)

    def terminate(self) -> None:
        self.popen.terminate()

    def kill(self) -> None:
        self.popen.kill()

    async def wait(self) -> int:
        """The exit status, once the child has exited (reaped in a worker thread)."""
        return await asyncio.to_thread(self.popen.wait)
