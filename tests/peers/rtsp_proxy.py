"""A TCP proxy between an RTSP camera and its client that can rewrite the interleaved RTP packets."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine
from typing import Any

from tests.peers.processes import free_port

# Called with each RTP packet of interleaved channel 0 (the video), in order; returns the packet to send on.
Rewrite = Callable[[bytearray], bytes]


class InterleavedProxy:
    """Forwards rtsp://127.0.0.1:PORT/... to the camera on ``target_port`` (TCP transport only); RTSP text
    passes through, RTP packets on channel 0 go through ``rewrite``."""

    def __init__(self, target_port: int, rewrite: Rewrite) -> None:
        self.target_port = target_port
        self.rewrite = rewrite
        self.port = free_port()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        threading.Thread(target=self._run, daemon=True).start()
        if not self._ready.wait(5):
            raise TimeoutError("proxy did not start")

    @property
    def url(self) -> str:
        return f"rtsp://127.0.0.1:{self.port}/cam"

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(asyncio.start_server(self._client, "127.0.0.1", self.port))
        self._ready.set()
        self._loop.run_forever()
        server.close()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)

        async def upstream() -> None:
            try:
                while data := await reader.read(4096):
                    up_writer.write(data)
            finally:
                up_writer.close()  # the camera sees its client leave

        async def downstream() -> None:
            try:
                while first := await up_reader.read(1):
                    if first != b"$":  # RTSP response text: pass through
                        writer.write(first)
                        continue
                    header = await up_reader.readexactly(3)
                    payload = bytearray(await up_reader.readexactly(int.from_bytes(header[1:], "big")))
                    data = self.rewrite(payload) if header[0] == 0 else bytes(payload)
                    writer.write(b"$" + header[:1] + len(data).to_bytes(2, "big") + data)
            finally:
                writer.close()

        # No task is left with an exception to be logged from this thread: Python 3.11 parses source
        # while it prints a traceback, which races the main thread's own parsing ("AST constructor
        # recursion depth mismatch" in pytest).
        await asyncio.gather(_quietly(upstream()), _quietly(downstream()))

    def close(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)


async def _quietly(coroutine: Coroutine[Any, Any, None]) -> None:
    try:
        await coroutine
    except (OSError, asyncio.IncompleteReadError):
        pass
