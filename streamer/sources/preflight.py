"""Checks a camera's source can be used at all, before its pipeline starts.

A missing file or a camera URL that cannot parse is a configuration mistake, not a camera that is down:
it is reported at start, naming the field, instead of a pipeline that retries forever. (A camera that is
merely unreachable is not an error here: it is reconnected with backoff.)
"""

from __future__ import annotations

import os
from pathlib import Path

import av

from streamer.config import DemoSourceConfig, FileSourceConfig, RtspSourceConfig, WhipSourceConfig
from streamer.redact import split_authority


class SourceError(ValueError):
    """A source that cannot work as configured; the message starts with the field's path."""


def check_source(config: RtspSourceConfig | DemoSourceConfig | FileSourceConfig | WhipSourceConfig,
                 field: str) -> None:
    """Raise ``SourceError`` naming ``field`` (e.g. ``cameras.0.source``) when the source cannot work.
    Blocking (a file is opened): call it from a worker thread."""
    if isinstance(config, RtspSourceConfig):
        reason = rtsp_url_problem(config.url)
        if reason:
            raise SourceError(f"{field}.url: {reason}")
    elif isinstance(config, FileSourceConfig):
        reason = file_problem(Path(config.path).expanduser())
        if reason:
            raise SourceError(f"{field}.path: {reason}")


def rtsp_url_problem(url: str) -> str:
    """Why ``url`` cannot be an RTSP camera address, or '' when it can (the host follows the last '@' of
    the authority: see ``streamer.redact``)."""
    parts = split_authority(url)
    if parts is None or parts[0].lower() not in ("rtsp", "rtsps"):
        return "must start with rtsp:// or rtsps://"
    _scheme, userinfo, hostport, rest = parts
    if not userinfo and "@" in rest and ":" in hostport:
        # user:pa/ss@host: the raw '/' ended the authority inside the password (never quote any of it)
        return "a '/', '?' or '#' in the user name or password must be written %2F, %3F or %23"
    if hostport.startswith("["):
        host, bracket, port_text = hostport[1:].partition("]")
        if not bracket or (port_text and not port_text.startswith(":")):
            return "malformed IPv6 address (write it as [addr]:port)"
        port_text = port_text[1:]
    else:
        host, _, port_text = hostport.partition(":")
    if not host:
        return "no host name"
    if any(character.isspace() for character in host):
        return "the host name contains spaces"
    if port_text:
        if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
            return f"port {port_text[:12]!r} is not a number from 1 to 65535"
    return ""


def file_problem(path: Path) -> str:
    """Why ``path`` cannot be played as a camera, or '' when it can (it exists and holds a video stream)."""
    if not path.exists():
        return f"no such file: {path}"
    if not path.is_file():
        return f"not a file: {path}"
    if not os.access(path, os.R_OK):
        return f"not readable: {path}"
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                return f"no video stream in {path}"
    except (av.error.FFmpegError, OSError) as error:
        return f"cannot be read as video: {path}: {error}"
    return ""
