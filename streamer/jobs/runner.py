"""One job: what the server knows of it (``JobRecord``), the check of its source (``probe``), and its run in a
child process at the lowest priority (``run_job``: ``python -m streamer.jobs.worker``, JSON lines read back)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import shutil
import signal
import sys
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from streamer.child_process import ChildProcess
from streamer.config import JobsConfig
from streamer.jobs.models import Job, JobProgress, JobSource, JobState

log = logging.getLogger(__name__)

TERMINATE_GRACE_S = 3.0
STDERR_TAIL_LINES = 20
MAX_EVENT_BYTES = 65536


class NotVideo(ValueError):
    """A file with no video stream that decodes (answered 415)."""


@dataclass(frozen=True)
class Probe:
    width: int
    height: int
    fps: float
    codec: str


def probe(path: Path) -> Probe:
    """The first video stream of ``path``, which must decode at least one frame (blocking: run it in a thread)."""
    import av

    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise NotVideo("the file has no video stream")
            stream = container.streams.video[0]
            frame = next(iter(container.decode(stream)), None)
            if frame is None:
                raise NotVideo("the video stream has no frame that decodes")
            rate = stream.average_rate or stream.guessed_rate
            return Probe(frame.width, frame.height, float(rate) if rate else 25.0, stream.codec_context.name)
    except (av.error.FFmpegError, UnicodeDecodeError, StopIteration) as error:
        raise NotVideo(f"not a video file PyAV can read ({type(error).__name__})") from None


@dataclass
class JobRecord:
    """A job's state on the server (mutable; the API shows ``view()``)."""

    id: str
    folder: Path  # the job's own folder (uploads and the result); removed with the job's files
    source: Path
    source_name: str
    source_bytes: int
    info: Probe
    owns_source: bool  # an upload (removed with the job), not a server path
    exposure: bool = False  # brighten dark scenes after restoration (?exposure=true)
    state: JobState = "queued"
    created_at: float = field(default_factory=time.time)
    started_at: float | None = None
    finished_at: float | None = None
    expires_at: float | None = None
    frames_done: int = 0
    frames_total: int | None = None
    elapsed_s: float = 0.0
    engine: str | None = None
    error: str | None = None
    result_bytes: int | None = None
    task: asyncio.Task[None] | None = None
    pid: int | None = None  # the job's process while it runs

    @property
    def result(self) -> Path:
        return self.folder / "result.mp4"

    @property
    def result_name(self) -> str:
        return f"{Path(self.source_name).stem or 'video'}.restored.mp4"

    def view(self, prefix: str) -> Job:
        fps = self.frames_done / self.elapsed_s if self.elapsed_s > 0 and self.frames_done else None
        total = self.frames_total
        fraction = min(1.0, self.frames_done / total) if total else None
        eta = max(0.0, (total - self.frames_done) / fps) if fps and total and self.state == "running" else None
        return Job(
            id=self.id, state=self.state, engine=self.engine, error=self.error,
            source=JobSource(name=self.source_name, bytes=self.source_bytes, width=self.info.width,
                             height=self.info.height, fps=round(self.info.fps, 3), codec=self.info.codec),
            progress=JobProgress(frames_done=self.frames_done, frames_total=total, fraction=fraction,
                                 fps=round(fps, 2) if fps else None, eta_s=round(eta, 1) if eta is not None else None),
            created_at=self.created_at, started_at=self.started_at, finished_at=self.finished_at,
            expires_at=self.expires_at, result_bytes=self.result_bytes, exposure=self.exposure,
            result_url=f"{prefix}/{self.id}/result" if self.state == "done" else None,
        )

    def remove_files(self) -> None:
        """Blocking: the job's folder (its upload and result); a server path it read is never touched."""
        shutil.rmtree(self.folder, ignore_errors=True)


def worker_command(record: JobRecord, config: JobsConfig) -> list[str]:
    command = [sys.executable, "-m", "streamer.jobs.worker", str(record.source), str(record.result),
               "--engine", config.engine, "--threads", str(config.threads), "--nice", str(config.nice)]
    if config.model is not None:
        command += ["--model", config.model]
    if not config.int8:
        command.append("--float")
    if not config.idle_class:
        command.append("--no-idle-class")
    if record.exposure:
        command.append("--exposure")
    return command


async def run_job(record: JobRecord, config: JobsConfig, on_frames: Callable[[int], None]) -> None:
    """Run ``record`` to its end (done or failed); cancelling this coroutine terminates the child process.
    ``on_frames(n)`` is told of every n frames newly done (for the metrics)."""
    record.state, record.started_at = "running", time.time()
    # a session of its own: with autogroup scheduling, a group of its own, whose weight the worker lowers
    # (nice 19), so that its CPU time is not charged to the server's group (see worker.lower_priority)
    process = await ChildProcess.start(worker_command(record, config), line_limit=MAX_EVENT_BYTES, new_session=True)
    record.pid = process.pid
    tail: deque[str] = deque(maxlen=STDERR_TAIL_LINES)
    errors = asyncio.create_task(_read_stderr(process, tail))
    try:
        async for line in _lines(process.stdout):
            _apply(record, _parse(line), on_frames)
        status = await process.wait()
        record.pid = None
        await errors
    except BaseException:
        await _stop(process)
        errors.cancel()
        raise
    if status == 0 and record.state == "running":
        # the size first, then both at once: a poll during the stat must not see "done" without result_bytes
        size = await asyncio.to_thread(lambda: record.result.stat().st_size)
        record.state, record.result_bytes = "done", size
    elif record.state == "running":
        record.state = "failed"
        record.error = record.error or f"the job's process exited with status {status}: " + " | ".join(tail)[-500:]


def _parse(line: bytes) -> dict[str, Any]:
    try:
        event = json.loads(line)
    except ValueError:
        return {}
    return event if isinstance(event, dict) else {}


def _apply(record: JobRecord, event: dict[str, Any], on_frames: Callable[[int], None]) -> None:
    kind = event.get("event")
    if kind == "total" and isinstance(event.get("frames"), int):
        record.frames_total = event["frames"]
    elif kind == "engine":
        record.engine = str(event.get("engine"))[:200]
    elif kind in ("progress", "done") and isinstance(event.get("frames"), int):
        on_frames(max(0, event["frames"] - record.frames_done))
        record.frames_done = event["frames"]
        record.elapsed_s = float(event.get("elapsed_s") or 0.0)
        if kind == "done":
            record.frames_total = record.frames_done
    elif kind == "error":
        record.state, record.error = "failed", str(event.get("error"))[:1000]


async def _lines(stream: asyncio.StreamReader) -> AsyncIterator[bytes]:
    """The lines of ``stream`` until its end; a line over MAX_EVENT_BYTES is skipped."""
    while True:
        try:
            line = await stream.readline()
        except ValueError:  # over the limit: asyncio dropped what it held
            continue
        if not line:
            return
        yield line


async def _read_stderr(process: ChildProcess, tail: deque[str]) -> None:
    async for line in _lines(process.stderr):
        text = line.decode("utf-8", "replace").strip()
        if text:
            tail.append(text[:300])
            log.debug("job worker: %s", text)


async def _stop(process: ChildProcess) -> None:
    """Terminate the child, kill it after TERMINATE_GRACE_S, reap it (it starts no processes of its own)."""
    if process.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        process.send_signal(signal.SIGCONT)  # paused by the live guard, it would not act on SIGTERM
        process.terminate()
    try:
        await asyncio.wait_for(asyncio.shield(process.wait()), TERMINATE_GRACE_S)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()
