"""The jobs API on a real server: a real clip restored, and every refusal."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np

from streamer.http.middleware import OWN_BODY_LIMIT_ROUTES
from tests.media import psnr, read_video
from tests.streamer.jobs.conftest import PREFIX, TOKEN, client, job_folders, jobs_server, worker_processes


def mean_psnr(frames: list[np.ndarray], references: list[np.ndarray]) -> float:
    return float(np.mean([psnr(frame, reference) for frame, reference in zip(frames, references, strict=True)]))


async def test_a_job_on_a_real_clip_returns_a_cleaner_file_with_every_frame(small_clip: dict[str, Any],
                                                                               tmp_path: Path) -> None:
    async with jobs_server() as server, client(server.port) as api:
        status, job = await api.upload(small_clip["path"], "noisy.mkv")  # ~1 MB: far over max_body_bytes=1024
        assert status == 201, job
        assert job["state"] in ("queued", "running") and len(job["id"]) >= 24
        assert job["source"] == {"name": "noisy.mkv", "bytes": small_clip["path"].stat().st_size, "width": 160,
                                 "height": 96, "fps": 25.0, "codec": "ffv1"}
        done = await api.wait(job["id"])
        assert done["state"] == "done", done
        assert done["progress"]["frames_done"] == done["progress"]["frames_total"] == 24
        assert done["result_url"] == f"{PREFIX}/{job['id']}/result" and done["engine"].startswith("cpu:lite")
        status, body = await api.call("GET", done["result_url"])
        assert status == 200 and len(body) == done["result_bytes"]
        result = tmp_path / "result.mp4"
        result.write_bytes(body)
        restored = read_video(result)
        assert len(restored) == 24
        import av

        with av.open(str(result)) as container:
            stream = container.streams.video[0]
            assert stream.codec_context.name == "h264" and float(stream.average_rate) == 25.0
        before, after = mean_psnr(small_clip["noisy"], small_clip["clean"]), mean_psnr(restored, small_clip["clean"])
        assert after > before + 5.0, f"PSNR {before:.2f} -> {after:.2f} dB"
        status, listing = await api.call("GET", PREFIX)
        assert status == 200 and [item["id"] for item in listing["jobs"]] == [job["id"]]
        metrics = (await api.call("GET", "/metrics"))[1].decode()
        assert 'streamer_jobs{state="done"} 1.0' in metrics and "streamer_job_frames_total 24.0" in metrics
        assert [path.name for path in job_folders(server)[0].iterdir()] == ["result.mp4"]  # the upload is gone


async def test_refusals_not_video_too_large_unknown_and_other_bodies_still_capped() -> None:
    async with jobs_server(max_upload_bytes=4096) as server, client(server.port) as api:
        status, body = await api.upload(os.urandom(3000), "fake.mp4")
        assert status == 415 and "not a video" in body["error"]
        status, body = await api.upload(b"")
        assert status == 415
        status, body = await api.upload(os.urandom(5000))  # declared length over the cap: refused unread
        assert status == 413 and "max_upload_bytes" in body["error"]

        async def chunked() -> Any:  # no declared length: counted while it streams
            for _ in range(10):
                yield os.urandom(1000)

        form = aiohttp.FormData()
        form.add_field("file", chunked(), filename="big.mkv")
        status, body = await api.call("POST", PREFIX, data=form)
        assert status == 413
        assert job_folders(server) == []  # nothing left behind
        status, body = await api.call("POST", PREFIX, data=b"x", headers={"Content-Type": "text/plain"})
        assert status == 415
        for method, path in (("GET", "/nope"), ("GET", "/nope/result"), ("DELETE", "/nope")):
            status, body = await api.call(method, PREFIX + path)
            assert status == 404 and body["error"] == "no such job"
        # only the upload route has its own cap: any other body over server.http.max_body_bytes is still 413
        assert OWN_BODY_LIMIT_ROUTES == {("POST", PREFIX)}
        status, _ = await api.call("POST", "/api/streams", data=b"x" * 2000)
        assert status == 413


async def test_queue_full_is_429_and_delete_cancels_a_running_job(long_clip: Path) -> None:
    async with jobs_server(max_queued=1) as server, client(server.port) as api:
        status, first = await api.upload(long_clip)
        assert status == 201
        status, second = await api.upload(long_clip)
        assert status == 201 and second["state"] == "queued"
        status, body = await api.upload(long_clip)
        assert status == 429 and "max_queued=1" in body["error"]
        running = await api.wait(first["id"], ("running",))
        deadline = time.monotonic() + 60  # the worker process's start-up: seconds, more on a loaded box
        while not worker_processes(first["id"]) or running["progress"]["frames_done"] == 0:
            assert time.monotonic() < deadline, "the job never got going"
            await asyncio.sleep(0.1)
            running = (await api.call("GET", f"{PREFIX}/{first['id']}"))[1]
        folder = next(path for path in job_folders(server) if path.name == first["id"])
        status, cancelled = await api.call("DELETE", f"{PREFIX}/{first['id']}")
        assert status == 200 and cancelled["state"] == "cancelled"
        assert not folder.exists() and worker_processes(first["id"]) == []
        status, body = await api.call("GET", f"{PREFIX}/{first['id']}/result")
        assert status == 410
        await api.wait(second["id"], ("running",))  # the queue moves on
        status, cancelled = await api.call("DELETE", f"{PREFIX}/{second['id']}")
        assert status == 200 and cancelled["state"] == "cancelled" and job_folders(server) == []
        metrics = (await api.call("GET", "/metrics"))[1].decode()
        assert 'streamer_jobs{state="cancelled"} 2.0' in metrics


async def test_path_submissions_only_inside_allowed_paths(small_clip: dict[str, Any], tmp_path: Path) -> None:
    allowed, outside = tmp_path / "allowed", tmp_path / "outside"
    allowed.mkdir()
    outside.mkdir()
    inside = allowed / "clip.mkv"
    inside.write_bytes(small_clip["path"].read_bytes())
    secret = outside / "clip.mkv"
    secret.write_bytes(small_clip["path"].read_bytes())
    (allowed / "link.mkv").symlink_to(secret)
    async with jobs_server() as server, client(server.port) as api:
        status, body = await api.call("POST", PREFIX, json={"path": str(inside)})
        assert status == 403 and "allowed_paths is empty" in body["error"]
    async with jobs_server(allowed_paths=[str(allowed)]) as server, client(server.port) as api:
        for path in (secret, allowed / "link.mkv", allowed / ".." / "outside" / "clip.mkv"):
            status, body = await api.call("POST", PREFIX, json={"path": str(path)})
            assert status == 403, (path, body)
        status, body = await api.call("POST", PREFIX, json={"path": str(allowed / "missing.mkv")})
        assert status == 404
        status, body = await api.call("POST", PREFIX, json={"path": "clip.mkv", "extra": 1})
        assert status == 400
        status, job = await api.call("POST", PREFIX, json={"path": str(inside)})
        assert status == 201 and job["source"]["name"] == "clip.mkv"
        assert (await api.wait(job["id"]))["state"] == "done"
        await api.call("DELETE", f"{PREFIX}/{job['id']}")  # forgets it and removes its result ...
        assert inside.is_file()  # ... but never the server's own file
        assert (await api.call("GET", f"{PREFIX}/{job['id']}"))[0] == 404


async def test_jobs_need_the_token(small_clip: dict[str, Any]) -> None:
    async with jobs_server(http={"auth": {"token": TOKEN}}) as server:
        async with client(server.port) as anonymous:
            assert (await anonymous.call("GET", PREFIX))[0] == 401
            assert (await anonymous.upload(small_clip["path"]))[0] == 401
            assert (await anonymous.call("GET", f"{PREFIX}/x/result"))[0] == 401
        assert job_folders(server) == []
        async with client(server.port, TOKEN) as api:
            assert (await api.call("GET", PREFIX))[0] == 200


async def test_finished_jobs_expire_and_their_files_are_removed(small_clip: dict[str, Any]) -> None:
    async with jobs_server(result_ttl_s=1) as server, client(server.port) as api:
        job = (await api.upload(small_clip["path"]))[1]
        done = await api.wait(job["id"])
        assert done["state"] == "done" and job_folders(server)
        expired = await api.wait(job["id"], ("expired",), timeout=10)  # the periodic sweep
        assert expired["result_url"] is None and job_folders(server) == []
        assert (await api.call("GET", f"{PREFIX}/{job['id']}/result"))[0] == 410
        assert server.jobs is not None
        await server.jobs.sweep(time.time() + 10)  # one more ttl later the job is forgotten
        assert (await api.call("GET", f"{PREFIX}/{job['id']}"))[0] == 404


async def test_a_job_submitted_with_exposure_brightens_a_dark_clip(tmp_path: Path) -> None:
    from tests.media import clean_frames, write_lossless

    dark = [(frame.astype(np.float32) * 0.15).astype(np.uint8) for frame in clean_frames(160, 96, 12)]
    clip = write_lossless(tmp_path / "dark.mkv", dark)
    async with jobs_server() as server, client(server.port) as api:
        form = aiohttp.FormData()
        form.add_field("file", clip.read_bytes(), filename="dark.mkv")
        status, body = await api.call("POST", f"{PREFIX}?exposure=maybe", data=form)
        assert status == 400 and "exposure" in body["error"] and job_folders(server) == []
        means = {}
        for flag in ("true", "false"):
            form = aiohttp.FormData()
            form.add_field("file", clip.read_bytes(), filename="dark.mkv")
            status, job = await api.call("POST", f"{PREFIX}?exposure={flag}", data=form)
            assert status == 201 and job["exposure"] is (flag == "true")
            done = await api.wait(job["id"])
            assert done["state"] == "done", done
            result = tmp_path / f"result-{flag}.mp4"
            result.write_bytes((await api.call("GET", done["result_url"]))[1])
            means[flag] = float(np.mean(read_video(result)))
    assert means["false"] < 40 and means["true"] > 2 * means["false"]
