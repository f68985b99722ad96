"""``streamer streams list|show|add|remove``: the /api/v1/streams of a running server, without curl.

The server is ``--server`` (default http://127.0.0.1:8080, or ``STREAMER_SERVER``); the bearer token comes
from ``--token-file`` or ``STREAMER_TOKEN`` and is never printed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from streamer.config import ConfigError, source_from_argument
from streamer.jobs.cli import DEFAULT_SERVER, JobsCliError, read_token


class ApiClient:
    """JSON requests to a running streamer (standard library only)."""

    def __init__(self, server: str, token: str | None, timeout_s: float = 60.0) -> None:
        self.server = server.rstrip("/")
        self.token = token
        self.timeout_s = timeout_s

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> ApiClient:
        try:
            token = read_token(args.token_file)  # the jobs commands' reading: the file's first line, or the env
        except JobsCliError as error:
            raise ConfigError(str(error)) from None
        return cls(args.server or os.environ.get("STREAMER_SERVER") or DEFAULT_SERVER, token)

    def request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(f"{self.server}{path}", data=data, method=method)
        if data is not None:
            request.add_header("Content-Type", "application/json")
        if self.token:
            request.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                status, text = response.status, response.read().decode()
        except urllib.error.HTTPError as error:
            status, text = error.code, error.read().decode(errors="replace")
        except (urllib.error.URLError, OSError) as error:
            raise ConfigError(f"cannot reach {self.server}: {getattr(error, 'reason', error)}") from None
        try:
            return status, json.loads(text) if text else None
        except ValueError:
            return status, text


def add_server_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--server", help=f"the streamer's HTTP address (default: $STREAMER_SERVER or {DEFAULT_SERVER})")
    parser.add_argument("--token-file", metavar="FILE", help="file holding the API token (default: $STREAMER_TOKEN)")


def add_streams_parser(sub: Any) -> None:
    streams = sub.add_parser("streams", help="list, add or remove cameras of a running server",
                             description="Cameras of a running server, over its HTTP API (/api/v1/streams).")
    actions = streams.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = actions.add_parser("list", help="the cameras, their state, fps and viewers")
    show = actions.add_parser("show", help="one camera, as JSON")
    show.add_argument("name")
    add = actions.add_parser("add", help="add a camera: NAME SOURCE, or --entry FILE (one camera entry, YAML/JSON)")
    add.add_argument("name", nargs="?")
    add.add_argument("source", nargs="?", help="rtsp://..., a file on the server, or 'demo'")
    add.add_argument("--entry", metavar="FILE", help="a camera entry as in the config file's cameras list")
    add.add_argument("--engine", help="engine.type (auto, cpu, tensorrt, passthrough, ...)")
    add.add_argument("--model", help="engine.model")
    remove = actions.add_parser("remove", help="remove a camera (its viewers are disconnected)")
    remove.add_argument("name")
    for parser in (listing, show, add, remove):
        add_server_options(parser)


def cmd_streams(args: argparse.Namespace) -> int:
    client = ApiClient.from_args(args)
    if args.action == "list":
        status, body = client.request("GET", "/api/v1/streams")
        if status == 200:
            print_streams(body["streams"])
            return 0
    elif args.action == "show":
        status, body = client.request("GET", f"/api/v1/streams/{args.name}")
        if status == 200:
            print(json.dumps(body, indent=2))
            return 0
    elif args.action == "add":
        status, body = client.request("POST", "/api/v1/streams", camera_entry(args))
        if status == 201:
            print(f"added {body['stream']['name']}: {body['stream']['state']}"
                  + (" (saved to the config file)" if body.get("persisted") else ""))
            return 0
    else:
        status, body = client.request("DELETE", f"/api/v1/streams/{args.name}")
        if status == 204:
            print(f"removed {args.name}")
            return 0
    return report_error(status, body)


def camera_entry(args: argparse.Namespace) -> dict[str, Any]:
    if args.entry:
        entry = yaml.safe_load(Path(args.entry).read_text(encoding="utf-8"))
        if not isinstance(entry, dict):
            raise ConfigError(f"{args.entry}: must hold one camera entry (a mapping)")
    elif args.name and args.source:
        entry = {"name": args.name, "source": source_from_argument(args.source)}
    else:
        raise ConfigError("give NAME SOURCE or --entry FILE")
    engine = {key: value for key, value in (("type", args.engine), ("model", args.model)) if value}
    if engine:
        entry["engine"] = {**entry.get("engine", {}), **engine}
    return entry


def print_streams(streams: list[dict[str, Any]]) -> None:
    print(f"{'name':<16} {'state':<9} {'fps in':>6} {'fps out':>7} {'restored':>8}  {'viewers':<18} engine")
    for stream in streams:
        share = f"{100 * stream['frames_restored'] / stream['frames_out']:.0f} %" if stream["frames_out"] else "-"
        viewers = ", ".join(f"{protocol} {count}" for protocol, count in stream["viewers"].items()) or "-"
        print(f"{stream['name']:<16} {stream['state']:<9} {stream['fps_in']:>6.1f} {stream['fps_out']:>7.1f} "
              f"{share:>8}  {viewers:<18} {stream['engine'] or '-'}")


def report_error(status: int, body: Any) -> int:
    if isinstance(body, dict):
        fields = body.get("fields") or []
        message = str(body.get("error", body))
        if fields:  # the message repeats the fields: a line each below is enough
            message = message.split(":", 1)[0]
        print(f"streamer: HTTP {status}: {message}", file=sys.stderr)
        for field in fields:
            print(f"  {field['field']}: {field['reason']}", file=sys.stderr)
    else:
        print(f"streamer: HTTP {status}: {body}", file=sys.stderr)
    return 1
