"""Junk HTTP against a real ``streamer run`` process: every bad request is a 4xx or a close, never a
traceback or an internal error, and /healthz and /metrics keep answering during and after.

Seeded and time-bounded: ``STREAMER_FUZZ_SEED`` and ``STREAMER_FUZZ_SECONDS`` change the run (the seed is
printed on failure)."""

from __future__ import annotations

import os
import random
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.peers.processes import StreamerProcess
from tests.streamer.http.conftest import TOKEN, http_get

SEED = int(os.environ.get("STREAMER_FUZZ_SEED", "20261204"))
SECONDS = float(os.environ.get("STREAMER_FUZZ_SECONDS", "12"))
IDLE_TIMEOUT_S = 2.0

METHODS = [b"GET", b"HEAD", b"POST", b"PUT", b"DELETE", b"OPTIONS", b"TRACE", b"CONNECT", b"PATCH", b"PRI",
           b"get", b"G\x00T", b"FOO", b"\xff\xfe", b"GET GET", b"X" * 200, b""]
PATHS = [b"/", b"/healthz", b"/metrics", b"/api/streams", b"/api/streams?x=%zz&y", b"/%00", b"/%", b"*",
         b"http://x/healthz", b"//", b"/../../etc/passwd", b"/api/" + b"a" * 5000, b"/\xff\xfe", b"",
         b"/healthz#frag", b"/a b", b"/%2e%2e/metrics", b"/healthz?" + b"q=" * 3000]
VERSIONS = [b"HTTP/1.1", b"HTTP/1.0", b"HTTP/2.0", b"HTTP/9.9", b"HTTP/1.1x", b"", b"RTSP/1.0", b"HTTP/1",
            b"http/1.1", b"HTTP/1.1 extra"]
HEADERS = [
    b"Host: x", b"Host: x", b"NoColon", b": no-name", b"Host : space-before-colon", b"X-\x00: nul", b" folded",
    b"\tfolded", b"Content-Length: -1", b"Content-Length: 1e9", b"Content-Length: 99999999999999999999999",
    b"Content-Length: 5\r\nContent-Length: 6", b"Content-Length: 4", b"Content-Length: 100000000",
    b"Transfer-Encoding: chunked", b"Transfer-Encoding: gzip, chunked", b"Transfer-Encoding: chunked, identity",
    b"Transfer-Encoding: xchunked", b"Transfer-Encoding: chunked\r\nContent-Length: 3", b"Expect: 100-continue",
    b"Connection: Upgrade\r\nUpgrade: websocket", b"Upgrade: h2c\r\nConnection: Upgrade, HTTP2-Settings",
    b"Content-Encoding: gzip", b"Authorization: Bearer", b"Authorization: Bearer " + b"z" * 9000,
    b"Authorization: Basic !!!", b"Authorization: Bearer \xff\xfe", b"Authorization: Bearer wrong-token-here",
    b"Cookie: " + b"c=1; " * 3000, b"X-Long: " + b"v" * 100_000, b"Connection: keep-alive",
    b"Accept: text/html", b"Range: bytes=0-", b"X-Forwarded-For: 1.2.3.4",
]
BODIES = [b"", b"zz\r\nabc\r\n0\r\n\r\n", b"ffffffffffffffffffffff\r\n", b"5\r\nabc\r\n", b"5;ext=\x00\r\nabcde\r\n0\r\n\r\n",
          b"-1\r\n", b"0\r\n", b"3\r\nabc0\r\n\r\n", b"abcd", b"\x1f\x8b\x08\x00garbage", b"4\r\nabcd\r\n" * 50]
