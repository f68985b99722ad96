"""Basic and Digest auth: real clients play, captured headers do not replay, guessing is braked."""

from __future__ import annotations

import base64
import time
from collections.abc import Callable

import pytest

from tests.streamer.rtsp.client import RtspClient, digest_authorization, parse_challenge
from tests.streamer.rtsp.conftest import RunningServer, ffmpeg_frames, gst_frames, viewer_auth


def authorize(client: RtspClient, method: str, url: str, password: str = "s3cret", headers: dict | None = None):
    """Send ``method``; on a Digest challenge answer it once. Returns (challenge response, final response)."""
    first = client.request(method, url, headers)
    if first.status != 401:
        return first, first
    challenge = first.header("www-authenticate")
    if challenge.startswith("Basic"):
        token = base64.b64encode(f"viewer:{password}".encode()).decode()
        authorization = f"Basic {token}"
    else:
        authorization = digest_authorization(challenge, method, url, "viewer", password)
    return first, client.request(method, url, {**(headers or {}), "Authorization": authorization})


def test_auth_refuses_without_credentials(rtsp_server_with_auth: RunningServer) -> None:
    with RtspClient(rtsp_server_with_auth.port) as client:
        response = client.request("DESCRIBE", client.url())
    assert response.status == 401 and response.header("www-authenticate")


@pytest.mark.parametrize("viewer", ["ffmpeg", "gst"])
def test_real_clients_play_with_credentials_and_not_without(rtsp_server_with_auth: RunningServer, viewer: str) -> None:
    if viewer == "ffmpeg":
        good, errors = ffmpeg_frames(rtsp_server_with_auth.url(credentials="viewer:s3cret@"), "tcp", seconds=1)
        bad, _ = ffmpeg_frames(rtsp_server_with_auth.url(credentials="viewer:wrong@"), "tcp", seconds=1)
    else:
        good, errors = gst_frames(rtsp_server_with_auth.url(), "tcp", 25, user="viewer", password="s3cret")
        bad, _ = gst_frames(rtsp_server_with_auth.url(), "tcp", 25, user="viewer", password="wrong")
    assert good >= 24, errors
    assert bad == 0
    assert rtsp_server_with_auth.server.counters.internal_errors == 0


def test_captured_digest_header_does_not_replay_on_a_new_connection(serve: Callable[..., RunningServer]) -> None:
    running = serve(auth=viewer_auth("digest"))
    with RtspClient(running.port) as victim:
        url = victim.url()
        challenge, described = authorize(victim, "DESCRIBE", url)
        assert described.status == 200
        captured = digest_authorization(challenge.header("www-authenticate"), "DESCRIBE", url, "viewer", "s3cret")
        with RtspClient(running.port) as attacker:
            replayed = attacker.request("DESCRIBE", url, {"Authorization": captured})
            assert replayed.status == 401, "a Digest answer made for another connection must not be accepted"
            fresh = parse_challenge(replayed.header("www-authenticate"))
            assert fresh.get("stale") == "true" and fresh["nonce"] != parse_challenge(
                challenge.header("www-authenticate"))["nonce"]
            setup = attacker.request("SETUP", f"{url}/trackID=0", {"Authorization": captured,
                                     "Transport": "RTP/AVP/TCP;unicast;interleaved=0-1"})
            assert setup.status == 401
        again = victim.request("DESCRIBE", url, {"Authorization": captured})
        assert again.status == 200, "the nonce stays valid on its own connection"


def test_digest_uri_must_name_the_requested_resource(serve: Callable[..., RunningServer]) -> None:
    running = serve(auth=viewer_auth("digest"))
    with RtspClient(running.port) as client:
        url = client.url()
        challenge = client.request("DESCRIBE", url).header("www-authenticate")
        for_track = digest_authorization(challenge, "DESCRIBE", f"{url}/trackID=0", "viewer", "s3cret")
        assert client.request("DESCRIBE", url, {"Authorization": for_track}).status == 401
        for_url = digest_authorization(challenge, "DESCRIBE", url, "viewer", "s3cret")
        assert client.request("DESCRIBE", url, {"Authorization": for_url}).status == 200
    assert running.server.counters.auth_failures == 1


