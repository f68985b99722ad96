"""Frame taps over real ZeroMQ sockets: content and sequence over tcp and ipc, PUSH load balancing, and a
stalled consumer that must not hold up the publishing side."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np
import pytest

from streamer.config import TapPointConfig, TapsConfig
from streamer.graph.frames import Frame
from streamer.taps.client import TapClient, TapFrame
from streamer.taps.publisher import FrameTap, TapSocket, wait_until
from streamer.taps.wire import WIRE_VERSION, TapHeader, WireError, decode_payload
from tests.peers.processes import free_port

WIDTH, HEIGHT = 64, 48


def picture(seq: int) -> np.ndarray:
    """A frame whose every pixel says which frame it is, plus a gradient so row order matters."""
    image = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
    image[..., 0] = seq % 256
    image[..., 1] = np.arange(WIDTH, dtype=np.uint8)[None, :]
    image[..., 2] = np.arange(HEIGHT, dtype=np.uint8)[:, None]
    return image


def frame(seq: int) -> Frame:
    return Frame(picture(seq), timestamp=seq / 25, wallclock=1_700_000_000 + seq / 25, seq=seq, restored=True)


@pytest.fixture(params=["tcp", "ipc"])
def endpoint(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return f"tcp://127.0.0.1:{free_port()}" if request.param == "tcp" else f"ipc://{tmp_path}/taps.sock"


def open_tap(endpoint: str, pattern: str = "pub", send_hwm: int = 16, **point: object) -> tuple[TapSocket, FrameTap]:
    config = TapsConfig(enabled=True, endpoint=endpoint, pattern=pattern, send_hwm=send_hwm)  # type: ignore[arg-type]
    socket = TapSocket(config)
    tap = socket.add(FrameTap("cam", TapPointConfig(point="restored", **point), lambda level: "passthrough:test"))  # type: ignore[arg-type]
    return socket, tap


@pytest.fixture
def closing() -> Iterator[list]:
    things: list = []
    yield things
    for thing in reversed(things):
        (thing.stop if isinstance(thing, TapSocket) else thing.close)()


def first_frame(tap: FrameTap, client: TapClient, timeout_s: float = 10.0) -> TapFrame:
    """Offer frames until the subscriber gets one (a SUB socket misses what is sent before it joined)."""
    deadline = time.monotonic() + timeout_s
    seq = 0
    while time.monotonic() < deadline:
        tap.offer(frame(seq))
        seq += 1
        received = client.receive(0.05)
        if received is not None:
            return received
    raise AssertionError(f"no frame reached the subscriber within {timeout_s} s")


def test_subscriber_gets_every_frame_in_order_with_its_pixels(endpoint: str, closing: list) -> None:
    socket, tap = open_tap(endpoint)
    closing.append(socket)
    client = TapClient(endpoint, topics=["cam/restored"])
    closing.append(client)
    start = first_frame(tap, client)
    assert start.header.version == WIRE_VERSION and start.header.topic == "cam/restored"
    # The warm-up frames may still be on their way: take them, then publish one at a time.
    while client.receive(0.2) is not None:
        pass
    next_seq = tap._seq
    for index in range(30):
        source_seq = 1000 + index
        tap.offer(frame(source_seq))
        received = client.receive(5.0)
        assert received is not None, f"frame {index} did not arrive"
        header = received.header
        assert header.seq == next_seq + index
        assert (header.width, header.height, header.pix_fmt) == (WIDTH, HEIGHT, "rgb24")
        assert header.restored and header.model == "passthrough:test"
        assert header.seconds == pytest.approx(source_seq / 25, abs=1e-4)
        assert header.wallclock == pytest.approx(1_700_000_000 + source_seq / 25)
        np.testing.assert_array_equal(received.image, picture(source_seq))
    assert client.gaps == 0 and tap.dropped == 0


def test_jpeg_downscaled_and_decimated(closing: list) -> None:
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    socket, tap = open_tap(endpoint, format="jpeg", quality=90, width=32, every_nth=2)
    closing.append(socket)
    client = TapClient(endpoint)
    closing.append(client)
    received = first_frame(tap, client)
    assert (received.header.width, received.header.height, received.header.pix_fmt) == (32, 24, "jpeg")
    assert received.image.shape == (24, 32, 3)
    expected = picture(received.header.seq * 2)[::2, ::2].astype(int)  # every 2nd frame was published
    assert np.abs(received.image.astype(int) - expected)[..., 0].mean() < 6


def test_push_splits_frames_between_two_workers(endpoint: str, closing: list) -> None:
    socket, tap = open_tap(endpoint, pattern="push")
    closing.append(socket)
    workers = [TapClient(endpoint, pattern="pull"), TapClient(endpoint, pattern="pull")]
    closing.extend(workers)
    got: list[list[int]] = [[], []]
    deadline = time.monotonic() + 15
    seq = 0
    while min(len(seqs) for seqs in got) < 10:
        assert time.monotonic() < deadline, f"workers received {[len(s) for s in got]} frames"
        tap.offer(frame(seq))
        seq += 1
        for worker, seqs in zip(workers, got, strict=True):
            received = worker.receive(0.01)
            if received is not None:
                seqs.append(received.header.seq)
    assert not set(got[0]) & set(got[1]), "a frame went to both workers"


@pytest.mark.parametrize("pattern", ["push", "pub"])
def test_stalled_consumer_never_blocks_the_publisher_and_drops_are_counted(
    endpoint: str, pattern: str, closing: list
) -> None:
    socket, tap = open_tap(endpoint, pattern=pattern, send_hwm=1)
    closing.append(socket)
    stalled = TapClient(endpoint, pattern="pull" if pattern == "push" else "sub", receive_hwm=1)  # never reads
    closing.append(stalled)
    big = Frame(np.zeros((360, 640, 3), np.uint8), 0.0, 0.0, 0)
    offers = 500
    slowest = 0.0
    for _ in range(offers):
        started = time.perf_counter()
        tap.offer(big)
        slowest = max(slowest, time.perf_counter() - started)
    assert slowest < 0.05, f"an offer took {slowest * 1000:.1f} ms"
    assert wait_until(lambda: tap.messages + tap.dropped == offers, 10), (tap.messages, tap.dropped)
    if pattern == "push":  # refused at the high-water mark: counted by the tap
        assert tap.dropped >= offers - 50 and tap.messages < 50, (tap.messages, tap.dropped)
    else:  # PUB drops inside ZeroMQ: every message leaves the tap, the subscriber would see seq gaps
        assert tap.messages + tap.queue_dropped == offers and tap.send_dropped == 0


def decoder_frame(seq: int) -> Frame:
    """A camera frame as the decoder hands it on: an ``av.VideoFrame`` in yuv420p, no RGB made yet."""
    video = av.VideoFrame.from_ndarray(picture(seq), format="rgb24").reformat(format="yuv420p")
    return Frame(None, timestamp=seq / 25, wallclock=1_700_000_000 + seq / 25, seq=seq, video=video)


@pytest.mark.parametrize("pix_fmt", ["i420", "nv12"])
def test_yuv_payloads_carry_the_decoders_planes(pix_fmt: str, closing: list) -> None:
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    socket, tap = open_tap(endpoint, format=pix_fmt)
    closing.append(socket)
    client = TapClient(endpoint)
    closing.append(client)
    first_frame(tap, client)
    source = decoder_frame(7)
    parts = tap.message(3, source)
    received = client._parse(parts)
    assert (received.header.pix_fmt, received.header.width, received.header.height) == (pix_fmt, WIDTH, HEIGHT)
    assert received.data.shape == (HEIGHT * 3 // 2, WIDTH) and received.payload_bytes == WIDTH * HEIGHT * 3 // 2
    planes = source.video if pix_fmt == "i420" else source.video.reformat(format="nv12")
    assert np.array_equal(received.data, planes.to_ndarray())  # the decoder's bytes, not a round trip
    assert np.array_equal(received.luma, received.data[:HEIGHT])
    assert np.abs(received.image.astype(int) - picture(7)).mean() < 3  # RGB on demand, up to 4:2:0 loss
    assert source._image is None  # publishing the raw tap never made an RGB copy of the camera frame


def test_yuv_payload_of_a_restored_rgb_frame_downscaled_and_odd_sizes_made_even() -> None:
    tap = FrameTap("cam", TapPointConfig(point="restored", format="i420", width=32))
    _, raw_header, payload = tap.message(0, frame(5))
    header = TapHeader.decode(raw_header)
    assert (header.width, header.height) == (32, 24) and len(payload) == 32 * 24 * 3 // 2
    odd = Frame(picture(1)[:47, :63], 0.0, 0.0, 0, restored=True)
    _, raw_header, payload = FrameTap("cam", TapPointConfig(point="restored", format="nv12")).message(0, odd)
    header = TapHeader.decode(raw_header)
    assert (header.width, header.height) == (62, 46) and len(payload) == 62 * 46 * 3 // 2
    image = decode_payload(header, payload)
    assert image.shape == (69, 62)


def test_a_header_from_a_newer_writer_with_extra_fields_still_reads() -> None:
    fields = json.loads(TapHeader.decode(FrameTap("cam", TapPointConfig(point="raw")).message(0, frame(0))[1]).encode())
    fields["level"] = "full"
    assert TapHeader.decode(json.dumps(fields).encode()).stream == "cam"
    with pytest.raises(WireError, match="version"):
        TapHeader.decode(json.dumps({**fields, "version": 2}).encode())