PREFACES = [b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(32),
            b"\r\n\r\n\r\n", b"\x00" * 64, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" * 40]


def junk(rng: random.Random) -> bytes:
    """One connection's worth of junk: binary garbage, a mangled request line, a well-formed request line with
    junk headers and bodies (bad chunked encoding among them), or a valid request with a few bytes flipped."""
    kind = rng.random()
    if kind < 0.1:
        return rng.randbytes(rng.randint(1, 2048))
    if kind < 0.15:
        return rng.choice(PREFACES)
    newline = rng.choice([b"\r\n"] * 6 + [b"\n", b"\r", b"\n\r"])
    headers = [rng.choice(HEADERS) for _ in range(rng.choice([0, 1, 2, 3, 5, 200]))]
    if kind < 0.45:
        line = b" ".join((rng.choice(METHODS), rng.choice(PATHS), rng.choice(VERSIONS)))
    else:
        line = b" ".join((rng.choice([b"GET", b"POST", b"PUT", b"HEAD"]), rng.choice(PATHS), b"HTTP/1.1"))
        headers.insert(0, b"Host: x")
        newline = b"\r\n" if kind < 0.8 else newline
    data = newline.join([line, *headers]) + newline + newline + rng.choice(BODIES)
    if kind > 0.85:  # flip a few bytes
        buffer = bytearray(data)
        for _ in range(rng.randint(1, 8)):
            buffer[rng.randrange(len(buffer))] = rng.randrange(256)
        data = bytes(buffer)
    return data


def exchange(port: int, data: bytes) -> bytes:
    """Send ``data`` on a fresh connection; what came back within 0.5 s (or until the server closed)."""
    received = b""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        try:
            sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass
        sock.settimeout(0.5)
        try:
            while chunk := sock.recv(65536):
                received += chunk
        except (TimeoutError, ConnectionResetError):
            pass
    return received


def http_counters(port: int) -> tuple[float, float]:
    """streamer_http_internal_errors_total and streamer_http_bad_requests_total."""
    status, body = http_get(port, "/metrics", TOKEN)
    assert status == 200
    values = dict(line.rsplit(" ", 1) for line in body.decode().splitlines() if line and not line.startswith("#"))
    return float(values["streamer_http_internal_errors_total"]), float(values["streamer_http_bad_requests_total"])


def slowloris(port: int, stop: threading.Event, closed_after: list[float]) -> None:
    """Keeps ten connections sending one header byte every 0.3 s, never finishing their request, opening a new
    one for each the server closes; records how long each lasted."""
    socks: list[tuple[socket.socket, float]] = []
    try:
        while not stop.is_set():
            while len(socks) < 10:
                sock = socket.create_connection(("127.0.0.1", port), timeout=5)
                sock.sendall(b"GET /api/streams HTTP/1.1\r\nHost: x\r\nX-Slow: ")
                sock.setblocking(False)
                socks.append((sock, time.monotonic()))
            time.sleep(0.3)
            for item in list(socks):
                sock, opened = item
                try:
                    sock.sendall(b"s")
                    if sock.recv(4096) == b"":
                        raise ConnectionResetError
                except BlockingIOError:
                    continue
                except OSError:
                    closed_after.append(time.monotonic() - opened)
                    socks.remove(item)
                    sock.close()
    finally:
        for sock, _ in socks:
            sock.close()


@pytest.fixture
def streamer(tmp_path: Path) -> Iterator[StreamerProcess]:
    config = tmp_path / "fuzz.yaml"
    config.write_text(
        "cameras:\n  - name: cam\n    source: {type: demo, width: 160, height: 96, fps: 10}\n"
        "    engine: {type: passthrough}\n"
        f"server:\n  rtsp: {{host: 127.0.0.1}}\n  http: {{host: 127.0.0.1, idle_timeout_s: {IDLE_TIMEOUT_S}, "
        f"auth: {{token: {TOKEN}}}}}\n"
        "log_level: debug\n"
    )
    process = StreamerProcess("--config", str(config)).start()
    yield process
    process.kill()


def test_junk_requests_are_4xx_never_tracebacks(streamer: StreamerProcess) -> None:
    port = streamer.http_port
    rng = random.Random(SEED)
    stop = threading.Event()
    closed_after: list[float] = []
    loris = threading.Thread(target=slowloris, args=(port, stop, closed_after), daemon=True)
    loris.start()
    statuses: dict[int, int] = {}
    sent = 0
    deadline = time.monotonic() + SECONDS
    try:
        while time.monotonic() < deadline:
            reply = exchange(port, junk(rng))
            sent += 1
            if reply.startswith(b"HTTP/"):
                status = int(reply.split(b" ", 2)[1][:3])
                statuses[status] = statuses.get(status, 0) + 1
                assert status < 500, f"seed {SEED}, case {sent}: {reply[:200]!r}"
            if sent % 25 == 0:  # the endpoints keep answering during the fuzz
                assert http_get(port, "/healthz")[0] == 200, f"seed {SEED}: /healthz failed after {sent} cases"
                assert http_counters(port)[0] == 0, f"seed {SEED}: internal error after {sent} cases"
    finally:
        stop.set()
        loris.join(5)
    errors, bad = http_counters(port)
    assert http_get(port, "/healthz")[0] == 200 and streamer.process is not None and streamer.process.poll() is None
    streamer.terminate()
    log = "".join(streamer.log)
    assert "Traceback" not in log, f"seed {SEED}: {log.count('Traceback')} tracebacks, the first: " + (
        log[log.index("Traceback") - 300 :][:3000])
    problems = [line for line in log.splitlines() if " ERROR " in line or " CRITICAL " in line]
    assert not problems, problems[:5]
    assert TOKEN not in log
    assert errors == 0 and bad > sent / 4, (errors, bad, sent)  # most junk reached the parser and was refused
    assert sum(statuses.values()) > sent / 2, statuses  # most junk got an answer, not just a close
    # every slow connection was cut at the idle timeout (fuzz time / timeout * 10 of them)
    assert len(closed_after) >= SECONDS / IDLE_TIMEOUT_S * 10 * 0.7, closed_after
    assert max(closed_after) < IDLE_TIMEOUT_S + 1.5, closed_after
