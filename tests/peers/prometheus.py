"""A real Prometheus server (Debian's ``prometheus``) scraping a target, and ``promtool check metrics``."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from tests.peers.processes import free_port, stop_process

PROMETHEUS = shutil.which("prometheus")
PROMTOOL = shutil.which("promtool")


def promtool_check_metrics(exposition: str) -> str:
    """``promtool check metrics`` on an exposition: its complaints ("" when it passes)."""
    if PROMTOOL is None:
        raise RuntimeError("promtool is not installed")
    result = subprocess.run([PROMTOOL, "check", "metrics"], input=exposition, capture_output=True, text=True, timeout=30)
    return "" if result.returncode == 0 else (result.stdout + result.stderr).strip() or f"exit {result.returncode}"


class PrometheusServer:
    """Prometheus on 127.0.0.1 with its own config and storage under ``folder``, scraping ``target`` every 1 s."""

    def __init__(self, folder: Path, target: str, job: str = "streamer") -> None:
        if PROMETHEUS is None:
            raise RuntimeError("prometheus is not installed")
        self.folder = folder
        self.port = free_port()
        config = folder / "prometheus.yml"
        config.write_text(
            "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
            f"scrape_configs:\n  - job_name: {job}\n    scrape_timeout: 1s\n"
            f"    static_configs: [{{targets: ['{target}']}}]\n"
        )
        self.command = [
            PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={folder / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn",
        ]
        self.log = folder / "prometheus.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 15.0) -> PrometheusServer:
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(self.command, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while not self._ready():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"prometheus did not become ready:\n{self.log.read_text()[-2000:]}")
            time.sleep(0.1)
        return self

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/-/ready", timeout=1) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    def query(self, promql: str) -> list[dict[str, Any]]:
        """The instant vector (or scalar, as one row) that ``promql`` returns now; raises on a query error."""
        url = f"http://127.0.0.1:{self.port}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                body = json.loads(response.read())
        except urllib.error.HTTPError as error:
            raise AssertionError(f"query refused: {promql}\n{error.read().decode()}") from error
        data = body["data"]
        if data["resultType"] == "scalar":
            return [{"metric": {}, "value": data["result"]}]
        return list(data["result"])

    def stop(self) -> None:
        stop_process(self.process, 10)
