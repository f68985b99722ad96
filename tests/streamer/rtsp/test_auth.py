"""Authenticator and GuessBrake on their own: nonce lifetime and binding, bounded memory, any input."""

from __future__ import annotations

import base64
import random

from streamer.rtsp.auth import MAX_TRACKED_ADDRESSES, Authenticator, AuthResult, GuessBrake
from tests.streamer.rtsp.client import digest_authorization
from tests.streamer.rtsp.conftest import viewer_auth

URL = "rtsp://127.0.0.1:8554/live"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_digest_nonce_is_fresh_per_challenge_bound_to_its_connection_and_expires() -> None:
    clock = Clock()
    auth = Authenticator(viewer_auth("digest", nonce_lifetime_s=60), clock)
    first, second = auth.challenge(b"conn-a"), auth.challenge(b"conn-a")
    assert first != second, "a fresh nonce per challenge"
    answer = digest_authorization(first, "DESCRIBE", URL, "viewer", "s3cret")
    assert auth.check("DESCRIBE", URL, answer, b"conn-a") is AuthResult.OK
    assert auth.check("DESCRIBE", URL, answer, b"conn-b") is AuthResult.FOREIGN
    assert auth.check("SETUP", URL, answer, b"conn-a") is AuthResult.FAILED, "the answer covers the method"
    assert auth.check("DESCRIBE", URL + "x", answer, b"conn-a") is AuthResult.FAILED, "and the uri"
    clock.now += 61
    assert auth.check("DESCRIBE", URL, answer, b"conn-a") is AuthResult.STALE
    assert 'stale=true' in auth.challenge(b"conn-a", stale=True)
    wrong = digest_authorization(first, "DESCRIBE", URL, "viewer", "guess")
    assert auth.check("DESCRIBE", URL, wrong, b"conn-a") is AuthResult.FAILED, "stale only for the right password"


def test_another_servers_nonce_is_foreign() -> None:
    challenge = Authenticator(viewer_auth("digest")).challenge(b"k")
    answer = digest_authorization(challenge, "DESCRIBE", URL, "viewer", "s3cret")
    assert Authenticator(viewer_auth("digest")).check("DESCRIBE", URL, answer, b"k") is AuthResult.FOREIGN


def test_basic() -> None:
    auth = Authenticator(viewer_auth("basic"))
    token = base64.b64encode(b"viewer:s3cret").decode()
    assert auth.check("DESCRIBE", URL, f"Basic {token}", b"") is AuthResult.OK
    assert auth.check("DESCRIBE", URL, "Basic " + base64.b64encode("viewer:é".encode()).decode(), b"") is AuthResult.FAILED
    assert auth.check("DESCRIBE", URL, "", b"") is AuthResult.MISSING
    assert auth.check("DESCRIBE", URL, "Digest x=1", b"") is AuthResult.MISSING


def test_any_header_gets_an_answer_never_an_exception() -> None:
    rng = random.Random(7)
    pieces = ['Digest ', 'Basic ', 'username="viewer"', 'realm="streamer"', 'nonce="', 'uri="', 'response="', 'qop=auth',
              'nc=', '"', ',', '=', ' ', 'é', '²', '\x00', '\ufeff', '0' * 32, '.', 'ff.', '=' * 3, 'dmlld2VyOnMzY3JldA==']
    for method in ("basic", "digest"):
        auth = Authenticator(viewer_auth(method))
        valid = digest_authorization(auth.challenge(b"k"), "PLAY", URL, "viewer", "s3cret") if method == "digest" else ""
        for _ in range(3000):
            header = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 12)))
            if valid and rng.random() < 0.3:  # a valid header with one place changed
                at = rng.randrange(len(valid))
                header = valid[:at] + rng.choice(pieces) + valid[at + 1:]
            assert isinstance(auth.check("PLAY", URL, header, b"k"), AuthResult)


def test_guess_brake_locks_an_address_out_and_forgets_addresses_beyond_its_bound() -> None:
    clock = Clock()
    brake = GuessBrake(max_failures=3, lockout_s=30, clock=clock)
    assert [brake.fail("10.0.0.1") for _ in range(3)] == [False, False, True]
    assert brake.locked("10.0.0.1") and not brake.locked("10.0.0.2")
    clock.now += 31
    assert not brake.locked("10.0.0.1")
    brake.fail("10.0.0.3")
    clock.now += 31  # failures older than lockout_s are forgotten
    assert [brake.fail("10.0.0.3") for _ in range(3)] == [False, False, True]
    for index in range(MAX_TRACKED_ADDRESSES + 1000):
        brake.fail(f"fd00::{index:x}")
    assert len(brake) == MAX_TRACKED_ADDRESSES
