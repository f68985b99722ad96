"""Basic and Digest (MD5, RFC 2617 as RTSP clients use it) authentication, and a brake on guessing.

Digest nonces are stateless and bounded: ``<issued ms>.<salt>.<mac>``, where the MAC (HMAC-SHA256 under a
per-process secret) binds the nonce to the connection it was issued on. A nonce is accepted only on that
connection and only for ``nonce_lifetime_s``: a captured Authorization header does not replay on another
connection, and a right answer to an old or foreign nonce gets a fresh challenge with ``stale=true`` (clients
retry without asking for the password again). ``uri=`` must name the resource of the request.
"""

from __future__ import annotations

import base64
import enum
import hashlib
import hmac
import re
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from streamer.config import RtspAuthConfig

_PARAM = re.compile(r'(\w+)\s*=\s*(?:"([^"]*)"|([^,\s]*))')
_HEX = re.compile(r"[0-9a-f]{1,16}")
MAX_TRACKED_ADDRESSES = 4096


class AuthResult(enum.Enum):
    OK = "ok"
    MISSING = "missing"  # no credentials of the configured scheme: challenge, nothing to count
    FAILED = "failed"  # wrong user, password, realm or uri: counted by the brake
    STALE = "stale"  # the right answer to a nonce this connection was given, now expired
    FOREIGN = "foreign"  # the right answer to a nonce not given to this connection (a replay, or a reconnect)


def _md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()


def _equal(expected: str, given: str) -> bool:
    """Constant-time comparison that accepts any text (hmac.compare_digest refuses non-ASCII str)."""
    return hmac.compare_digest(expected.encode(), given.encode("utf-8", "surrogatepass"))


def _same_resource(uri: str, url: str) -> bool:
    if uri == url:
        return True
    try:
        given, requested = urlsplit(uri), urlsplit(url)
    except ValueError:
        return False
    return (given.path.rstrip("/"), given.query) == (requested.path.rstrip("/"), requested.query)


class Authenticator:
    def __init__(self, config: RtspAuthConfig, clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self.users = {user.username: user.password for user in config.users}
        self._clock = clock
        self._secret = secrets.token_bytes(32)

    def challenge(self, binding: bytes, stale: bool = False) -> str:
        """A WWW-Authenticate value; for Digest a fresh nonce bound to ``binding`` (the connection's key)."""
        if self.config.method == "basic":
            return f'Basic realm="{self.config.realm}"'
        suffix = ", stale=true" if stale else ""
        return f'Digest realm="{self.config.realm}", nonce="{self._nonce(binding)}", algorithm="MD5"{suffix}'

    def check(self, method: str, url: str, header: str, binding: bytes) -> AuthResult:
        scheme, _, rest = header.strip().partition(" ")
        scheme = scheme.lower()
        if scheme == "basic" and self.config.method == "basic":
            return self._check_basic(rest.strip())
        if scheme == "digest" and self.config.method == "digest":
            return self._check_digest(method, url, rest, binding)
        return AuthResult.MISSING

    # -- nonces ----------------------------------------------------------------------------------------
    def _mac(self, body: str, binding: bytes) -> str:
        return hmac.new(self._secret, body.encode() + b"|" + binding, hashlib.sha256).hexdigest()[:32]

    def _nonce(self, binding: bytes) -> str:
        body = f"{int(self._clock() * 1000):x}.{secrets.token_hex(4)}"
        return f"{body}.{self._mac(body, binding)}"

    def _nonce_state(self, nonce: str, binding: bytes) -> AuthResult:
        body, _, mac = nonce.rpartition(".")
        issued = body.partition(".")[0]
        if not _HEX.fullmatch(issued) or not _equal(self._mac(body, binding), mac):
            return AuthResult.FOREIGN
        age_ms = int(self._clock() * 1000) - int(issued, 16)
        return AuthResult.OK if 0 <= age_ms <= self.config.nonce_lifetime_s * 1000 else AuthResult.STALE

    # -- schemes ---------------------------------------------------------------------------------------
    def _check_basic(self, token: str) -> AuthResult:
        try:
            username, _, password = base64.b64decode(token, validate=True).decode().partition(":")
        except ValueError:  # binascii.Error, UnicodeDecodeError, or a non-ASCII token
            return AuthResult.FAILED
        expected = self.users.get(username)
        if expected is None or not _equal(expected, password):
            return AuthResult.FAILED
        return AuthResult.OK

    def _check_digest(self, method: str, url: str, text: str, binding: bytes) -> AuthResult:
        params = {match.group(1).lower(): match.group(2) or match.group(3) or "" for match in _PARAM.finditer(text)}
        username = params.get("username", "")
        password = self.users.get(username)
        if password is None or params.get("realm") != self.config.realm:
            return AuthResult.FAILED
        nonce, uri = params.get("nonce", ""), params.get("uri", "")
        ha1 = _md5(f"{username}:{self.config.realm}:{password}")
        ha2 = _md5(f"{method}:{uri}")
        if "qop" in params:
            expected = _md5(f"{ha1}:{nonce}:{params.get('nc', '')}:{params.get('cnonce', '')}:{params['qop']}:{ha2}")
        else:
            expected = _md5(f"{ha1}:{nonce}:{ha2}")
        if not _equal(expected, params.get("response", "")) or not _same_resource(uri, url):
            return AuthResult.FAILED
        return self._nonce_state(nonce, binding)


@dataclass
class _Record:
    failures: int
    window_start: float
    locked_until: float = 0.0


class GuessBrake:
    """Per address: after ``max_failures`` wrong passwords within ``lockout_s``, refuse that address for
    ``lockout_s`` without checking anything. Remembers at most ``MAX_TRACKED_ADDRESSES`` addresses (the
    least recently failing are forgotten first)."""

    def __init__(self, max_failures: int, lockout_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_failures = max_failures
        self.lockout_s = lockout_s
        self._clock = clock
        self._records: OrderedDict[str, _Record] = OrderedDict()

    def __len__(self) -> int:
        return len(self._records)

    def locked(self, address: str) -> bool:
        record = self._records.get(address)
        return record is not None and record.locked_until > self._clock()

    def fail(self, address: str) -> bool:
        """Count a failure; True when it locks the address out."""
        now = self._clock()
        record = self._records.pop(address, None)
        if record is None or now - record.window_start > self.lockout_s:
            record = _Record(0, now, record.locked_until if record else 0.0)
        record.failures += 1
        self._records[address] = record  # most recent last
        while len(self._records) > MAX_TRACKED_ADDRESSES:
            self._records.popitem(last=False)
        if record.failures >= self.max_failures:
            record.failures, record.window_start, record.locked_until = 0, now, now + self.lockout_s
            return True
        return False
