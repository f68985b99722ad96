"""Restoration jobs over HTTP: a file in, every frame through the full model, the restored file out.

    POST   /api/v1/jobs               multipart/form-data (part "file") or JSON {"path": ...} -> 201 Job
    GET    /api/v1/jobs               -> JobList
    GET    /api/v1/jobs/<id>          -> Job (state, frames done / total, fps, ETA)
    GET    /api/v1/jobs/<id>/result   -> the restored H.264 MP4 (409 not done yet, 410 expired or cancelled)
    DELETE /api/v1/jobs/<id>          -> Job: a queued or running job is cancelled; the job's files are removed

Errors are JSON (``JobError``): 400 a malformed submission, 403 a path outside server.jobs.allowed_paths,
404 unknown job, 408 an upload that stalls, 413 over server.jobs.max_upload_bytes, 415 not a video (checked
with PyAV, in a thread, before queuing), 429 the queue is full, 503 while the server shuts down.
Jobs run one at a time by default (``max_running``), each in a child process at the lowest CPU priority
(``runner.run_job``); finished jobs' files are removed after ``result_ttl_s`` by a periodic sweep.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

from aiohttp import hdrs, web
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from streamer.config import JobsConfig
from streamer.jobs.guard import LiveGuard
from streamer.jobs.intake import (
    Refusal,
    allowed_path,
    declared_too_large,
    read_path_submission,
    receive_upload,
)
from streamer.jobs.models import ACTIVE_STATES, JOB_STATES, JobError, JobList
from streamer.jobs.runner import JobRecord, NotVideo, probe, run_job

log = logging.getLogger(__name__)

PREFIX = "/api/v1/jobs"
MAX_REMEMBERED = 256  # finished jobs listed at most (the oldest are forgotten, their files removed)


def json_error(status: int, message: str, record: JobRecord | None = None, close: bool = False,
               headers: dict[str, str] | None = None) -> web.Response:
    body = JobError(error=message, job=record.view(PREFIX) if record is not None else None)
    response = web.json_response(body.model_dump(mode="json"), status=status, headers=headers)
    if close:
        response.force_close()  # the rest of the request body is never read
    return response


class JobService:
    """The jobs routes, the queue and the jobs' files. ``close`` cancels every job and removes the files."""

    def __init__(self, config: JobsConfig, registry: CollectorRegistry | None = None,
                 pressure: Callable[[], int] | None = None) -> None:
        """``pressure``: the live cameras' count of frames sent unrestored for want of compute; while it grows
        the jobs' processes are paused (``LiveGuard``, server.jobs.yield_to_live)."""
        self.config = config
        self.jobs: dict[str, JobRecord] = {}  # oldest first
        self.pending = 0  # submissions being received or probed: they hold a queue slot
        self.frames_done = 0  # frames restored by jobs since the start (streamer_job_frames_total)
        self._root: Path | None = None  # created on the first submission
        self._own_root = False
        self._root_lock = asyncio.Lock()
        self._sweeper: asyncio.Task[None] | None = None
        self._closed = False
        self.guard = (LiveGuard(pressure, self._running_pids, hold_s=config.yield_hold_s)
                      if pressure is not None and config.yield_to_live else None)
        if registry is not None:
            registry.register(JobsCollector(self))

    def _running_pids(self) -> list[int]:
        return [record.pid for record in self.jobs.values() if record.state == "running" and record.pid is not None]

    def add_routes(self, router: web.UrlDispatcher) -> None:
        router.add_post(PREFIX, self.submit)
        router.add_get(PREFIX, self.list_jobs)
        router.add_get(f"{PREFIX}/{{job}}", self.status)
        router.add_get(f"{PREFIX}/{{job}}/result", self.result)
        router.add_delete(f"{PREFIX}/{{job}}", self.delete)

    def counts(self) -> Counter[str]:
        return Counter(record.state for record in self.jobs.values())

    # ------------------------------------------------------------------------------------------ routes
    async def submit(self, request: web.Request) -> web.Response:
        """A new job from an upload or a server path: 201 with its Location once its source is checked."""
        if self._closed:
            return json_error(503, "the server is shutting down", headers={hdrs.RETRY_AFTER: "5"})
        if self.counts()["queued"] + self.pending >= self.config.max_queued:
            return json_error(429, f"the queue is full (server.jobs.max_queued={self.config.max_queued})",
                              close=True, headers={hdrs.RETRY_AFTER: "30"})
        if declared_too_large(request, self.config.max_upload_bytes):
            return json_error(413, f"upload over server.jobs.max_upload_bytes ({self.config.max_upload_bytes} "
                              "bytes)", close=True)
        self.pending += 1  # reserved before any await: parallel submissions cannot all pass the check
        try:
            record = await self._receive(request)
        except Refusal as refusal:
            return json_error(refusal.status, refusal.message, close=refusal.status in (408, 413))
        finally:
            self.pending -= 1
        self.jobs[record.id] = record
        log.info("job %s queued: %s (%d bytes, %dx%d)", record.id[:8], record.source_name, record.source_bytes,
                 record.info.width, record.info.height)
        self._dispatch()
        location = f"{PREFIX}/{record.id}"
        return web.json_response(record.view(PREFIX).model_dump(mode="json"), status=201,
                                 headers={hdrs.LOCATION: location})

    async def list_jobs(self, request: web.Request) -> web.Response:
        counts = self.counts()
        body = JobList(jobs=[record.view(PREFIX) for record in self.jobs.values()], queued=counts["queued"],
                       running=counts["running"], max_queued=self.config.max_queued)
        return web.json_response(body.model_dump(mode="json"))

    async def status(self, request: web.Request) -> web.Response:
        record = self.jobs.get(request.match_info["job"])
        if record is None:
            return json_error(404, "no such job")
        return web.json_response(record.view(PREFIX).model_dump(mode="json"))

    async def result(self, request: web.Request) -> web.StreamResponse:
        record = self.jobs.get(request.match_info["job"])
        if record is None:
            return json_error(404, "no such job")
        if record.state in ("expired", "cancelled"):
            return json_error(410, f"the job is {record.state}: its files were removed", record)
        if record.state != "done":
            detail = f"the job failed: {record.error}" if record.state == "failed" else f"the job is {record.state}"
            return json_error(409, detail, record)
        disposition = f'attachment; filename="{record.result_name.replace(chr(34), "")}"'
        return web.FileResponse(record.result, headers={hdrs.CONTENT_DISPOSITION: disposition,
                                                        hdrs.CONTENT_TYPE: "video/mp4"})

    async def delete(self, request: web.Request) -> web.Response:
        """Cancel a queued or running job (it stays listed as cancelled until it expires) or forget a finished
        one; its files are removed either way."""
        record = self.jobs.get(request.match_info["job"])
        if record is None:
            return json_error(404, "no such job")
        if record.state in ACTIVE_STATES:
            await self._cancel(record)
            log.info("job %s cancelled", record.id[:8])
        else:
            self.jobs.pop(record.id, None)
        record.result_bytes = None
        await asyncio.to_thread(record.remove_files)
        return web.json_response(record.view(PREFIX).model_dump(mode="json"))

    # ------------------------------------------------------------------------------------------ jobs
    async def _receive(self, request: web.Request) -> JobRecord:
        exposure = query_flag(request, "exposure")
        job_id = secrets.token_hex(16)  # hex: an id never starts with "-", which a command line would take for an option
        folder = await self._job_folder(job_id)
        try:
            if request.content_type == "multipart/form-data":
                source, name, size = await receive_upload(request, folder, self.config.max_upload_bytes)
                owns = True
            elif request.content_type == "application/json":
                submission = await read_path_submission(request)
                source, size = await asyncio.to_thread(allowed_path, submission.path, self.config.allowed_paths)
                name, owns = source.name, False
            else:
                raise Refusal(415, "send the file as multipart/form-data (part 'file') or JSON {\"path\": ...}")
            try:
                info = await asyncio.to_thread(probe, source)
            except NotVideo as error:
                raise Refusal(415, str(error)) from None
            if self._closed:
                raise Refusal(503, "the server is shutting down")
        except BaseException:
            await asyncio.to_thread(shutil.rmtree, folder, True)
            raise
        return JobRecord(job_id, folder, source, name, size, info, owns, exposure=exposure)

    async def _job_folder(self, job_id: str) -> Path:
        async with self._root_lock:
            if self._root is None:
                made, self._own_root = await asyncio.to_thread(self._make_root)
                self._root = made
                self._sweeper = asyncio.create_task(self._sweep_forever(), name="jobs-sweeper")
                if self.guard is not None:
                    self.guard.start()
            root = self._root
        folder = root / job_id
        await asyncio.to_thread(folder.mkdir, 0o700)
        return folder

    def _make_root(self) -> tuple[Path, bool]:
        if self.config.directory is None:
            return Path(tempfile.mkdtemp(prefix="streamer-jobs-")), True  # 0700, ours alone
        root = Path(self.config.directory).expanduser()
        root.mkdir(mode=0o700, parents=True, exist_ok=True)
        return root, False

    def _dispatch(self) -> None:
        """Start queued jobs, oldest first, while fewer than ``max_running`` run."""
        running = self.counts()["running"]
        for record in self.jobs.values():
            if running >= self.config.max_running or self._closed:
                return
            if record.state == "queued" and record.task is None:
                record.state = "running"
                record.task = asyncio.create_task(self._run(record), name=f"job-{record.id[:8]}")
                running += 1

    async def _run(self, record: JobRecord) -> None:
        try:
            await run_job(record, self.config, self._count_frames)
        except asyncio.CancelledError:
            record.state = "cancelled"
            raise
        except Exception as error:  # the child could not start (an OSError): the job fails, the service goes on
            record.state, record.error = "failed", f"cannot start the job's process: {error}"
        finally:
            record.task = None
            record.finished_at = time.time()
            record.expires_at = record.finished_at + self.config.result_ttl_s
            if record.owns_source:  # the upload is not needed any more
                with contextlib.suppress(OSError):
                    await asyncio.shield(asyncio.to_thread(record.source.unlink, True))
            self._log_end(record)
            self._dispatch()

    def _log_end(self, record: JobRecord) -> None:
        took = (record.finished_at or 0) - (record.started_at or 0)
        if record.state == "done":
            log.info("job %s done: %d frames in %.1f s (%.2f frames/s restoring)", record.id[:8], record.frames_done,
                     took, record.frames_done / record.elapsed_s if record.elapsed_s else 0.0)
        elif record.state == "failed":
            log.warning("job %s failed after %.1f s: %s", record.id[:8], took, record.error)

    async def _cancel(self, record: JobRecord) -> None:
        record.state = "cancelled"
        task = record.task
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)  # the child is terminated and reaped
        else:
            record.finished_at = time.time()
            record.expires_at = record.finished_at + self.config.result_ttl_s

    def _count_frames(self, frames: int) -> None:
        self.frames_done += frames

    async def _sweep_forever(self) -> None:
        interval = min(30.0, max(0.25, self.config.result_ttl_s / 4))
        while True:
            await asyncio.sleep(interval)
            await self.sweep()

    async def sweep(self, now: float | None = None) -> None:
        """Remove the files of finished jobs past their expiry (they become ``expired``); forget expired and
        cancelled jobs one more ``result_ttl_s`` later, and the oldest beyond MAX_REMEMBERED."""
        now = time.time() if now is None else now
        finished = [record for record in self.jobs.values() if record.state not in ACTIVE_STATES]
        surplus = {record.id for record in finished[: max(0, len(finished) - MAX_REMEMBERED)]}
        for record in finished:
            expires = record.expires_at or now
            if record.id in surplus or (record.state in ("expired", "cancelled")
                                        and now >= expires + self.config.result_ttl_s):
                self.jobs.pop(record.id, None)
            elif record.state in ("done", "failed") and now >= expires:
                record.state, record.result_bytes = "expired", None
                log.info("job %s expired: its files are removed", record.id[:8])
            else:
                continue
            await asyncio.to_thread(record.remove_files)

    async def close(self) -> None:
        """Cancel every job (their processes terminated), stop the sweep, remove every job's files. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self.guard is not None:
            await self.guard.stop()
        if self._sweeper is not None:
            self._sweeper.cancel()
            await asyncio.gather(self._sweeper, return_exceptions=True)
        for record in list(self.jobs.values()):
            if record.state in ACTIVE_STATES:
                await self._cancel(record)
        records, root, own = list(self.jobs.values()), self._root, self._own_root
        await asyncio.to_thread(remove_all, records, root if own else None)


def remove_all(records: list[JobRecord], root: Path | None) -> None:
    """Blocking: every job's files, and ``root`` itself when the service made it."""
    for record in records:
        record.remove_files()
    if root is not None:
        shutil.rmtree(root, ignore_errors=True)


