"""``streamer jobs ...`` end to end against a running server (the command line in a thread, as a user runs it)."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

import pytest

from streamer.cli import main
from tests.media import read_video
from tests.streamer.jobs.conftest import TOKEN, jobs_server


async def test_submit_wait_fetch_status_list_cancel(small_clip: dict[str, Any], tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str],
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STREAMER_TOKEN", raising=False)
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    async with jobs_server(http={"auth": {"token": TOKEN}}) as server:
        common = ["--server", f"http://127.0.0.1:{server.port}", "--token-file", str(token_file)]

        async def streamer(*args: str) -> tuple[int, str, str]:
            code = await asyncio.to_thread(main, ["jobs", *args[:1], *common, *args[1:]])
            out, err = capsys.readouterr()
            return code, out, err

        output = tmp_path / "restored.mp4"
        code, out, err = await streamer("submit", str(small_clip["path"]), "--wait", "--output", str(output))
        assert code == 0, err
        job_id = out.strip()
        assert re.fullmatch(r"[0-9a-f]{32}", job_id), out  # never "-...", which argparse takes for an option
        assert f"{job_id} done, 24/24 frames" in err and TOKEN not in out + err
        assert len(read_video(output)) == 24
        code, out, _ = await streamer("status", job_id)
        assert code == 0 and out.startswith(f"{job_id} done, 24/24 frames")
        again = tmp_path / "again.mp4"
        code, _, _ = await streamer("fetch", job_id, str(again))
        assert code == 0 and again.read_bytes() == output.read_bytes()
        code, out, _ = await streamer("list")
        assert code == 0 and out.startswith(job_id) and "[noisy.mkv]" in out
        code, out, _ = await streamer("cancel", job_id)
        assert code == 0
        code, _, err = await streamer("status", job_id)
        assert code == 1 and "HTTP 404: no such job" in err
        code = await asyncio.to_thread(main, ["jobs", "list", "--server", f"http://127.0.0.1:{server.port}"])
        assert code == 1 and "HTTP 401" in capsys.readouterr().err  # no token given
        monkeypatch.setenv("STREAMER_TOKEN", TOKEN)  # the environment's token
        code = await asyncio.to_thread(main, ["jobs", "list", "--server", f"http://127.0.0.1:{server.port}"])
        assert code == 0
        code, out, err = await streamer("submit", str(small_clip["path"]), "--exposure")
        assert code == 0, err
        code, out, _ = await streamer("status", out.strip(), "--json")
        assert code == 0 and json.loads(out)["exposure"] is True
