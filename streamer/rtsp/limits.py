"""What RTSP clients may hold at once: control connections (in total and per address) and sessions.

At a cap the server makes room the way a busy operator would: it evicts the connection that has been idle
longest and plays nothing (a flood of idle sockets cannot lock a real viewer out, even from the same
address), or the oldest session that was set up but never played. A playing viewer is never evicted; when
nothing can be evicted the newcomer is refused (connection closed, or 453 for a SETUP/PLAY).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from streamer.config import RtspServerConfig
from streamer.rtsp.messages import BadRequest

if TYPE_CHECKING:
    from streamer.rtsp.session import RtspSession

log = logging.getLogger(__name__)

LIMIT_LOG_INTERVAL_S = 10.0


@dataclass
class RtspCounters:
    """Totals since start, exported as ``streamer_rtsp_*_total``."""

    requests: int = 0
    bad_requests: int = 0
    connections: int = 0
    connections_refused: int = 0
    connections_evicted: int = 0
    idle_timeouts: int = 0
    request_timeouts: int = 0
    sessions_refused: int = 0
    sessions_evicted: int = 0
    sessions_expired: int = 0
    auth_failures: int = 0
    auth_lockouts: int = 0
    auth_locked_requests: int = 0
    internal_errors: int = 0


class Connection:
    """One RTSP control connection: its peer address, when it last sent a request, its sessions."""

    def __init__(self, host: str, writer: asyncio.StreamWriter) -> None:
        self.host = host
        self.writer = writer
        self.key = secrets.token_bytes(16)  # digest nonces are bound to it
        self.last_request = time.monotonic()
        self.sessions: set[RtspSession] = set()
        self.authenticated = False
        self.closed = False

    @property
    def playing(self) -> bool:
        return any(session.playing for session in self.sessions)

    def touch(self) -> None:
        self.last_request = time.monotonic()

    def abort(self) -> None:
        """Idempotent: drop the socket now (its handler then ends and cleans up)."""
        if not self.closed:
            self.closed = True
            self.writer.transport.abort()


@dataclass
class _LimitLog:
    """One warning when a limit first acts, then at most one summary per interval (no log floods)."""

    what: str
    last: float = field(default=-LIMIT_LOG_INTERVAL_S)
    unreported: int = 0

    def note(self, detail: str) -> None:
        self.unreported += 1
        now = time.monotonic()
        if now - self.last >= LIMIT_LOG_INTERVAL_S:
            log.warning("rtsp: %s: %s (%d time(s) since the last such line)", self.what, detail, self.unreported)
            self.last, self.unreported = now, 0


def _idlest(connections: Iterable[Connection]) -> Connection | None:
    candidates = [conn for conn in connections if not conn.closed and not conn.playing]
    return min(candidates, key=lambda conn: conn.last_request, default=None)


class ConnectionTable:
    def __init__(self, config: RtspServerConfig, counters: RtspCounters) -> None:
        self.config = config
        self.counters = counters
        self._by_address: dict[str, set[Connection]] = {}
        self._count = 0
        self._log = _LimitLog("connection limit reached")

    def __len__(self) -> int:
        return self._count

    def admit(self, conn: Connection) -> bool:
        """Make room for ``conn`` by evicting (per address, then in total); False when nothing can go."""
        same_address = self._by_address.get(conn.host, set())
        if len(same_address) >= self.config.max_connections_per_address:
            if not self._evict(same_address, f"{conn.host} holds max_connections_per_address="
                               f"{self.config.max_connections_per_address}"):
                return False
        if self._count >= self.config.max_connections:
            everyone = [item for conns in self._by_address.values() for item in conns]
            if not self._evict(everyone, f"max_connections={self.config.max_connections}"):
                return False
        self._by_address.setdefault(conn.host, set()).add(conn)
        self._count += 1
        return True

    def _evict(self, connections: Iterable[Connection], detail: str) -> bool:
        victim = _idlest(connections)
        if victim is None:
            self.counters.connections_refused += 1
            self._log.note(f"{detail}, all of them playing: refused a new connection")
            return False
        self.counters.connections_evicted += 1
        self._log.note(f"{detail}: closed the connection idle longest (from {victim.host})")
        victim.abort()
        self.remove(victim)
        return True

    def remove(self, conn: Connection) -> None:
        """Idempotent."""
        conns = self._by_address.get(conn.host)
        if conns is None or conn not in conns:
            return
        conns.discard(conn)
        self._count -= 1
        if not conns:
            del self._by_address[conn.host]


class SessionLimits:
    """Admission of SETUP (per connection, per address, not-yet-playing in total) and PLAY (max_viewers)."""

    def __init__(self, config: RtspServerConfig, sessions: dict[str, RtspSession], counters: RtspCounters) -> None:
        self.config = config
        self.sessions = sessions
        self.counters = counters
        self._log = _LimitLog("session limit reached")

    @property
    def playing(self) -> int:
        return sum(1 for session in self.sessions.values() if session.playing)

    @property
    def pending(self) -> int:
        return sum(1 for session in self.sessions.values() if not session.playing)

    def _refuse(self, reason: str) -> BadRequest:
        self.counters.sessions_refused += 1
        self._log.note(f"refused: {reason}")
        return BadRequest(453, reason, fatal=False)

    def admit_setup(self, conn: Connection) -> None:
        """Raise 453, or end the oldest not-yet-playing session to make room for a new one."""
        config = self.config
        if len(conn.sessions) >= config.max_sessions_per_connection:
            raise self._refuse(f"max_sessions_per_connection={config.max_sessions_per_connection}")
        if self.playing >= config.max_viewers:
            raise self._refuse(f"max_viewers={config.max_viewers} playing")
        same_address = [session for session in self.sessions.values() if session.address == conn.host]
        if len(same_address) >= config.max_sessions_per_address:
            self._evict(same_address, f"{conn.host} holds max_sessions_per_address={config.max_sessions_per_address}")
        if self.pending >= config.max_pending_sessions:
            self._evict(list(self.sessions.values()), f"max_pending_sessions={config.max_pending_sessions}")

    def _evict(self, sessions: list[RtspSession], detail: str) -> None:
        pending = [session for session in sessions if not session.playing]
        if not pending:
            raise self._refuse(f"{detail}, all playing")
        victim = min(pending, key=lambda session: session.created)
        self.counters.sessions_evicted += 1
        self._log.note(f"{detail}: ended the oldest session not yet playing")
        victim.end()

    def admit_play(self, session: RtspSession) -> None:
        if not session.playing and self.playing >= self.config.max_viewers:
            raise self._refuse(f"max_viewers={self.config.max_viewers} playing")

    def expire(self, now: float) -> None:
        """End sessions set up but not played within setup_timeout_s, and silent UDP sessions."""
        for session in list(self.sessions.values()):
            if not session.playing and now - session.created > self.config.setup_timeout_s:
                self.counters.sessions_expired += 1
                log.debug("rtsp session %s set up but never played: ended", session.id)
                session.end()
            elif session.expired(now):
                log.info("rtsp session %s timed out", session.id)
                session.end()
