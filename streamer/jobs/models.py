"""The jobs API's request and response bodies (pydantic: validated in, described out, for the OpenAPI document)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

JobState = Literal["queued", "running", "done", "failed", "cancelled", "expired"]
ACTIVE_STATES: frozenset[str] = frozenset({"queued", "running"})
JOB_STATES: tuple[JobState, ...] = ("queued", "running", "done", "failed", "cancelled", "expired")


class PathSubmission(BaseModel):
    """``POST /api/v1/jobs`` with ``application/json``: restore a file already on the server."""

    model_config = ConfigDict(extra="forbid")
    path: str = Field(
        min_length=1, max_length=4096,
        description="Absolute path of a video file inside one of server.jobs.allowed_paths (symlinks resolved)",
    )


class JobProgress(BaseModel):
    frames_done: int = Field(ge=0, description="Frames restored and encoded so far")
    frames_total: int | None = Field(None, ge=0, description="Frames in the source (None until counted)")
    fraction: float | None = Field(None, ge=0, le=1, description="frames_done / frames_total")
    fps: float | None = Field(None, ge=0, description="Frames restored per second, measured since the first frame")
    eta_s: float | None = Field(None, ge=0, description="Seconds left at the measured fps")


class JobSource(BaseModel):
    name: str = Field(description="File name of the source as submitted (an upload's file name, or the path's)")
    bytes: int = Field(ge=0, description="Size of the source file")
    width: int = Field(ge=1, description="Frame width in pixels")
    height: int = Field(ge=1, description="Frame height in pixels")
    fps: float = Field(gt=0, description="Frame rate of the source (the result keeps it)")
    codec: str = Field(description="Codec of the source's video stream")


class Job(BaseModel):
    """One restoration job as the API shows it."""

    id: str = Field(description="Job id (unguessable): /api/v1/jobs/<id>")
    state: JobState = Field(
        description="queued (waiting for a slot), running, done (result ready), failed (see error), cancelled "
        "(DELETE), expired (files removed after server.jobs.result_ttl_s)"
    )
    source: JobSource = Field(description="What was submitted")
    progress: JobProgress = Field(description="Frames done and total, measured speed and time left")
    engine: str | None = Field(None, description="The engine that runs the job, once it is loaded")
    error: str | None = Field(None, description="Why the job failed")
    created_at: float = Field(description="Submission time (Unix seconds)")
    started_at: float | None = Field(None, description="When the job's process started (Unix seconds)")
    finished_at: float | None = Field(None, description="When it ended: done, failed or cancelled (Unix seconds)")
    expires_at: float | None = Field(None, description="When a finished job's files are removed (Unix seconds)")
    result_bytes: int | None = Field(None, ge=0, description="Size of the result (H.264 MP4) once done")
    result_url: str | None = Field(None, description="Where to download the result, once done")
    exposure: bool = Field(False, description="Dark scenes brightened after restoration (submitted with "
                           "?exposure=true; README 'Exposure correction')")


class JobList(BaseModel):
    jobs: list[Job] = Field(description="Every job the server remembers, oldest first")
    queued: int = Field(ge=0, description="Jobs waiting to run")
    running: int = Field(ge=0, description="Jobs running")
    max_queued: int = Field(ge=1, description="server.jobs.max_queued: a submission beyond gets 429")


class JobError(BaseModel):
    error: str = Field(description="What went wrong, in words")
    job: Job | None = Field(None, description="The job concerned, when there is one")
