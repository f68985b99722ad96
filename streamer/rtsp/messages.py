"""RTSP/1.0 message parsing and formatting (RFC 2326), defensive against malformed input."""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass, field

MAX_LINE = 4096  # request line or one header line
MAX_HEADERS = 64
MAX_HEAD = 16384  # request line and headers together (live555: 20000, MediaMTX: 255 headers of 2 kB)
MAX_BODY = 16384
METHOD_PATTERN = re.compile(r"^[A-Z][A-Z_]{0,31}$")
CSEQ_PATTERN = re.compile(r"[0-9]{1,9}")
CONTENT_LENGTH_PATTERN = re.compile(r"[0-9]{1,9}")
PAIR_PATTERN = re.compile(r"([0-9]{1,5})(?:-([0-9]{1,5}))?")

REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    413: "Request Entity Too Large",
    414: "Request-URI Too Long",
    453: "Not Enough Bandwidth",
    454: "Session Not Found",
    455: "Method Not Valid in This State",
    459: "Aggregate Operation Not Allowed",
    461: "Unsupported Transport",
    500: "Internal Server Error",
    501: "Not Implemented",
    503: "Service Unavailable",
    505: "RTSP Version Not Supported",
}


class BadRequest(Exception):
    """A request that cannot be parsed; ``status`` is the reply, ``fatal`` closes the connection."""

    def __init__(self, status: int, message: str, fatal: bool = True) -> None:
        super().__init__(message)
        self.status = status
        self.fatal = fatal


@dataclass
class Request:
    method: str
    url: str
    version: str
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""

    def header(self, name: str, default: str = "") -> str:
        return self.headers.get(name.lower(), default)

    @property
    def cseq(self) -> str:
        """The CSeq when it is a number (RFC 2326: 1*DIGIT), else "" (never echoed unchecked)."""
        value = self.header("cseq")
        return value if CSEQ_PATTERN.fullmatch(value) else ""


@dataclass
class InterleavedFrame:
    """A ``$``-framed binary packet a client sent on the RTSP connection (RTCP receiver reports)."""

    channel: int
    payload: bytes


@dataclass(frozen=True)
class BlankLine:
    """An empty line between requests: nothing to answer."""


BLANK_LINE = BlankLine()


async def _read_line(reader: asyncio.StreamReader) -> bytes:
    try:
        line = await reader.readuntil(b"\n")
    except asyncio.LimitOverrunError:
        raise BadRequest(400, "line too long") from None
    if len(line) > MAX_LINE:
        raise BadRequest(400, "line too long")
    return line


def _printable(text: str) -> bool:
    return text.isprintable() and " " not in text


async def read_message(
    reader: asyncio.StreamReader, first: bytes | None = None
) -> Request | InterleavedFrame | BlankLine | None:
    """The next request or interleaved frame; None at end of stream. ``first``: its first byte, when the
    caller already read it (to tell an idle connection from a slow request)."""
    if first is None:
        try:
            first = await reader.readexactly(1)
        except asyncio.IncompleteReadError:
            return None
    if first == b"$":
        header = await reader.readexactly(3)
        length = int.from_bytes(header[1:3], "big")
        return InterleavedFrame(header[0], await reader.readexactly(length))
    line = first + await _read_line(reader)
    if line in (b"\r\n", b"\n"):  # tolerated between requests (some clients ping with CRLF)
        return BLANK_LINE
    head_size = len(line)
    try:
        text = line.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise BadRequest(400, "request line is not UTF-8") from None
    parts = text.split(" ")
    if len(parts) != 3 or not METHOD_PATTERN.match(parts[0]) or not _printable(parts[1]):
        raise BadRequest(400, f"malformed request line {text[:80]!r}")
    method, url, version = parts
    if version != "RTSP/1.0":
        raise BadRequest(505, f"unsupported version {version[:20]!r}")
    request = Request(method, url, version)
    for _ in range(MAX_HEADERS + 1):
        raw = await _read_line(reader)
        head_size += len(raw)
        if head_size > MAX_HEAD:
            raise BadRequest(400, "request head too large")
        if raw in (b"\r\n", b"\n"):
            break
        try:
            name, value = raw.decode("utf-8").split(":", 1)
        except (UnicodeDecodeError, ValueError):
            raise BadRequest(400, "malformed header") from None
        request.headers[name.strip().lower()] = value.strip()
    else:
        raise BadRequest(400, "too many headers")
    length_text = request.header("content-length", "0")
    if not CONTENT_LENGTH_PATTERN.fullmatch(length_text):
        raise BadRequest(400, "bad Content-Length")
    length = int(length_text)
    if length > MAX_BODY:
        raise BadRequest(413, "body too large")
    if length:
        request.body = await reader.readexactly(length)
    return request


def format_response(status: int, cseq: str, headers: dict[str, str] | None = None, body: bytes = b"") -> bytes:
    lines = [f"RTSP/1.0 {status} {REASONS.get(status, 'Error')}"]
    if cseq:
        lines.append(f"CSeq: {cseq}")
    lines.append("Server: streamer")
    for name, value in (headers or {}).items():
        lines.append(f"{name}: {value}")
    if body:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def parse_transport(header: str) -> dict[str, str]:
    """The first transport spec of a Transport header, as a parameter mapping (keys lowercase)."""
    spec = header.split(",", 1)[0].strip()
    parts = [part.strip() for part in spec.split(";") if part.strip()]
    if not parts:
        raise BadRequest(461, "empty Transport", fatal=False)
    result = {"protocol": parts[0].upper()}
    for part in parts[1:]:
        key, _, value = part.partition("=")
        result[key.lower()] = value
    return result


def _parse_pair(text: str, minimum: int, maximum: int, what: str) -> tuple[int, int]:
    match = PAIR_PATTERN.fullmatch(text.strip())
    if match is None:
        raise BadRequest(461, f"bad {what}", fatal=False)
    low = int(match.group(1))
    high = int(match.group(2)) if match.group(2) else low + 1
    if not (minimum <= low <= maximum and minimum <= high <= maximum):
        raise BadRequest(461, f"{what} out of range", fatal=False)
    return low, high


def parse_port_pair(text: str) -> tuple[int, int]:
    """The ``client_port=a-b`` UDP ports of a transport."""
    return _parse_pair(text, 1, 65535, "port range")


def parse_channel_pair(text: str) -> tuple[int, int]:
    """The ``interleaved=a-b`` channels of a TCP transport (0-255)."""
    return _parse_pair(text, 0, 255, "interleaved channels")