def test_expired_nonce_is_stale_and_the_client_retries_without_a_password_prompt(
    serve: Callable[..., RunningServer],
) -> None:
    running = serve(auth=viewer_auth("digest", nonce_lifetime_s=1))
    with RtspClient(running.port) as client:
        url = client.url()
        challenge, described = authorize(client, "DESCRIBE", url)
        assert described.status == 200
        old = digest_authorization(challenge.header("www-authenticate"), "DESCRIBE", url, "viewer", "s3cret")
        time.sleep(1.2)  # the nonce's lifetime passes
        stale = client.request("DESCRIBE", url, {"Authorization": old})
        assert stale.status == 401 and parse_challenge(stale.header("www-authenticate")).get("stale") == "true"
        renewed = digest_authorization(stale.header("www-authenticate"), "DESCRIBE", url, "viewer", "s3cret")
        assert client.request("DESCRIBE", url, {"Authorization": renewed}).status == 200
    assert running.server.counters.auth_failures == 0, "a stale nonce is not a wrong password"


@pytest.mark.parametrize("transport", ["tcp", "udp"])
def test_ffmpeg_keeps_playing_across_nonce_expiry(serve: Callable[..., RunningServer], transport: str) -> None:
    # session_timeout_s=5: ffmpeg sends a keepalive every 2.5 s, each on an expired nonce
    running = serve(auth=viewer_auth("digest", nonce_lifetime_s=1), session_timeout_s=5)
    frames, errors = ffmpeg_frames(running.url(credentials="viewer:s3cret@"), transport, seconds=4)
    assert frames == 100, errors
    counters = running.server.counters
    # OPTIONS, DESCRIBE (401), DESCRIBE, SETUP, PLAY, GET_PARAMETER (401 stale), GET_PARAMETER, TEARDOWN
    assert counters.requests >= 8, "the keepalive should have met an expired nonce and been retried"
    assert counters.auth_failures == 0
    running.wait_until(lambda server: not server.sessions, 2.0, "TEARDOWN on an expired nonce ended the session")


def _guess(port: int, method: str, source: str, password: str) -> int:
    """One login attempt on a new connection; the final status."""
    with RtspClient(port, source) as client:
        return authorize(client, "DESCRIBE", client.url(), password)[1].status


@pytest.mark.parametrize("method", ["basic", "digest"])
def test_password_guessing_is_braked_per_address(serve: Callable[..., RunningServer], method: str) -> None:
    running = serve(auth=viewer_auth(method, max_failures=5, lockout_s=3))
    started = time.monotonic()
    statuses = []
    with RtspClient(running.port) as client:  # one connection, as fast as the server answers
        url = client.url()
        challenge = client.request("DESCRIBE", url).header("www-authenticate")
        while time.monotonic() - started < 1.5:
            if method == "basic":
                authorization = "Basic " + base64.b64encode(f"viewer:guess{len(statuses)}".encode()).decode()
            else:
                authorization = digest_authorization(challenge, "DESCRIBE", url, "viewer", f"guess{len(statuses)}")
            response = client.request("DESCRIBE", url, {"Authorization": authorization})
            statuses.append(response.status)
            challenge = response.header("www-authenticate") or challenge
    elapsed = time.monotonic() - started
    counters = running.server.counters
    print(f"{len(statuses)} attempts in {elapsed:.1f} s, {counters.auth_failures} checked "
          f"({counters.auth_failures / elapsed:.1f} password checks/s)")
    assert statuses[:5] == [401] * 5 and set(statuses[5:]) == {403}, statuses[:10]
    assert counters.auth_failures == 5 and counters.auth_lockouts == 1
    # while locked, even the right password is not checked from that address; another address logs in
    assert _guess(running.port, method, "127.0.0.1", "s3cret") == 403
    assert _guess(running.port, method, "127.0.0.2", "s3cret") == 200
    deadline = started + 3 + 2
    while _guess(running.port, method, "127.0.0.1", "s3cret") != 200:
        assert time.monotonic() < deadline, "the lockout should end after lockout_s"
        time.sleep(0.2)
    assert counters.internal_errors == 0


def test_an_authenticated_connection_is_not_locked_out_by_its_neighbours(serve: Callable[..., RunningServer]) -> None:
    """A viewer already logged in from an address keeps working while a guesser locks that address out."""
    running = serve(auth=viewer_auth("digest", max_failures=3, lockout_s=30))
    with RtspClient(running.port) as viewer:
        url = viewer.url()
        challenge, described = authorize(viewer, "DESCRIBE", url)
        assert described.status == 200
        for attempt in range(4):
            _guess(running.port, "digest", "127.0.0.1", f"wrong{attempt}")
        assert running.server.counters.auth_lockouts == 1
        header = digest_authorization(challenge.header("www-authenticate"), "GET_PARAMETER", url, "viewer", "s3cret")
        assert viewer.request("GET_PARAMETER", url, {"Authorization": header}).status == 200
