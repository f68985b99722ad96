"""Seeded fuzz of ``streamer run``'s RTSP server (Digest auth on) while a real viewer watches.

It fails when any input reaches a catch-all (``streamer_rtsp_internal_errors_total``, or a traceback in the
log) or when the viewer loses more than 5 % of its frames. Deterministic: the same payloads every run. Most
payloads are a well-formed request (with a valid Digest answer, on a connection that may hold a real
session) with one or two things broken, so that the fuzz reaches the handlers, not only the parser.
"""

from __future__ import annotations

import random
import socket
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.conftest import FPS, HEIGHT, WIDTH
from tests.peers.processes import GstCamera, StreamerProcess, start_viewer
from tests.streamer.rtsp.client import digest_authorization

SEED = 20261122
CONNECTIONS = 3000  # per fuzzing thread; two threads (seeds SEED and SEED + 1) interleave their connections
CONFIG = """\
cameras: [{{name: restored, source: {{type: rtsp, url: "{camera}"}}, engine: {{type: passthrough}}}}]
server:
  rtsp:
    auth: {{method: digest, users: [{{username: viewer, password: s3cret}}], max_failures: 500, lockout_s: 1}}
"""
METHODS = ["OPTIONS", "DESCRIBE", "SETUP", "PLAY", "PAUSE", "TEARDOWN", "GET_PARAMETER", "SET_PARAMETER"]
ODD_METHODS = ["ANNOUNCE", "RECORD", "X", "describe", "GET", "OPTIONS\x00", "A" * 40, ""]
UNICODE = ["²", "①", "١٢", "５", "é", "\u202e", "𝟙", "\ufeff", "ß", "\u0085", "\x7f", "\x00", "\t", "\x1b[2J", "\r"]
NUMBERS = ["0", "1", "-1", "65535", "65536", "99999999999999999999", "+5", " 5", "1_000", "0x10", "", "²", "١",
           "①", "abc", "1.5", "1e9", "\x00", "4294967296", "٣٤"]
TRANSPORTS = [
    "RTP/AVP;unicast;client_port={a}-{b}",
    "RTP/AVP/TCP;interleaved={a}-{b}",
    "RTP/AVP;client_port={a}",
    "RTP/AVP;unicast;client_port={a}-",
    "RTP/AVP;multicast;destination=224.1.1.1;port={a}-{b}",
    "RTP/AVP/UDP;unicast;client_port={a}-{b};mode=record",
    "RTP/SAVP;unicast",
    "rtp/avp/tcp;INTERLEAVED={a}",
    "RTP/AVP/TCP;interleaved",
    ";;;;",
    "",
    ",".join(["RTP/AVP;unicast;client_port=5000-5001"] * 60),
    "RTP/AVP;client_port=" + "9" * 300,
    "RTP/AVP;unicast;client_port={a}-{b};ssrc={a};ttl={b};source=10.0.0.1;destination=8.8.8.8",
]


