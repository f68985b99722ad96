"""A typed consumer of the frame taps: numpy frames with their metadata.

    from streamer.taps.client import TapClient

    with TapClient("tcp://127.0.0.1:5555", topics=["gate/restored"]) as client:
        for frame in client:                      # blocks; client.receive(timeout_s) to poll
            print(frame.header.seq, frame.header.wallclock, frame.image.shape)

``frame.image`` is always RGB; an ``i420`` or ``nv12`` tap's planes are in ``frame.data`` as they came
(converted to RGB only when ``image`` is read) and its Y plane in ``frame.luma`` for free.
``async for frame in client.aiter():`` does the same on an asyncio loop. ``pattern="pull"`` makes it one
of several load-balanced workers of a PUSH tap. ``gaps`` counts the messages lost between those received
(per topic, from ``seq``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from functools import cached_property
from types import TracebackType
from typing import Literal

import numpy as np
import zmq
import zmq.asyncio

from streamer.taps.wire import YUV_FORMATS, TapHeader, WireError, decode_payload, yuv_to_rgb


@dataclass(frozen=True)
class TapFrame:
    header: TapHeader
    data: np.ndarray  # the payload: H x W x 3 RGB (rgb24, jpeg) or (H * 3/2) x W planes (i420, nv12)
    payload_bytes: int  # size on the wire

    @cached_property
    def image(self) -> np.ndarray:
        """H x W x 3 uint8 RGB (an i420 / nv12 payload is converted on first use)."""
        if self.header.pix_fmt in YUV_FORMATS:
            return yuv_to_rgb(self.data, self.header.pix_fmt)
        return self.data

    @property
    def luma(self) -> np.ndarray:
        """H x W uint8 brightness: the Y plane of a YUV payload (no copy), else BT.601 luma from RGB."""
        if self.header.pix_fmt in YUV_FORMATS:
            return self.data[: self.header.height]
        weights = np.array([0.299, 0.587, 0.114], np.float32)
        return (self.data.astype(np.float32) @ weights).round().astype(np.uint8)


class TapClient:
    def __init__(
        self,
        endpoint: str,
        topics: Sequence[str] = ("",),
        pattern: Literal["sub", "pull"] = "sub",
        bind: bool = False,
        receive_hwm: int = 16,
    ) -> None:
        self.endpoint = endpoint
        self.gaps = 0
        self._last_seq: dict[str, int] = {}
        self._sync_context: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
        self._pattern = pattern
        self._topics = list(topics)
        self._bind = bind
        self._receive_hwm = receive_hwm
        self._socket = self._open(self._sync_context)
        self._async_socket: zmq.asyncio.Socket | None = None

    def _open(self, context: zmq.Context[zmq.Socket[bytes]]) -> zmq.Socket[bytes]:
        socket = context.socket(zmq.SUB if self._pattern == "sub" else zmq.PULL)
        socket.setsockopt(zmq.RCVHWM, self._receive_hwm)
        socket.setsockopt(zmq.LINGER, 0)
        if self._pattern == "sub":
            for topic in self._topics:
                socket.setsockopt(zmq.SUBSCRIBE, topic.encode())
        if self._bind:
            socket.bind(self.endpoint)
        else:
            socket.connect(self.endpoint)
        return socket

    def receive(self, timeout_s: float | None = None) -> TapFrame | None:
        """The next frame, or None when none came within ``timeout_s`` (None = wait for ever)."""
        timeout_ms = -1 if timeout_s is None else max(0, int(timeout_s * 1000))
        if not self._socket.poll(timeout_ms):
            return None
        return self._parse(self._socket.recv_multipart())

    def __iter__(self) -> Iterator[TapFrame]:
        while True:
            frame = self.receive()
            if frame is not None:
                yield frame

    async def aiter(self) -> AsyncIterator[TapFrame]:
        """Frames on an asyncio loop (a second socket, opened on first use, replaces the sync one)."""
        if self._async_socket is None:
            self._socket.close(linger=0)
            self._async_socket = self._open(zmq.asyncio.Context.instance())  # type: ignore[assignment,arg-type]
        socket = self._async_socket
        if socket is None:
            raise RuntimeError("tap client socket did not open")
        while True:
            yield self._parse(await socket.recv_multipart())

    def _parse(self, parts: list[bytes]) -> TapFrame:
        if len(parts) != 3:
            raise WireError(f"a tap message has 3 parts, got {len(parts)}")
        topic, raw_header, payload = parts
        header = TapHeader.decode(raw_header)
        if topic.decode() != header.topic:
            raise WireError(f"topic {topic!r} does not match the header's {header.topic!r}")
        last = self._last_seq.get(header.topic)
        if last is not None and header.seq > last + 1:
            self.gaps += header.seq - last - 1
        self._last_seq[header.topic] = header.seq
        return TapFrame(header, decode_payload(header, payload), len(payload))

    def close(self) -> None:
        """Idempotent."""
        self._socket.close(linger=0)
        if self._async_socket is not None:
            self._async_socket.close(linger=0)

    def __enter__(self) -> TapClient:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None) -> None:
        self.close()
