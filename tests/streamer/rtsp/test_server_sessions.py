"""Session slots: SETUPs that never PLAY cannot lock viewers out, and do not outlive their purpose."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager

from tests.streamer.rtsp.client import RtspClient
from tests.streamer.rtsp.conftest import RunningServer, ffmpeg_frames


@contextmanager
def udp_ports(count: int) -> Iterator[list[tuple[int, int]]]:
    with ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_DGRAM)) for _ in range(2 * count)]
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        ports = [sock.getsockname()[1] for sock in sockets]
        yield [(ports[2 * index], ports[2 * index + 1]) for index in range(count)]


def test_65_setups_without_play_do_not_lock_out_a_viewer(rtsp_server: RunningServer) -> None:
    """Defaults (max_viewers=64): one connection tries 65 SETUPs, 20 more hold 4 each; a real viewer plays."""
    with ExitStack() as stack:
        hog = stack.enter_context(RtspClient(rtsp_server.port))
        statuses = [hog.setup_tcp().status for _ in range(65)]
        assert statuses.count(200) == 4 and set(statuses[4:]) == {453}, "max_sessions_per_connection=4"
        for _ in range(20):
            other = stack.enter_context(RtspClient(rtsp_server.port))
            assert {other.setup_tcp().status for _ in range(4)} == {200}, "not-yet-playing sessions make room"
        pending = rtsp_server.call(lambda: rtsp_server.server.session_limits.pending)
        assert pending <= 32, "max_pending_sessions=32"
        frames, errors = ffmpeg_frames(rtsp_server.url(), "tcp", seconds=1)
        assert frames == 25, errors
    counters = rtsp_server.server.counters
    assert counters.sessions_refused == 61 and counters.sessions_evicted >= 48 and counters.internal_errors == 0


def test_udp_setups_without_play_end_with_their_connection(rtsp_server: RunningServer) -> None:
    with udp_ports(4) as ports, RtspClient(rtsp_server.port) as client:
        ids = [client.setup_udp(pair).session for pair in ports]
        assert all(ids) and all(session in rtsp_server.server.sessions for session in ids)
    rtsp_server.wait_until(lambda server: not server.sessions, 1.0, "sessions ended with their connection")


def test_playing_udp_session_outlives_its_connection(rtsp_server: RunningServer) -> None:
    with udp_ports(1) as ports:
        with RtspClient(rtsp_server.port) as client:
            session = client.setup_udp(ports[0]).session
            assert client.request("PLAY", client.url(), {"Session": session}).status == 200
        assert session in rtsp_server.server.sessions, "until TEARDOWN or session_timeout_s"
        with RtspClient(rtsp_server.port) as other:  # a new control connection adopts it and ends it
            assert other.request("TEARDOWN", other.url(), {"Session": session}).status == 200
        assert session not in rtsp_server.server.sessions


def test_a_session_never_played_expires_after_setup_timeout(serve: Callable[..., RunningServer]) -> None:
    running = serve(setup_timeout_s=1)
    with RtspClient(running.port) as client:
        session = client.setup_tcp().session
        running.wait_until(lambda server: session not in server.sessions, 2.5, "the unplayed session expired")
        assert client.request("PLAY", client.url(), {"Session": session}).status == 454
        played = client.setup_tcp().session
        assert client.request("PLAY", client.url(), {"Session": played}).status == 200
        running.wait_until(lambda server: server.counters.sessions_expired == 1, 1.0, "counted")
        assert played in running.server.sessions, "a playing session does not expire while its connection lives"


def test_only_playing_sessions_count_against_max_viewers(serve: Callable[..., RunningServer]) -> None:
    running = serve(max_viewers=1)
    with RtspClient(running.port) as idle, RtspClient(running.port) as viewer:
        waiting = idle.setup_tcp().session
        playing = viewer.setup_tcp().session
        assert playing, "a set-up-only session must not take the only viewer slot"
        assert viewer.request("PLAY", viewer.url(), {"Session": playing}).status == 200
        assert idle.request("PLAY", idle.url(), {"Session": waiting}).status == 453
        assert idle.setup_tcp().status == 453
    assert running.server.counters.sessions_refused == 2


def test_per_address_cap_ends_that_address_oldest_pending_session(serve: Callable[..., RunningServer]) -> None:
    running = serve(max_sessions_per_address=3)
    with ExitStack() as stack:
        clients = [stack.enter_context(RtspClient(running.port, "127.0.0.2")) for _ in range(4)]
        neighbour = stack.enter_context(RtspClient(running.port, "127.0.0.3"))
        kept = neighbour.setup_tcp().session
        sessions = [client.setup_tcp().session for client in clients]
        assert all(sessions), "the 4th SETUP makes room by ending the oldest pending one"
        assert clients[0].request("PLAY", clients[0].url(), {"Session": sessions[0]}).status == 454
        assert kept in running.server.sessions, "other addresses are not touched"
        for client, session in zip(clients[1:], sessions[1:], strict=True):
            assert client.request("PLAY", client.url(), {"Session": session}).status == 200
        assert clients[0].setup_tcp().status == 453, "all of the address's sessions play: nothing to end"
    counters = running.server.counters
    assert counters.sessions_evicted == 1 and counters.sessions_refused == 1


def test_pending_cap_in_total_ends_the_oldest_pending_session(serve: Callable[..., RunningServer]) -> None:
    running = serve(max_pending_sessions=2)
    with ExitStack() as stack:
        clients = [stack.enter_context(RtspClient(running.port, f"127.0.0.{4 + index}")) for index in range(3)]
        sessions = [client.setup_tcp().session for client in clients]
        assert all(sessions)
        assert sessions[0] not in running.server.sessions and sessions[2] in running.server.sessions
    assert running.server.counters.sessions_evicted == 1
