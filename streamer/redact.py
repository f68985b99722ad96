"""Hide credentials before they reach logs, /api responses or printed configuration.

URLs: the user information ends at the LAST '@' of the authority (as FFmpeg reads it), so a password may
hold '@', ':' and '%' (raw or percent-encoded) and is still hidden whole. RFC 3986 (and FFmpeg) end the
authority at the first '/', '?' or '#', so a password holding one of those must be written percent-encoded
(%2F, %3F, %23) to be usable at all; when one is written raw anyway, the redaction assumes the worst and
hides everything up to the URL's last '@'. Query or path parameters that name a secret
(``password=``, ``pwd=``, ``token=``…, as some cameras take them) are hidden too.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

MASK = "***"

# keys of configuration mappings whose values are secrets whatever they look like
SECRET_KEYS = frozenset({"password", "token", "secret"})

_AUTHORITY_END = re.compile(r"[/?#]")
_SECRET_PARAM = re.compile(
    r"(?i)(?<=[?&;/])((?:password|passwd|pass|pwd|token|secret|api_?key|access_token)=)[^&;#/]*"
)
_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://[^\s\"'<>]+")
_AUTH_VALUE = re.compile(r"(?i)\b(bearer|basic)(\s+)[^\s,]+")


def split_authority(url: str) -> tuple[str, str, str, str] | None:
    """``scheme://userinfo@hostport/rest`` as (scheme, userinfo, hostport, rest), the user information ending
    at the last '@' before the first '/', '?' or '#' (as FFmpeg reads it); None without ``://``."""
    scheme, separator, rest = url.partition("://")
    if not separator:
        return None
    match = _AUTHORITY_END.search(rest)
    end = match.start() if match else len(rest)
    at = rest.rfind("@", 0, end)
    return scheme, rest[:max(at, 0)], rest[at + 1:end], rest[end:]


def redact_url(url: str) -> str:
    """``url`` with its password (and secret-named parameters) replaced by ``***``; the user name stays."""
    scheme, separator, rest = url.partition("://")
    if not separator:
        return _hide_params(url)
    match = _AUTHORITY_END.search(rest)
    end = match.start() if match else len(rest)
    at = rest.rfind("@", 0, end)
    if at < 0 and ":" in rest[:end] and "@" in rest[end:]:
        # a password holding a raw '/', '?' or '#': FFmpeg cannot use it, but it must not leak either
        at = rest.rfind("@")
    shown = ""
    if at >= 0:
        user, colon, _ = rest[:at].partition(":")
        shown = f"{user}:{MASK}@" if colon else f"{MASK}@"
    return f"{scheme}://{shown}{_hide_params(rest[at + 1:])}"


def _hide_params(text: str) -> str:
    return _SECRET_PARAM.sub(rf"\1{MASK}", text)


def redact_text(text: str) -> str:
    """Free text (an error message, a log line) with every URL redacted and HTTP credentials masked."""
    text = _URL_IN_TEXT.sub(lambda match: redact_url(match.group(0)), text)
    return _AUTH_VALUE.sub(rf"\1\2{MASK}", text)


def redact_config(data: Any) -> Any:
    """A JSON-like configuration dump with every secret replaced by ``***``: values of keys named
    password/token/secret, and passwords inside URLs. Everything else is kept, so the result stays a
    complete, readable configuration."""
    if isinstance(data, Mapping):
        return {
            key: (MASK if key in SECRET_KEYS and value is not None else redact_config(value))
            for key, value in data.items()
        }
    if isinstance(data, list):
        return [redact_config(item) for item in data]
    if isinstance(data, str) and "://" in data:
        return redact_url(data)
    return data
