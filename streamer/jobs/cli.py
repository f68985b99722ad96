"""``streamer jobs submit|status|fetch|list|cancel``: restoration jobs on a running server, without curl.

Standard library only (urllib): an upload is streamed from the file as multipart/form-data, a result is
streamed to disk. The token comes from ``--token-file`` (first line) or the STREAMER_TOKEN environment
variable and is never printed.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

DEFAULT_SERVER = "http://127.0.0.1:8080"
PREFIX = "/api/v1/jobs"
CHUNK_BYTES = 1024 * 1024
POLL_INTERVAL_S = 1.0
TIMEOUT_S = 60.0
FINISHED = ("done", "failed", "cancelled", "expired")


class JobsCliError(Exception):
    """A request that did not work; the message says why in one line."""


class JobsClient:
    def __init__(self, server: str, token: str | None) -> None:
        self.server = server.rstrip("/")
        self.token = token

    def _open(self, method: str, path: str, data: Any = None, headers: dict[str, str] | None = None) -> Any:
        request = urllib.request.Request(self.server + path, data=data, method=method, headers=headers or {})
        if self.token:
            request.add_header("Authorization", f"Bearer {self.token}")
        try:
            return urllib.request.urlopen(request, timeout=TIMEOUT_S)
        except urllib.error.HTTPError as error:
            raise JobsCliError(f"{method} {path}: HTTP {error.code}: {_error_text(error)}") from None
        except (urllib.error.URLError, OSError) as error:
            reason = getattr(error, "reason", None) or error
            raise JobsCliError(f"{method} {path}: cannot talk to {self.server}: {reason}") from None

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": "application/json"} if body is not None else {}
        with self._open(method, path, data, headers) as response:
            result: dict[str, Any] = json.loads(response.read())
            return result

    def upload(self, path: Path, target: str = PREFIX) -> dict[str, Any]:
        boundary = secrets.token_hex(16)
        chunks, length = multipart_body(path, boundary)
        headers = {"Content-Type": f"multipart/form-data; boundary={boundary}", "Content-Length": str(length)}
        with self._open("POST", target, chunks, headers) as response:
            result: dict[str, Any] = json.loads(response.read())
            return result

    def download(self, job_id: str, output: Path) -> int:
        partial = output.with_name(f".partial-{output.name}")
        size = 0
        with self._open("GET", f"{PREFIX}/{job_id}/result") as response, partial.open("wb") as handle:
            while chunk := response.read(CHUNK_BYTES):
                handle.write(chunk)
                size += len(chunk)
        partial.replace(output)
        return size


def multipart_body(path: Path, boundary: str) -> tuple[Iterator[bytes], int]:
    """The file as one multipart/form-data part named ``file``, read a chunk at a time; and its length."""
    name = path.name.replace('"', "").replace("\r", "").replace("\n", "") or "upload"
    head = (f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n").encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    size = path.stat().st_size

    def chunks() -> Iterator[bytes]:
        yield head
        with path.open("rb") as handle:
            while chunk := handle.read(CHUNK_BYTES):
                yield chunk
        yield tail

    return chunks(), len(head) + size + len(tail)


def _error_text(error: urllib.error.HTTPError) -> str:
    try:
        return str(json.loads(error.read(65536)).get("error") or error.reason)
    except (ValueError, AttributeError, OSError):
        return str(error.reason)


def describe(job: dict[str, Any]) -> str:
    progress = job.get("progress") or {}
    total = progress.get("frames_total")
    parts = [f"{job['id']} {job['state']}", f"{progress.get('frames_done', 0)}/{total if total is not None else '?'} frames"]
    if progress.get("fps"):
        parts.append(f"{progress['fps']:.1f} fps")
    if progress.get("eta_s") is not None:
        parts.append(f"ETA {progress['eta_s']:.0f} s")
    if job.get("error"):
        parts.append(f"error: {job['error']}")
    return ", ".join(parts)


def add_jobs_parser(subparsers: Any) -> None:
    """``streamer jobs ...`` on the main parser's subparsers."""
    jobs = subparsers.add_parser("jobs", help="restoration jobs on a running server (submit, status, fetch, list, cancel)",
                                 description="Restore files on a running `streamer run` server (its /api/v1/jobs).")
    actions = jobs.add_subparsers(dest="jobs_command", required=True, metavar="ACTION")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--server", default=DEFAULT_SERVER, help=f"the server's HTTP address (default: {DEFAULT_SERVER})")
    common.add_argument("--token-file", metavar="F",
                        help="file whose first line is the bearer token (default: the STREAMER_TOKEN environment variable)")
    submit = actions.add_parser("submit", parents=[common], help="upload a video file (or name a server path): prints the job id")
    submit.add_argument("file", help="video file to upload (with --server-path: a path on the server)")
    submit.add_argument("--server-path", action="store_true",
                        help="FILE is a path on the server, inside server.jobs.allowed_paths (nothing is uploaded)")
    submit.add_argument("--wait", action="store_true", help="wait for the job to end, showing its progress")
    submit.add_argument("--exposure", action="store_true", help="brighten dark scenes after restoration")
    submit.add_argument("--output", metavar="OUT", help="with --wait: download the result to OUT")
    status = actions.add_parser("status", parents=[common], help="a job's state and progress (JSON with --json)")
    status.add_argument("id")
    status.add_argument("--json", action="store_true", help="print the server's JSON")
    fetch = actions.add_parser("fetch", parents=[common], help="download a finished job's result")
    fetch.add_argument("id")
    fetch.add_argument("output", help="file to write (H.264 MP4)")
    actions.add_parser("list", parents=[common], help="every job the server holds")
    cancel = actions.add_parser("cancel", parents=[common], help="cancel a job (its files are removed)")
    cancel.add_argument("id")


