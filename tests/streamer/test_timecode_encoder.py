from __future__ import annotations

import asyncio

import av
import numpy as np

from streamer.config import EncoderConfig
from streamer.encoder import EncodeStage, H264Encoder, split_annexb
from streamer.graph.channel import Channel
from streamer.graph.frames import AccessUnit, Frame
from streamer.timecode import draw_timecode, read_timecode
from tests.media import clean_frames


def test_timecode_survives_noise_and_h264() -> None:
    image = clean_frames(320, 176, 1)[0]
    draw_timecode(image, 1_790_000_123_456, 1234)
    noisy = np.clip(image + np.random.default_rng(0).normal(0, 20, image.shape), 0, 255).astype(np.uint8)
    encoder = H264Encoder(EncoderConfig(bitrate_kbps=300))
    (unit,) = encoder.encode(Frame(noisy, 0.0, 0.0, 0))
    decoder = av.CodecContext.create("h264", "r")
    packet = av.Packet(b"".join(b"\x00\x00\x00\x01" + nal for nal in unit.nals))
    (decoded,) = decoder.decode(packet)
    assert read_timecode(decoded.to_ndarray(format="rgb24")) == (1_790_000_123_456, 1234)
    assert read_timecode(clean_frames(320, 176, 1)[0]) is None


def test_encoder_gop_parameter_sets_and_size_change() -> None:
    encoder = H264Encoder(EncoderConfig(gop_s=1.0))
    frames = clean_frames(160, 96, 30)
    units = [u for index, image in enumerate(frames) for u in encoder.encode(Frame(image, index / 25, 0, index))]
    assert len(units) == 30
    keyframes = [u.seq for u in units if u.keyframe]
    assert keyframes == [0, 25]
    assert all(u.parameter_sets is not None for u in units if u.keyframe)
    assert all(len(nal) <= 200000 and nal[0] & 0x80 == 0 for u in units for nal in u.nals)
    bigger = encoder.encode(Frame(clean_frames(320, 176, 1)[0], 31 / 25, 0, 31))
    assert bigger[0].keyframe and (bigger[0].width, bigger[0].height) == (320, 176)
    assert encoder.stats.reinits == 1


def test_split_annexb() -> None:
    assert split_annexb(b"\x00\x00\x00\x01\x67ab\x00\x00\x01\x68c\x00\x00\x01\x65xyz") == [b"\x67ab", b"\x68c", b"\x65xyz"]


async def test_a_frame_at_a_new_ladder_level_starts_a_gop() -> None:
    """The encode stage makes the first frame of a new restoration level an IDR (no prediction from frames
    restored at the other level), and only that frame."""
    inbox: Channel[Frame] = Channel("in", 64)
    units: list[AccessUnit] = []
    stage = EncodeStage(H264Encoder(EncoderConfig(gop_s=10.0)), inbox, units.append)
    task = asyncio.create_task(stage.run())
    for index, image in enumerate(clean_frames(160, 96, 12)):
        frame = Frame(image, index / 25, 0, index, restored=True, level="full" if index < 7 else "half")
        frame.level_switch = index == 7
        await inbox.wait_for_space()
        inbox.put(frame)
    inbox.close()
    await asyncio.wait_for(task, 10)
    stage.close()
    assert [unit.seq for unit in units if unit.keyframe] == [0, 7]
    assert stage.level_switch_keyframes == 1
