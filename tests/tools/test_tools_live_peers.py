"""The live tools' peers: the demo clip, the replay camera (no re-encode) and the loop-aware frame matching."""

from __future__ import annotations

import time
from pathlib import Path

import av
import numpy as np
import pytest

from streamer.encoder import split_annexb
from streamer.timecode import read_timecode
from tools.live_peers import (
    ReplayCamera,
    Viewer,
    added_ms,
    demo_clip,
    latencies_ms,
    place_in_stream,
    restored_by_level,
)

WIDTH, HEIGHT, FPS = 320, 176, 25
VCL = {1, 5}  # slices: what an encoder makes (SPS/PPS/SEI/AUD may be added or dropped by payloaders)


def slices(data: bytes) -> list[bytes]:
    return [nal for nal in split_annexb(data) if nal[0] & 0x1F in VCL]


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return demo_clip(WIDTH, HEIGHT, FPS, 2.0, 400, cache=tmp_path_factory.mktemp("clips"))


def test_demo_clip_carries_each_frame_index_and_is_cached(clip: Path) -> None:
    with av.open(str(clip)) as container:
        packets = [packet for packet in container.demux(video=0) if packet.size]
    with av.open(str(clip)) as container:
        indices = [read_timecode(frame.to_ndarray(format="rgb24")) for frame in container.decode(video=0)]
    assert len(packets) == 50 and [index for index, p in enumerate(packets) if p.is_keyframe] == [0, 25]
    assert sum(code is not None and code[0] == index for index, code in enumerate(indices)) >= 48
    modified = clip.stat().st_mtime_ns
    assert demo_clip(WIDTH, HEIGHT, FPS, 2.0, 400, cache=clip.parent) == clip
    assert clip.stat().st_mtime_ns == modified


def test_frames_are_matched_across_loops() -> None:
    epoch, fps, frames = 1000.0, 25.0, 50  # a 2 s loop
    # A viewer 100 ms behind the camera from stream frame 40 to 140 (through two wraps), one unreadable.
    direct = [(epoch + n / fps + 0.1, n % frames) for n in range(40, 140)] + [(epoch + 9, None)]
    later = [(arrival + 0.25, index) for arrival, index in direct]  # a second viewer, 250 ms later still
    seen, later_seen = place_in_stream(direct, epoch, fps, frames), place_in_stream(later, epoch, fps, frames)
    assert sorted(seen) == list(range(40, 140))
    assert np.allclose(latencies_ms(seen, epoch, fps), 100) and np.allclose(latencies_ms(later_seen, epoch, fps), 350)
    assert np.allclose(added_ms(later_seen, seen), 250) and added_ms(later_seen, seen).size == 100
    assert sorted(place_in_stream(direct, epoch, fps, frames, since=epoch + 4)) == list(range(98, 140))


def test_replay_camera_sends_the_clip_as_it_is_looped(real_peers: None, clip: Path) -> None:
    with av.open(str(clip)) as container:
        sent = [slices(bytes(packet)) for packet in container.demux(video=0) if packet.size]
    camera = ReplayCamera(clip, FPS).start()
    viewer = Viewer("ffmpeg", camera.url, WIDTH).start(HEIGHT)
    try:
        with av.open(camera.url, options={"rtsp_transport": "tcp"}, timeout=10) as container:
            decoded = []
            for packet in container.demux(video=0):
                for frame in packet.decode():
                    code = read_timecode(frame.to_ndarray(format="rgb24"))
                    if code is not None:
                        decoded.append((code[0], slices(bytes(packet))))
                if len(decoded) >= 30:
                    break
        assert all(received == sent[index] for index, received in decoded), "the camera re-encoded the clip"
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and len(place_in_stream(viewer.sightings, camera.epoch, FPS, 50)) < 60:
            time.sleep(0.1)
        seen = place_in_stream(viewer.sightings, camera.epoch, FPS, camera.frames)
        assert camera.frames == 50 and len(seen) >= 60, "the viewer should have seen the loop wrap"
        assert max(seen) - min(seen) >= 59 and max(seen) % 50 != max(seen)
        assert 0 < float(np.median(latencies_ms(seen, camera.epoch, FPS))) < 1000
    finally:
        viewer.stop()
        camera.process.stop()


def test_restored_frames_are_counted_per_ladder_level_between_two_scrapes() -> None:
    before = {'streamer_frames_restored_total{camera="cam",level="full",model="m"}': 100.0,
              'streamer_frames_restored_total{camera="cam",level="half",model="lite"}': 7.0,
              'streamer_frames_out_total{camera="cam"}': 110.0}
    after = {'streamer_frames_restored_total{camera="cam",level="full",model="m"}': 340.0,
             'streamer_frames_restored_total{camera="cam",level="half",model="lite"}': 7.0,
             'streamer_frames_restored_total{camera="cam",level="fast",model="lite"}': 12.0,
             'streamer_frames_out_total{camera="cam"}': 362.0}
    # a level that appeared between the scrapes counts from zero; one that restored nothing is left out
    assert restored_by_level(before, after) == {"fast": 12.0, "full": 240.0}
