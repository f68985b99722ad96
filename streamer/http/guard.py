"""Connection-level protection of the HTTP server.

- a cap on open connections, in total and per client address (a connection over the cap gets a 503 and is
  closed at once, before anything is parsed);
- aiohttp's parser limits (request target, header field size and count) and its keep-alive timer, which
  closes a connection that has not completed a request ``idle_timeout_s`` after it opened or after its
  last response: idle keep-alive connections, silent ones and half-sent (slowloris) requests alike;
- malformed requests answered 400 by aiohttp are one DEBUG line (no traceback) and a counter; anything
  else aiohttp reports is an internal error: counted, logged once with its traceback.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any, cast

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from streamer.config import HttpServerConfig
from streamer.redact import redact_text

log = logging.getLogger(__name__)

REFUSED = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: 21\r\n"
    b"Retry-After: 1\r\nConnection: close\r\n\r\ntoo many connections\n"
)
REFUSAL_LOG_INTERVAL_S = 60.0
SHUTDOWN_TIMEOUT_S = 1.0
MAX_ERROR_KINDS = 256  # distinct (place, exception) pairs logged in full; later ones at debug level


@dataclass
class HttpStats:
    """Counters of the HTTP server, exported by ``streamer.metrics.HttpCollector``."""

    bad_requests: int = 0
    internal_errors: int = 0
    auth_failures: int = 0
    connections_open: int = 0
    connections_refused: int = 0


class ErrorReporter:
    """Counts internal errors; logs the first of each kind with its traceback, later ones as one DEBUG line."""

    def __init__(self, stats: HttpStats) -> None:
        self.stats = stats
        self._seen: set[tuple[str, str]] = set()

    def report(self, where: str, error: BaseException | None, detail: str = "") -> None:
        self.stats.internal_errors += 1
        kind = (where, type(error).__name__ if error is not None else detail)
        described = f"{type(error).__name__}: {error}" if error is not None else ""
        cause = redact_text(f"{detail} ({described})" if detail and described else detail or described)
        if kind in self._seen or len(self._seen) >= MAX_ERROR_KINDS:
            log.debug("HTTP internal error again in %s: %s", where, cause)
            return
        self._seen.add(kind)
        log.error("HTTP internal error in %s: %s (counted in streamer_http_internal_errors_total; "
                  "later ones of this kind are logged at debug level)", where, cause, exc_info=error)


class ServerLog:
    """Stands in for aiohttp's ``aiohttp.server`` logger (the ``logger`` handler argument).

    aiohttp logs a request it could not parse with ``exception()`` (a full traceback) and answers it 400;
    here that is one DEBUG line without the request's content (it may hold credentials) and a counter."""

    def __init__(self, stats: HttpStats, errors: ErrorReporter) -> None:
        self.stats = stats
        self.errors = errors

    def debug(self, message: str, *args: Any, exc_info: Any = None, **_: Any) -> None:
        self._report(message, args, exc_info)

    def exception(self, message: str, *args: Any, exc_info: Any = True, **_: Any) -> None:
        self._report(message, args, exc_info)

    error = exception

    def warning(self, message: str, *args: Any, **_: Any) -> None:
        log.warning(message, *args)

    def info(self, message: str, *args: Any, **_: Any) -> None:
        log.info(message, *args)

    def _report(self, message: str, args: tuple[Any, ...], exc_info: Any) -> None:
        error = sys.exc_info()[1] if exc_info is True else exc_info
        if isinstance(error, HttpProcessingError):
            self.stats.bad_requests += 1
            reason = redact_text(error.message.splitlines()[0])[:160] if error.message else ""
            log.debug("HTTP %s refused (%s: %s)", error.code, type(error).__name__, reason)
        elif isinstance(error, ConnectionError | asyncio.TimeoutError):  # the client went away mid-answer
            log.debug("HTTP: %s", redact_text(str(message % args if args else message)))
        else:  # aiohttp itself, or a handler that returned no response: a bug
            self.errors.report("aiohttp", error if isinstance(error, BaseException) else None,
                               str(message % args if args else message))


class ConnectionGate:
    """Admits a connection while fewer than ``total`` are open, and fewer than ``per_address`` from its address."""

    def __init__(self, total: int, per_address: int, stats: HttpStats) -> None:
        self.total = total
        self.per_address = per_address
        self.stats = stats
        self._by_address: Counter[str] = Counter()
        self._last_warning = -REFUSAL_LOG_INTERVAL_S

    def admit(self, address: str) -> bool:
        if self.stats.connections_open >= self.total or self._by_address[address] >= self.per_address:
            self.stats.connections_refused += 1
            now = time.monotonic()
            if now - self._last_warning >= REFUSAL_LOG_INTERVAL_S:
                self._last_warning = now
                log.warning(
                    "HTTP: refusing connections (%d open, %d from %s; limits server.http.max_connections=%d, "
                    "max_connections_per_address=%d); counted in streamer_http_connections_refused_total",
                    self.stats.connections_open, self._by_address[address], address, self.total, self.per_address,
                )
            return False
        self._by_address[address] += 1
        self.stats.connections_open += 1
        return True

    def release(self, address: str) -> None:
        self.stats.connections_open -= 1
        self._by_address[address] -= 1
        if self._by_address[address] <= 0:
            del self._by_address[address]


class GuardedRequestHandler(web.RequestHandler):
    """aiohttp's connection protocol, admitted by a ``ConnectionGate`` first."""

    def __init__(self, gate: ConnectionGate, manager: web.Server, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._gate = gate
        self._address: str | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        peer = transport.get_extra_info("peername")
        address = str(peer[0]) if isinstance(peer, tuple | list) and peer else "unknown"
        if not self._gate.admit(address):
            cast(asyncio.Transport, transport).write(REFUSED)  # uvloop's transports are not asyncio subclasses
            transport.close()
            return
        self._address = address
        super().connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self._address is not None:  # a refused connection's request is read and dropped, never parsed
            super().data_received(data)

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._address is None:  # refused: aiohttp never saw this connection
            return
        self._gate.release(self._address)
        self._address = None
        super().connection_lost(exc)


async def listen(runner: web.AppRunner, config: HttpServerConfig, stats: HttpStats,
                 errors: ErrorReporter) -> asyncio.Server:
    """Open the listening socket for ``runner`` (set up) with the gate and the limits of ``config``."""
    server = runner.server
    if server is None:
        raise RuntimeError("the runner must be set up before listening")
    loop = asyncio.get_running_loop()
    gate = ConnectionGate(config.max_connections, config.max_connections_per_address, stats)
    options: dict[str, Any] = {
        "loop": loop,
        "access_log": None,
        "logger": ServerLog(stats, errors),
        "keepalive_timeout": config.idle_timeout_s,
        "max_line_size": config.max_url_bytes,
        "max_field_size": config.max_header_bytes,
        "max_headers": config.max_headers,
        "lingering_time": 0,  # an unread request body closes the connection after the response, never waited for
    }
    return await loop.create_server(
        lambda: GuardedRequestHandler(gate, server, **options), config.host or None, config.port, reuse_address=True
    )