def read_token(token_file: str | None) -> str | None:
    if token_file:
        try:
            lines = Path(token_file).expanduser().read_text(encoding="utf-8").splitlines()
        except OSError as error:
            raise JobsCliError(f"--token-file: cannot read {token_file}: {error.strerror or error}") from None
        return lines[0].strip() if lines else None
    return os.environ.get("STREAMER_TOKEN") or None


def wait_for(client: JobsClient, job_id: str) -> dict[str, Any]:
    """Poll the job until it ends, one progress line on stderr (rewritten in place on a terminal)."""
    live = sys.stderr.isatty()
    while True:
        job = client.call("GET", f"{PREFIX}/{job_id}")
        print(("\r" if live else "") + describe(job), end="" if live else "\n", file=sys.stderr, flush=True)
        if job["state"] in FINISHED:
            if live:
                print(file=sys.stderr)
            return job
        time.sleep(POLL_INTERVAL_S)


def cmd_jobs(args: argparse.Namespace) -> int:
    try:
        return _run(args, JobsClient(args.server, read_token(args.token_file)))
    except JobsCliError as error:
        print(f"streamer jobs: {error}", file=sys.stderr)
        return 1


def _run(args: argparse.Namespace, client: JobsClient) -> int:
    action = args.jobs_command
    if action == "submit":
        if args.output and not args.wait:
            raise JobsCliError("--output needs --wait (or use `streamer jobs fetch ID OUTPUT` later)")
        source = Path(args.file)
        if not args.server_path and not source.is_file():
            raise JobsCliError(f"no such file: {source}")
        target = f"{PREFIX}?exposure=true" if args.exposure else PREFIX
        job = client.call("POST", target, {"path": args.file}) if args.server_path else client.upload(source, target)
        print(job["id"], flush=True)
        if not args.wait:
            return 0
        job = wait_for(client, job["id"])
        if job["state"] != "done":
            return 1
        if args.output:
            size = client.download(job["id"], Path(args.output))
            print(f"wrote {args.output} ({size} bytes)", file=sys.stderr)
        return 0
    if action == "status":
        job = client.call("GET", f"{PREFIX}/{args.id}")
        print(json.dumps(job, indent=2) if args.json else describe(job))
        return 0
    if action == "fetch":
        size = client.download(args.id, Path(args.output))
        print(f"wrote {args.output} ({size} bytes)", file=sys.stderr)
        return 0
    if action == "list":
        for job in client.call("GET", PREFIX)["jobs"]:
            print(f"{describe(job)}  [{job['source']['name']}]")
        return 0
    job = client.call("DELETE", f"{PREFIX}/{args.id}")
    print(describe(job))
    return 0
