"""The RTSP server against real clients (ffprobe/ffmpeg/gst) and hand-written requests."""

from __future__ import annotations

import socket
import subprocess

import pytest

from tests.streamer.rtsp.conftest import RunningServer, ffmpeg_frames, gst_frames


def exchange(port: int, payload: bytes, timeout: float = 5.0) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(payload)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
        return data


def status(response: bytes) -> int:
    return int(response.split(b" ", 2)[1]) if response.startswith(b"RTSP/1.0 ") else -1


@pytest.mark.parametrize("transport", ["tcp", "udp"])
def test_ffmpeg_plays_over_tcp_and_udp(rtsp_server: RunningServer, transport: str) -> None:
    frames, errors = ffmpeg_frames(rtsp_server.url(), transport)
    assert frames == 50, errors


def test_ffprobe_reads_the_sdp(rtsp_server: RunningServer) -> None:
    result = subprocess.run(
        ["ffprobe", "-v", "error", "-rtsp_transport", "tcp", "-show_entries", "stream=codec_name,width,height",
         "-of", "csv=p=0", rtsp_server.url()],
        capture_output=True, timeout=30, text=True,
    )
    assert result.stdout.strip() == "h264,160,96", result.stderr


def test_describe_gives_sdp_with_parameter_sets(rtsp_server: RunningServer) -> None:
    with socket.create_connection(("127.0.0.1", rtsp_server.port), timeout=5) as sock:
        sock.sendall(f"DESCRIBE {rtsp_server.url()} RTSP/1.0\r\nCSeq: 7\r\n\r\n".encode())
        data = b""
        while b"m=video" not in data or not data.endswith(b"\r\n"):
            data += sock.recv(4096)
    head, _, body = data.partition(b"\r\n\r\n")
    assert status(head) == 200 and b"CSeq: 7" in head
    assert f"Content-Base: {rtsp_server.url()}/".encode() in head
    assert b"sprop-parameter-sets=" in body and b"packetization-mode=1" in body
    assert b"a=rtpmap:96 H264/90000" in body and b"a=control:trackID=0" in body


@pytest.mark.parametrize(
    ("request_text", "expected"),
    [
        ("OPTIONS * RTSP/1.0\r\nCSeq: 1\r\n\r\n", 200),
        ("DESCRIBE rtsp://127.0.0.1/nothere RTSP/1.0\r\nCSeq: 2\r\n\r\n", 404),
        ("PLAY rtsp://127.0.0.1/live RTSP/1.0\r\nCSeq: 3\r\nSession: bogus\r\n\r\n", 454),
        ("SETUP rtsp://127.0.0.1/live/trackID=0 RTSP/1.0\r\nCSeq: 4\r\nTransport: RTP/AVP;multicast\r\n\r\n", 461),
        ("SETUP rtsp://127.0.0.1/live/trackID=0 RTSP/1.0\r\nCSeq: 4\r\nTransport: RTP/SAVP;unicast\r\n\r\n", 461),
        ("SETUP rtsp://127.0.0.1/live/trackID=9 RTSP/1.0\r\nCSeq: 5\r\nTransport: RTP/AVP/TCP\r\n\r\n", 404),
        ("RECORD rtsp://127.0.0.1/live RTSP/1.0\r\nCSeq: 6\r\n\r\n", 501),
        ("DESCRIBE rtsp://127.0.0.1/live RTSP/1.0\r\n\r\n", 400),
        ("DESCRIBE rtsp://127.0.0.1/live RTSP/2.0\r\nCSeq: 1\r\n\r\n", 505),
        ("GET / HTTP/1.1\r\nHost: x\r\n\r\n", 505),
        ("hello\r\n\r\n", 400),
        ("OPTIONS * RTSP/1.0\r\nCSeq: 1\r\nContent-Length: 99999999\r\n\r\n", 413),
        ("OPTIONS * RTSP/1.0\r\nCSeq: 1\r\nContent-Length: \u00b2\r\n\r\n", 400),  # a digit to isdigit()
        ("OPTIONS * RTSP/1.0\r\nCSeq: 1\r\nContent-Length: -1\r\n\r\n", 400),
        ("OPTIONS * RTSP/1.0\r\nCSeq: 1\rX-Injected: 1\r\n\r\n", 400),
        ("OPTIONS * RTSP/1.0\r\nCSeq: \u0661\r\n\r\n", 400),
        ("DESCRIBE rtsp://127.0.0.1/live/\x00 RTSP/1.0\r\nCSeq: 1\r\n\r\n", 400),
        ("OPTIONS * RTSP/1.0\r\nCSeq: 1\r\n" + "X: y\r\n" * 70 + "\r\n", 400),
        ("OPTIONS * RTSP/1.0\r\nCSeq: 1\r\nX: " + "y" * 5000 + "\r\n\r\n", 400),
        ("OPTIONS * RTSP/1.0\r\nCSeq: 1\r\n" + ("X: " + "y" * 3000 + "\r\n") * 6 + "\r\n", 400),
        ("SETUP rtsp://127.0.0.1/live/trackID=0 RTSP/1.0\r\nCSeq: 4\r\nTransport: RTP/AVP/TCP;interleaved=+1-2\r\n\r\n", 461),
        ("SETUP rtsp://127.0.0.1/live/trackID=0 RTSP/1.0\r\nCSeq: 4\r\nTransport: RTP/AVP;client_port=\u0661-\u0662\r\n\r\n", 461),
        ("SETUP rtsp://127.0.0.1/live/trackID=0 RTSP/1.0\r\nCSeq: 4\r\nTransport: RTP/AVP;client_port=0-1\r\n\r\n", 461),
    ],
)
def test_bad_requests_get_4xx_and_the_server_keeps_serving(
    rtsp_server: RunningServer, request_text: str, expected: int
) -> None:
    assert status(exchange(rtsp_server.port, request_text.encode())) == expected
    assert status(exchange(rtsp_server.port, b"OPTIONS * RTSP/1.0\r\nCSeq: 9\r\n\r\n")) == 200


