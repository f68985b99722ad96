"""What a job submission brings: an upload streamed to disk under its own size cap, or a server path checked
against ``server.jobs.allowed_paths``. Problems are ``Refusal``s, which the service answers as JSON errors."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import IO

from aiohttp import BodyPartReader, web
from pydantic import ValidationError

from streamer.jobs.models import PathSubmission

CHUNK_BYTES = 1024 * 1024  # written to disk (in a thread) a megabyte at a time
READ_TIMEOUT_S = 30.0  # an upload that sends nothing this long is dropped
MAX_JSON_BYTES = 16384
MULTIPART_OVERHEAD_BYTES = 16384  # boundaries and part headers around the file, allowed beyond the cap
SUFFIX = re.compile(r"^\.[A-Za-z0-9]{1,8}$")


class Refusal(Exception):
    """A submission refused with ``status`` (413 also closes the connection: the body is never read)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def declared_too_large(request: web.Request, max_bytes: int) -> bool:
    return request.content_length is not None and request.content_length > max_bytes + MULTIPART_OVERHEAD_BYTES


async def receive_upload(request: web.Request, folder: Path, max_bytes: int) -> tuple[Path, str, int]:
    """The multipart part named ``file``, streamed into ``folder``: its path, its file name, its size.
    More than ``max_bytes`` is a 413 as soon as the count passes it (the rest is never read)."""
    reader = await request.multipart()
    part = await reader.next()
    while part is not None and not (isinstance(part, BodyPartReader) and part.name == "file"):
        await part.release()  # small form fields before the file (bounded by the stream itself)
        part = await reader.next()
    if part is None:
        raise Refusal(400, "the multipart body has no part named 'file'")
    name = Path(part.filename or "upload").name[:255] or "upload"
    suffix = Path(name).suffix if SUFFIX.match(Path(name).suffix) else ".bin"
    target = folder / f"source{suffix}"
    handle: IO[bytes] = await asyncio.to_thread(open, target, "wb")
    size, buffer = 0, bytearray()
    try:
        while True:
            try:
                chunk = await asyncio.wait_for(part.read_chunk(CHUNK_BYTES), READ_TIMEOUT_S)
            except TimeoutError:
                raise Refusal(408, f"the upload sent nothing for {READ_TIMEOUT_S:.0f} s") from None
            if not chunk:
                break
            size += len(chunk)
            if size > max_bytes:
                raise Refusal(413, f"upload over server.jobs.max_upload_bytes ({max_bytes} bytes)")
            buffer += chunk
            if len(buffer) >= CHUNK_BYTES:
                await asyncio.to_thread(handle.write, bytes(buffer))
                buffer.clear()
        if buffer:
            await asyncio.to_thread(handle.write, bytes(buffer))
    finally:
        await asyncio.to_thread(handle.close)
    if size == 0:
        raise Refusal(415, "the uploaded file is empty")
    return target, name, size


async def read_path_submission(request: web.Request) -> PathSubmission:
    """The JSON body ``{"path": ...}`` (at most MAX_JSON_BYTES, chunked bodies too)."""
    if request.content_length is not None and request.content_length > MAX_JSON_BYTES:
        raise Refusal(413, f"JSON body over {MAX_JSON_BYTES} bytes")
    body = b""
    while len(body) <= MAX_JSON_BYTES and (chunk := await request.content.read(MAX_JSON_BYTES + 1 - len(body))):
        body += chunk
    if len(body) > MAX_JSON_BYTES:
        raise Refusal(413, f"JSON body over {MAX_JSON_BYTES} bytes")
    try:
        return PathSubmission.model_validate_json(body)
    except ValidationError as error:
        problems = "; ".join(f"{'.'.join(map(str, item['loc'])) or 'body'}: {item['msg']}" for item in error.errors())
        raise Refusal(400, f"expected {{\"path\": \"/absolute/file\"}}: {problems}") from None


def allowed_path(path: str, allowed: list[str]) -> tuple[Path, int]:
    """Blocking (run it in a thread): ``path`` with symlinks and ``..`` resolved, which must lie inside one of
    the ``allowed`` folders (resolved too) and be a file; with its size."""
    if not allowed:
        raise Refusal(403, "path submissions are off (server.jobs.allowed_paths is empty): upload the file")
    candidate = Path(path).expanduser()
    if not candidate.is_absolute():
        raise Refusal(400, "path must be absolute")
    resolved = candidate.resolve()
    if not any(resolved.is_relative_to(Path(folder).expanduser().resolve()) for folder in allowed):
        raise Refusal(403, "path is outside server.jobs.allowed_paths")
    if not resolved.is_file():
        raise Refusal(404, "no such file")
    return resolved, resolved.stat().st_size