class Fuzzer:
    def __init__(self, rng: random.Random, url: str) -> None:
        self.rng = rng
        self.base = url

    def number(self) -> str:
        return self.rng.choice([*NUMBERS, str(self.rng.randint(-10**6, 10**6))])

    def text(self, size: int = 12) -> str:
        alphabet = "abcXYZ019-_=;,:/.?%&\"' " + "".join(UNICODE)
        return "".join(self.rng.choice(alphabet) for _ in range(self.rng.randint(0, size)))

    def bad_url(self) -> str:
        return self.rng.choice([
            "*", "", "rtsp://[::1", "rtsp://h:99999999/x", f"{self.base}?{self.text()}", "/restored",
            "rtsp://127.0.0.1/" + "a" * self.rng.choice([100, 2100, 5000]), f"rtsp://{self.text()}/",
            f"{self.base}/{self.text()}", "rtsp://user:pa@ss@127.0.0.1/x", "%00", "../../etc/passwd",
            f"{self.base}/trackID=9", f"{self.base}/trackID=0/x", "rtsp://127.0.0.1/nothere",
        ])

    def transport(self) -> str:
        return self.rng.choice(TRANSPORTS).format(a=self.number(), b=self.number())

    def request(self, session: str, challenge: str) -> bytes:
        """A valid request with zero to two things broken."""
        rng = self.rng
        method = rng.choice(METHODS)
        url = f"{self.base}/trackID=0" if method == "SETUP" else self.base
        headers = {"CSeq": str(rng.randint(1, 999))}
        if session and method in ("PLAY", "TEARDOWN", "GET_PARAMETER", "PAUSE"):
            headers["Session"] = session
        if method == "SETUP":
            headers["Transport"] = rng.choice(["RTP/AVP/TCP;unicast;interleaved=2-3",
                                               "RTP/AVP;unicast;client_port=40002-40003"])
        body, odd_answer = b"", ""
        for _ in range(rng.choice([0, 1, 1, 2])):
            mutation = rng.randrange(12)
            if mutation == 0:
                method = rng.choice(ODD_METHODS)
            elif mutation == 1:
                url = self.bad_url()
            elif mutation == 2:
                headers["CSeq"] = self.number() if rng.random() < 0.8 else self.text()
            elif mutation == 3:
                headers["Transport"] = self.transport()
            elif mutation == 4:
                headers["Session"] = rng.choice([self.text(), session + ";timeout=" + self.number(), "x" * 3000])
            elif mutation == 5:
                declared = rng.choice([self.number(), "5", "16", "17000", str(rng.randint(0, 64))])
                headers["Content-Length"] = declared
                size = int(declared) if declared.isdecimal() and len(declared) < 6 else rng.randint(0, 40)
                body = rng.randbytes(rng.choice([0, size, max(size - 3, 0), size + 7]) % 600)
            elif mutation == 6:
                for index in range(rng.choice([1, 5, 70])):
                    headers[f"X-Big-{index}"] = "b" * rng.choice([10, 1000, 4000, 9000])
            elif mutation == 7:
                headers[self.text(8) or "X"] = self.text(40)
            elif mutation == 8 and rng.random() < 0.3:
                odd_answer = rng.choice(UNICODE) + self.text()  # a valid header whose response is not hex
            elif mutation == 8:
                headers["Authorization"] = rng.choice([
                    "Basic " + self.text(), f'Digest username="{self.text()}", nonce="{self.text()}", response="x"',
                    'Digest username="viewer", realm="streamer", nonce="1.2.3", uri="' + self.base + '", response="' +
                    "0" * 32 + '"', "Digest " + ",".join(["a=b"] * 500), self.text(60), "Digest"])
            elif mutation == 9:
                url = url + self.rng.choice(UNICODE)
            elif mutation == 10:
                headers["Range"] = rng.choice(["npt=" + self.number() + "-", "clock=" + self.text(), "npt=now-"])
            else:
                headers["Require"] = self.text()
        if challenge and "Authorization" not in headers and rng.random() < 0.9:
            answer = digest_authorization(challenge, method, url, "viewer", "s3cret")
            headers["Authorization"] = answer.replace('response="', f'response="{odd_answer}') if odd_answer else answer
        lines = [f"{method} {url} RTSP/1.0", *(f"{name}: {value}" for name, value in headers.items())]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8", "surrogatepass") + body

    def interleaved(self) -> bytes:
        length = self.rng.choice([0, 1, 4, 1400, 65535, self.rng.randint(0, 65535)])
        payload = self.rng.randbytes(min(length, self.rng.choice([0, length, 200, 3])))
        return b"$" + bytes([self.rng.randrange(256)]) + length.to_bytes(2, "big") + payload

    def payload(self, session: str, challenge: str) -> bytes:
        kind = self.rng.random()
        if kind < 0.7:
            return self.request(session, challenge)
        if kind < 0.8:
            return self.interleaved()
        if kind < 0.85:
            return self.rng.randbytes(self.rng.randint(1, 300))
        data = self.request(session, challenge)
        if kind < 0.93:  # truncated
            return data[: self.rng.randint(0, len(data))]
        return data.replace(b" ", self.rng.choice([b"\xff", b"\xc3", b"\r", b"  ", b"\n"]), 1)  # bad bytes


def exchange(sock: socket.socket, text: str) -> str:
    sock.sendall(text.encode())
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            return ""
        data += chunk
    return data.decode(errors="replace")


def header(response: str, name: str) -> str:
    for line in response.split("\r\n"):
        if line.lower().startswith(name + ":"):
            return line.split(":", 1)[1].strip()
    return ""


