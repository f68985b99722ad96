"""What WHEP and WHIP sessions share: a registry that ends a session when its connection fails or closes,
or does not come up within ``connect_timeout_s``, and ends them all at shutdown."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any, Generic, Protocol, TypeVar

from aiortc import RTCPeerConnection

log = logging.getLogger(__name__)


class PeerSession(Protocol):
    id: str
    pc: RTCPeerConnection
    closed: bool

    @property
    def label(self) -> str: ...

    @property
    def stream(self) -> str: ...

    @property
    def dropped(self) -> int: ...

    async def close(self) -> None: ...


S = TypeVar("S", bound=PeerSession)


class SessionRegistry(Generic[S]):
    def __init__(self, connect_timeout_s: float) -> None:
        self.connect_timeout_s = connect_timeout_s
        self.sessions: dict[str, S] = {}
        self.failed = 0  # connections that failed or did not come up in time
        self.ended_dropped: dict[str, int] = {}  # units dropped by sessions that ended, by stream
        self.closing = False  # set by close(): no session is added after it
        self._expiries: set[asyncio.Task[None]] = set()  # cancelled at close (they only wait)
        self._endings: set[asyncio.Task[None]] = set()  # awaited at close (a peer connection closing)

    async def add(self, session: S) -> bool:
        """Keep ``session`` until it ends (DELETE, its connection failing or closing, or never connecting).
        After ``close`` (an offer answered during shutdown) the session is closed at once: False."""
        if self.closing:
            await session.close()
            return False
        self.sessions[session.id] = session
        session.pc.on("connectionstatechange", lambda: self._state_changed(session))
        self._spawn(self._expiries, self._expire_unconnected(session))
        return True

    def _state_changed(self, session: S) -> None:
        state = session.pc.connectionState
        if state in ("failed", "closed") and not session.closed:
            self.failed += state == "failed"
            log.info("%s: connection %s", session.label, state)
            self._spawn(self._endings, self.end(session))

    async def _expire_unconnected(self, session: S) -> None:
        await asyncio.sleep(self.connect_timeout_s)
        if not session.closed and session.pc.connectionState != "connected":
            self.failed += 1
            log.info("%s: not connected within server.webrtc.connect_timeout_s=%g", session.label,
                     self.connect_timeout_s)
            self._spawn(self._endings, self.end(session))

    async def end(self, session: S) -> None:
        self._forget(session)
        await session.close()

    def _forget(self, session: S) -> None:
        """Out of ``sessions``, its drops kept in ``ended_dropped`` (counters never go down)."""
        if self.sessions.pop(session.id, None) is not None:
            self.ended_dropped[session.stream] = self.ended_dropped.get(session.stream, 0) + session.dropped

    def end_stream(self, camera: str) -> int:
        """End the sessions of a camera (and of its views) that was removed; their drop counts go with it."""
        sessions = [session for session in self.sessions.values()
                    if session.stream == camera or session.stream.startswith(f"{camera}/")]
        for session in sessions:
            self._spawn(self._endings, self.end(session))
        for stream in [stream for stream in self.ended_dropped if stream == camera or stream.startswith(f"{camera}/")]:
            del self.ended_dropped[stream]
        return len(sessions)

    def _spawn(self, tasks: set[asyncio.Task[None]], coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    async def close(self) -> None:
        """End every session (server shutdown), letting those already ending finish closing; idempotent."""
        self.closing = True
        for task in list(self._expiries):
            task.cancel()
        sessions = list(self.sessions.values())
        for session in sessions:
            self._forget(session)
        await asyncio.gather(*(session.close() for session in sessions), *list(self._endings),
                             return_exceptions=True)