class JobsCollector(Collector):
    """``streamer_jobs{state}`` and ``streamer_job_frames_total``, read from the service at scrape time."""

    def __init__(self, service: JobService) -> None:
        self.service = service

    def collect(self) -> Iterator[Metric]:
        jobs = GaugeMetricFamily("streamer_jobs", "Restoration jobs the server holds, by state", labels=["state"])
        counts = self.service.counts()
        for state in JOB_STATES:
            jobs.add_metric([state], counts[state])
        yield jobs
        frames = CounterMetricFamily("streamer_job_frames", "Frames restored by restoration jobs", labels=[])
        frames.add_metric([], self.service.frames_done)
        yield frames
        guard = self.service.guard
        if guard is not None:
            pauses = CounterMetricFamily("streamer_job_pauses", "Jobs paused because a live camera sent frames "
                                         "unrestored (server.jobs.yield_to_live)", labels=[])
            pauses.add_metric([], guard.pauses)
            paused = CounterMetricFamily("streamer_job_paused_seconds", "Time the jobs spent paused for the live "
                                         "cameras", labels=[])
            paused.add_metric([], guard.paused_s)
            yield from (pauses, paused)


def query_flag(request: web.Request, name: str) -> bool:
    """A true/false query parameter (absent: false); anything else is refused naming the parameter."""
    value = request.query.get(name, "false").lower()
    if value not in ("true", "false", "1", "0"):
        raise Refusal(400, f"query parameter {name}: 'true' or 'false', got {value[:20]!r}")
    return value in ("true", "1")
