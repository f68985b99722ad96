"""Random and malformed RTSP input never crashes the server (hypothesis)."""

from __future__ import annotations

import socket

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.streamer.rtsp.conftest import RunningServer

METHODS = ["OPTIONS", "DESCRIBE", "SETUP", "PLAY", "PAUSE", "TEARDOWN", "GET_PARAMETER", "ANNOUNCE", "X"]
HEADERS = ["CSeq", "Session", "Transport", "Content-Length", "Authorization", "Range", "Accept"]

header_value = st.one_of(
    st.text(max_size=40).map(lambda text: text.replace("\r", "").replace("\n", "")),
    st.sampled_from(["RTP/AVP/TCP;interleaved=0-1", "RTP/AVP;unicast;client_port=9-", "RTP/AVP;client_port=a-b",
                     "RTP/AVP/TCP;interleaved=300-301", "-1", "99999999999", "Digest username=\"x\"", "Basic !!"]),
)
request = st.builds(
    lambda method, path, headers, tail: (
        f"{method} rtsp://127.0.0.1/{path} RTSP/1.0\r\n"
        + "".join(f"{name}: {value}\r\n" for name, value in headers)
        + "\r\n"
    ).encode(errors="replace") + tail,
    st.sampled_from(METHODS),
    st.sampled_from(["live", "live/trackID=0", "", "nope", "live/../..", "%00", "live?x=1"]),
    st.lists(st.tuples(st.sampled_from(HEADERS), header_value), max_size=6),
    st.binary(max_size=64),
)
payload = st.one_of(request, st.binary(max_size=512), st.binary(max_size=8).map(lambda b: b"$" + b))


def send(port: int, data: bytes) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        sock.settimeout(2)
        try:
            while sock.recv(4096):
                pass
        except (TimeoutError, ConnectionResetError):
            pass


def test_random_requests_never_crash_the_server(rtsp_server: RunningServer) -> None:
    @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(data=payload)
    def fuzz(data: bytes) -> None:
        send(rtsp_server.port, data)

    fuzz()
    with socket.create_connection(("127.0.0.1", rtsp_server.port), timeout=5) as sock:
        sock.sendall(b"OPTIONS * RTSP/1.0\r\nCSeq: 1\r\n\r\n")
        assert sock.recv(4096).startswith(b"RTSP/1.0 200 OK")
    assert rtsp_server.server.bad_requests > 0
