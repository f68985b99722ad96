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

    async def close(self) -> None: ...


S = TypeVar("S", bound=PeerSession)


class SessionRegistry(Generic[S]):
    def __init__(self, connect_timeout_s: float) -> None:
        self.connect_timeout_s = connect_timeout_s
        self.sessions: dict[str, S] = {}
        self.failed = 0  # connections that failed or did not come up in time
        self._tasks: set[asyncio.Task[None]] = set()

    def add(self, session: S) -> None:
        """Keep ``session`` until it ends (DELETE, its connection failing or closing, or never connecting)."""
        self.sessions[session.id] = session
        session.pc.on("connectionstatechange", lambda: self._state_changed(session))
        self._spawn(self._expire_unconnected(session))

    def _state_changed(self, session: S) -> None:
        state = session.pc.connectionState
        if state in ("failed", "closed") and not session.closed:
            self.failed += state == "failed"
            log.info("%s: connection %s", session.label, state)
            self._spawn(self.end(session))

    async def _expire_unconnected(self, session: S) -> None:
        await asyncio.sleep(self.connect_timeout_s)
        if not session.closed and session.pc.connectionState != "connected":
            self.failed += 1
            log.info("%s: not connected within server.webrtc.connect_timeout_s=%g", session.label,
                     self.connect_timeout_s)
            await self.end(session)

    async def end(self, session: S) -> None:
        self.sessions.pop(session.id, None)
        await session.close()

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        """End every session (server shutdown); idempotent."""
        for task in list(self._tasks):
            task.cancel()
        sessions = list(self.sessions.values())
        self.sessions.clear()
        await asyncio.gather(*(session.close() for session in sessions), return_exceptions=True)