def start_session(sock: socket.socket, url: str, rng: random.Random) -> tuple[str, str]:
    """A Digest challenge for this connection and, half the time, a real (maybe playing) session."""
    challenge = header(exchange(sock, f"DESCRIBE {url} RTSP/1.0\r\nCSeq: 1\r\n\r\n"), "www-authenticate")
    if not challenge or rng.random() < 0.5:
        return "", challenge
    transport = rng.choice(["RTP/AVP/TCP;unicast;interleaved=0-1", "RTP/AVP;unicast;client_port=40000-40001"])
    auth = digest_authorization(challenge, "SETUP", f"{url}/trackID=0", "viewer", "s3cret")
    response = exchange(sock, f"SETUP {url}/trackID=0 RTSP/1.0\r\nCSeq: 2\r\nTransport: {transport}\r\n"
                              f"Authorization: {auth}\r\n\r\n")
    session = header(response, "session").split(";")[0]
    if session and rng.random() < 0.5:
        auth = digest_authorization(challenge, "PLAY", url, "viewer", "s3cret")
        sock.sendall(f"PLAY {url} RTSP/1.0\r\nCSeq: 3\r\nSession: {session}\r\nAuthorization: {auth}\r\n\r\n".encode())
    return session, challenge


def run_fuzz(port: int, seed: int, connections: int, keep_going: Callable[[], bool]) -> int:
    """Fuzz ``connections`` connections (1 to 12 pipelined payloads each); returns the payloads sent."""
    rng = random.Random(seed)
    url = f"rtsp://127.0.0.1:{port}/restored"
    fuzzer = Fuzzer(rng, url)
    sent = 0
    for _ in range(connections):
        if not keep_going():
            break
        plan, batch = rng.random(), rng.choice([1, 1, 2, 4, 12])
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=3) as sock:
                session, challenge = start_session(sock, url, rng) if plan < 0.6 else ("", "")
                sock.sendall(b"".join(fuzzer.payload(session, challenge) for _ in range(batch)))
                sent += batch
                sock.shutdown(socket.SHUT_WR)
                sock.settimeout(2)
                while sock.recv(65536):
                    pass
        except OSError:  # reset by the server, or a read timed out: both fine
            pass
    return sent


@pytest.mark.slow
def test_fuzz_never_reaches_a_catch_all_and_a_viewer_keeps_its_frames(camera: GstCamera, tmp_path: Path) -> None:
    config = tmp_path / "fuzz.yaml"
    config.write_text(CONFIG.format(camera=camera.url))
    streamer = StreamerProcess("--config", str(config)).start()
    viewer = start_viewer("ffmpeg", streamer.url().replace("rtsp://", "rtsp://viewer:s3cret@"), WIDTH, HEIGHT, "tcp")
    try:
        assert viewer.first_frame.wait(20), "the viewer got no frame"
        time.sleep(1.0)  # ffmpeg releases a burst after probing: count from steady state
        start = time.monotonic()
        with ThreadPoolExecutor(2) as pool:
            runs = [pool.submit(run_fuzz, streamer.rtsp_port, SEED + index, CONNECTIONS,
                                lambda: viewer.process.poll() is None) for index in range(2)]
            sent = sum(run.result() for run in runs)
        end = time.monotonic()
        time.sleep(0.5)  # frames decoded before `end` still in flight
        count = viewer.count_between(start, end)
        metrics = streamer.metrics()
        assert viewer.process is not None and viewer.process.poll() is None, "the viewer was disconnected"
    finally:
        viewer.stop()
        streamer.kill()
    expected = FPS * (end - start)
    log = "".join(streamer.log)
    print(f"fuzz: {sent} payloads on {2 * CONNECTIONS} connections in {end - start:.1f} s, viewer {count} of "
          f"{expected:.0f} frames; server: {metrics['streamer_rtsp_requests_total']:.0f} requests, "
          f"{metrics['streamer_rtsp_bad_requests_total']:.0f} bad, "
          f"{metrics['streamer_rtsp_auth_failures_total']:.0f} auth failures")
    assert "Traceback" not in log, log[log.find("Traceback") - 300:][:3000]
    assert metrics["streamer_rtsp_internal_errors_total"] == 0
    assert count >= 0.95 * expected, f"the viewer decoded {count} of {expected:.0f} frames during the fuzz"
