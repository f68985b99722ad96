"""A hand-written RTSP client on a raw socket, for the abusive clients real players never are."""

from __future__ import annotations

import hashlib
import re
import socket
from dataclasses import dataclass, field

_PARAM = re.compile(r'(\w+)="?([^",]*)"?')


@dataclass
class Response:
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""

    def header(self, name: str) -> str:
        return self.headers.get(name.lower(), "")

    @property
    def session(self) -> str:
        return self.header("session").split(";", 1)[0].strip()


class RtspClient:
    """One control connection; ``source`` picks the client address (any 127.x.y.z on Linux loopback)."""

    def __init__(self, port: int, source: str = "127.0.0.1", timeout: float = 5.0) -> None:
        self.port = port
        self.sock = socket.socket()
        self.sock.settimeout(timeout)
        self.sock.bind((source, 0))
        self.sock.connect(("127.0.0.1", port))
        self.buffer = b""
        self.cseq = 0

    def url(self, path: str = "live") -> str:
        return f"rtsp://127.0.0.1:{self.port}/{path}"

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def request(self, method: str, url: str, headers: dict[str, str] | None = None) -> Response:
        self.cseq += 1
        lines = [f"{method} {url} RTSP/1.0", f"CSeq: {self.cseq}"]
        lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
        self.send(("\r\n".join(lines) + "\r\n\r\n").encode())
        return self.read_response()

    def read_response(self) -> Response:
        """The next response, skipping interleaved RTP/RTCP frames; status -1 when the server closed."""
        while True:
            if self.buffer.startswith(b"$"):
                end = 4 + int.from_bytes(self.buffer[2:4], "big") if len(self.buffer) >= 4 else 1 << 20
                if len(self.buffer) >= end:
                    self.buffer = self.buffer[end:]
                    continue
            elif b"\r\n\r\n" in self.buffer:
                head, _, rest = self.buffer.partition(b"\r\n\r\n")
                lines = head.decode(errors="replace").split("\r\n")
                headers = {}
                for line in lines[1:]:
                    name, _, value = line.partition(":")
                    headers[name.strip().lower()] = value.strip()
                length = int(headers.get("content-length", "0"))
                if len(rest) >= length:
                    self.buffer = rest[length:]
                    return Response(int(lines[0].split(" ")[1]), headers, rest[:length])
            if not self._fill():
                return Response(-1)

    def _fill(self) -> bool:
        try:
            chunk = self.sock.recv(65536)
        except (ConnectionResetError, TimeoutError):
            return False
        self.buffer += chunk
        return bool(chunk)

    def closed_by_server(self, timeout: float) -> bool:
        """True when the server closes the connection within ``timeout`` (data read meanwhile is dropped)."""
        self.sock.settimeout(timeout)
        try:
            while self.sock.recv(65536):
                pass
        except TimeoutError:
            return False
        except ConnectionResetError:
            pass
        return True

    def setup_tcp(self, path: str = "live") -> Response:
        return self.request("SETUP", f"{self.url(path)}/trackID=0",
                            {"Transport": "RTP/AVP/TCP;unicast;interleaved=0-1"})

    def setup_udp(self, ports: tuple[int, int], path: str = "live") -> Response:
        return self.request("SETUP", f"{self.url(path)}/trackID=0",
                            {"Transport": f"RTP/AVP;unicast;client_port={ports[0]}-{ports[1]}"})

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> RtspClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def parse_challenge(header: str) -> dict[str, str]:
    scheme, _, rest = header.partition(" ")
    params = {key.lower(): value for key, value in _PARAM.findall(rest)}
    params["scheme"] = scheme
    return params


def digest_authorization(challenge: str, method: str, uri: str, username: str, password: str) -> str:
    """The Authorization header a client computes for ``challenge`` (RFC 2617 without qop, as ffmpeg/live555)."""
    params = parse_challenge(challenge)
    realm, nonce = params["realm"], params["nonce"]

    def md5(text: str) -> str:
        return hashlib.md5(text.encode()).hexdigest()

    response = md5(f"{md5(f'{username}:{realm}:{password}')}:{nonce}:{md5(f'{method}:{uri}')}")
    return (f'Digest username="{username}", realm="{realm}", nonce="{nonce}", uri="{uri}", '
            f'response="{response}", algorithm="MD5"')
