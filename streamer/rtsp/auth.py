"""Basic and Digest (MD5, RFC 2617 as used by RTSP clients) authentication."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets

from streamer.config import RtspAuthConfig

_PARAM = re.compile(r'(\w+)\s*=\s*(?:"([^"]*)"|([^,\s]*))')


def _md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()


class Authenticator:
    def __init__(self, config: RtspAuthConfig) -> None:
        self.config = config
        self.users = {user.username: user.password for user in config.users}
        self.nonce = secrets.token_hex(16)

    def challenge(self) -> str:
        if self.config.method == "basic":
            return f'Basic realm="{self.config.realm}"'
        return f'Digest realm="{self.config.realm}", nonce="{self.nonce}", algorithm="MD5"'

    def check(self, method: str, header: str) -> bool:
        scheme, _, rest = header.strip().partition(" ")
        scheme = scheme.lower()
        if scheme == "basic" and self.config.method == "basic":
            return self._check_basic(rest.strip())
        if scheme == "digest" and self.config.method == "digest":
            return self._check_digest(method, rest)
        return False

    def _check_basic(self, token: str) -> bool:
        try:
            username, _, password = base64.b64decode(token, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        expected = self.users.get(username)
        return expected is not None and hmac.compare_digest(expected, password)

    def _check_digest(self, method: str, text: str) -> bool:
        params = {match.group(1).lower(): match.group(2) or match.group(3) for match in _PARAM.finditer(text)}
        username = params.get("username", "")
        password = self.users.get(username)
        if password is None or params.get("nonce") != self.nonce or params.get("realm") != self.config.realm:
            return False
        uri = params.get("uri", "")
        ha1 = _md5(f"{username}:{self.config.realm}:{password}")
        ha2 = _md5(f"{method}:{uri}")
        if "qop" in params:
            expected = _md5(f"{ha1}:{self.nonce}:{params.get('nc', '')}:{params.get('cnonce', '')}:{params['qop']}:{ha2}")
        else:
            expected = _md5(f"{ha1}:{self.nonce}:{ha2}")
        return hmac.compare_digest(expected, params.get("response", ""))