def test_teardown_ends_the_session(rtsp_server: RunningServer) -> None:
    url = rtsp_server.url()
    with socket.create_connection(("127.0.0.1", rtsp_server.port), timeout=5) as sock:
        sock.sendall(f"SETUP {url}/trackID=0 RTSP/1.0\r\nCSeq: 1\r\nTransport: RTP/AVP/TCP;unicast;interleaved=0-1\r\n\r\n".encode())
        head = sock.recv(4096).decode()
        assert " 200 " in head.split("\r\n")[0]
        session = next(line.split(":", 1)[1].split(";")[0].strip() for line in head.split("\r\n") if line.startswith("Session"))
        assert session in rtsp_server.server.sessions
        sock.sendall(f"TEARDOWN {url} RTSP/1.0\r\nCSeq: 2\r\nSession: {session}\r\n\r\n".encode())
        assert " 200 " in sock.recv(4096).decode().split("\r\n")[0]
        assert session not in rtsp_server.server.sessions


def test_gstreamer_plays_over_udp(rtsp_server: RunningServer) -> None:
    frames, errors = gst_frames(rtsp_server.url(), "udp", frames=40)
    assert frames >= 39, errors


def test_udp_session_without_keepalive_times_out(rtsp_server: RunningServer) -> None:
    import time

    url = rtsp_server.url()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rtp, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rtcp:
        rtp.bind(("127.0.0.1", 0))
        rtcp.bind(("127.0.0.1", 0))
        ports = f"{rtp.getsockname()[1]}-{rtcp.getsockname()[1]}"
        with socket.create_connection(("127.0.0.1", rtsp_server.port), timeout=5) as sock:
            sock.sendall(f"SETUP {url}/trackID=0 RTSP/1.0\r\nCSeq: 1\r\nTransport: RTP/AVP;unicast;client_port={ports}\r\n\r\n".encode())
            head = sock.recv(4096).decode()
            assert "server_port=" in head and "timeout=5" in head
            session = next(line.split(":", 1)[1].split(";")[0].strip() for line in head.split("\r\n") if line.startswith("Session"))
            sock.sendall(f"PLAY {url} RTSP/1.0\r\nCSeq: 2\r\nSession: {session}\r\n\r\n".encode())
            assert "RTP-Info: url=" in sock.recv(4096).decode()
            rtp.settimeout(5)
            packet = rtp.recv(2048)
            assert packet[0] >> 6 == 2 and packet[1] & 0x7F == 96  # RTP version 2, payload type 96
        deadline = time.monotonic() + 10
        while session in rtsp_server.server.sessions and time.monotonic() < deadline:
            time.sleep(0.2)
        assert session not in rtsp_server.server.sessions, "a silent UDP session should expire"
