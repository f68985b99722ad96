"""1,100 idle connections against ``streamer run`` (nofile 1024): a new viewer still plays, /healthz answers."""

from __future__ import annotations

import os
import resource
import selectors
import socket
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from tests.conftest import FPS, HEIGHT, WIDTH
from tests.peers.processes import GstCamera, StreamerProcess, start_viewer

FLOOD = 1100
FLOOD_SOURCES = ["127.0.0.1"] * 5 + ["127.0.1.1", "127.0.1.2", "127.0.1.3", "127.0.1.4", "127.0.1.5"]
WATCH_S = 5.0


@contextmanager
def nofile_soft_limit(limit: int) -> Iterator[None]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(limit, hard), hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


class Flood:
    """``count`` idle connections from several loopback addresses (the viewer's own among them), each
    reopened as soon as the server closes it: a persistent attacker, ~500 reconnects/s at most."""

    def __init__(self, port: int, count: int) -> None:
        self.port = port
        self.selector = selectors.DefaultSelector()
        self.stop_event = threading.Event()
        self.reopened = 0
        for index in range(count):
            self._open(FLOOD_SOURCES[index % len(FLOOD_SOURCES)])
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _open(self, source: str) -> None:
        sock = socket.socket()
        sock.bind((source, 0))
        sock.settimeout(5)
        try:
            sock.connect(("127.0.0.1", self.port))
        except OSError:
            sock.close()
            return
        sock.setblocking(False)
        self.selector.register(sock, selectors.EVENT_READ, source)

    def _run(self) -> None:
        while not self.stop_event.is_set():
            for key, _ in self.selector.select(0.1)[:50]:
                self.selector.unregister(key.fileobj)
                key.fileobj.close()  # type: ignore[union-attr]
                self._open(key.data)
                self.reopened += 1

    def close(self) -> None:
        self.stop_event.set()
        self.thread.join(5)
        for key in list(self.selector.get_map().values()):
            key.fileobj.close()  # type: ignore[union-attr]
        self.selector.close()


def healthz(port: int) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as response:
            return int(response.status)
    except OSError:
        return -1


@pytest.mark.slow
def test_1100_idle_connections_do_not_lock_out_a_viewer_or_the_health_check(camera: GstCamera) -> None:
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard < FLOOD + 500:
        pytest.fail(f"this test needs {FLOOD + 500} file descriptors (hard limit {hard})")
    with nofile_soft_limit(1024):  # what the streamer inherits: the limit of a default systemd/Docker service
        streamer = StreamerProcess(camera.url, "--engine", "passthrough").start()
    assert streamer.process is not None
    fd_counts: list[int] = []
    with nofile_soft_limit(FLOOD + 500):
        flood = Flood(streamer.rtsp_port, FLOOD)
        viewer = None
        try:
            viewer = start_viewer("ffmpeg", streamer.url(), WIDTH, HEIGHT, "tcp")
            assert viewer.first_frame.wait(20), "a new viewer got no frame under the flood"
            start = time.monotonic() + 1
            end = start + WATCH_S
            statuses = []
            while time.monotonic() < end + 0.5:
                statuses.append(healthz(streamer.http_port))
                fd_counts.append(len(os.listdir(f"/proc/{streamer.process.pid}/fd")))
                time.sleep(0.25)
            count = viewer.count_between(start, end)
            metrics = streamer.metrics()
        finally:
            if viewer is not None:
                viewer.stop()
            flood.close()
            streamer.kill()
    print(f"viewer {count} frames in {WATCH_S} s, streamer fds max {max(fd_counts)}, flood reopened "
          f"{flood.reopened} connections, evicted {metrics['streamer_rtsp_connections_evicted_total']:.0f}")
    assert set(statuses) == {200}, f"/healthz answered {statuses}"
    assert count >= 0.95 * FPS * WATCH_S, f"the viewer decoded {count} frames in {WATCH_S} s"
    assert max(fd_counts) < 600, "fd use must stay bounded by the connection caps"
    assert metrics["streamer_rtsp_connections_evicted_total"] > 0
    assert metrics["streamer_rtsp_internal_errors_total"] == 0
