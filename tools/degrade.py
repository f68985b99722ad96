"""Degradations and media helpers shared by tools/train.py and tools/eval.py (numpy + PyAV, no torch).

Frames are uint8 RGB arrays shaped [T, H, W, 3]. Every random choice takes a ``numpy.random.Generator`` so runs
are reproducible from a seed.
"""

from __future__ import annotations

import struct
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
from av.video.reformatter import ColorRange, Colorspace

STILL_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
# H.264 VUI code points (ITU-T H.273) for SMPTE 170M, i.e. BT.601 525-line, as most SD/HD IP cameras tag it
VUI_SMPTE170M = 6


def to_uint8(frames: np.ndarray) -> np.ndarray:
    """Quantise float frames in [0, 1] to uint8 with rounding and clipping."""
    return np.clip(np.rint(frames * 255.0), 0, 255).astype(np.uint8)


def add_gaussian_noise(frames: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Add i.i.d. Gaussian noise of standard deviation ``sigma`` (0-255 scale); returns uint8."""
    noisy = frames.astype(np.float32) + rng.standard_normal(frames.shape, dtype=np.float32) * sigma
    return np.clip(np.rint(noisy), 0, 255).astype(np.uint8)


def add_poisson_gaussian_noise(
    frames: np.ndarray, shot: float, read_sigma: float, rng: np.random.Generator
) -> np.ndarray:
    """Heteroscedastic sensor noise: variance = shot * x + (read_sigma / 255)^2 with x in [0, 1]; returns uint8."""
    signal = frames.astype(np.float32) / 255.0
    std = np.sqrt(shot * signal + (read_sigma / 255.0) ** 2)
    noisy = signal + rng.standard_normal(frames.shape, dtype=np.float32) * std
    return to_uint8(noisy)


def darken(frames: np.ndarray, gain: float, gamma: float = 1.0) -> np.ndarray:
    """Simulate under-exposure: scale intensities by ``gain`` after an optional gamma; returns uint8."""
    signal = frames.astype(np.float32) / 255.0
    return to_uint8(np.power(signal, gamma) * gain)


def rgb_to_yuv420p(rgb: np.ndarray) -> av.VideoFrame:
    """RGB uint8 [H, W, 3] -> yuv420p frame, ITU-R BT.601 matrix, limited (MPEG, "tv") range, tagged so."""
    return av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(
        format="yuv420p",
        src_colorspace=Colorspace.ITU601,
        dst_colorspace=Colorspace.ITU601,
        src_color_range=ColorRange.JPEG,
        dst_color_range=ColorRange.MPEG,
    )


def yuv_to_rgb(frame: av.VideoFrame) -> np.ndarray:
    """Decoded BT.601 limited-range frame -> RGB uint8 (explicit, whatever the stream's tags say)."""
    return frame.reformat(
        format="rgb24",
        src_colorspace=Colorspace.ITU601,
        dst_colorspace=Colorspace.ITU601,
        src_color_range=ColorRange.MPEG,
        dst_color_range=ColorRange.JPEG,
    ).to_ndarray()


def x264_roundtrip(
    frames: np.ndarray,
    crf: int,
    preset: str = "medium",
    bframes: int | None = None,
    threads: int | None = None,
) -> np.ndarray:
    """Encode frames with libx264 (yuv420p, given CRF) in memory and decode them back to RGB uint8.

    Colour as cameras send it: BT.601 matrix, limited ("tv") range both ways, and the stream's VUI says so
    (smpte170m matrix/primaries/transfer, tv range). H and W must be even. ``bframes=0`` mimics a
    low-latency live encoder. ``threads=1`` makes the output repeatable bit for bit (x264's frame threads
    can change it from run to run, seen on small frames) at camera sizes; on tiny frames in a process that has
    imported torch it still varies from call to call (64x96: 2 distinct outputs in 30 calls, against 1 in 30
    without torch; 640x360 with torch: 1 in 30; cause not found), so tests must not compare them bit for bit.
    """
    return x264_roundtrip_with_qp(frames, crf, preset, bframes, threads, export_qp=False)[0]


def x264_roundtrip_with_qp(
    frames: np.ndarray,
    crf: int,
    preset: str = "medium",
    bframes: int | None = None,
    threads: int | None = None,
    export_qp: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """``x264_roundtrip`` that also returns the decoder's luma QP per 16x16 macroblock of every frame,
    float32 [N, ceil(H/16), ceil(W/16)] (FFmpeg's ``export_side_data=venc_params``: what a live decoder knows
    about how coarsely each block was quantised); zeros when ``export_qp`` is False."""
    count, height, width, _ = frames.shape
    options = {"crf": str(crf), "preset": preset}
    if bframes is not None:
        options["bf"] = str(bframes)
    if threads is not None:
        options["threads"] = str(threads)
    encoded: list[bytes] = []
    codec = av.CodecContext.create("libx264", "w")
    codec.width, codec.height, codec.pix_fmt = width, height, "yuv420p"
    codec.time_base = Fraction(1, 25)
    codec.colorspace = codec.color_primaries = codec.color_trc = VUI_SMPTE170M
    codec.color_range = ColorRange.MPEG
    codec.options = options
    for index in range(count):
        frame = rgb_to_yuv420p(frames[index])
        frame.pts = index
        encoded.extend(bytes(packet) for packet in codec.encode(frame))
    encoded.extend(bytes(packet) for packet in codec.encode(None))
    decoder = av.CodecContext.create("h264", "r")
    if export_qp:
        decoder.options = {"export_side_data": "venc_params"}
    decoded: list[av.VideoFrame] = []
    for payload in encoded:
        decoded.extend(decoder.decode(av.Packet(payload)))
    decoded.extend(decoder.decode(None))
    if len(decoded) != count:
        raise RuntimeError(f"x264 round trip returned {len(decoded)} frames for {count}")
    grid = ((height + 15) // 16, (width + 15) // 16)
    qp = [macroblock_qp(frame, grid) if export_qp else np.zeros(grid, np.float32) for frame in decoded]
    return np.stack([yuv_to_rgb(frame) for frame in decoded]), np.stack(qp)


# AVVideoEncParams (libavutil/video_enc_params.h): nb_blocks, blocks_offset, block_size, type, qp, then
# delta_qp[4][2]; each AVVideoBlockParams is src_x, src_y, w, h, delta_qp (native layout and alignment)
_ENC_PARAMS_HEADER = struct.Struct("@INNii")


def macroblock_qp(frame: av.VideoFrame, grid: tuple[int, int]) -> np.ndarray:
    """Luma QP of each 16x16 block of a decoded H.264 frame, from its VIDEO_ENC_PARAMS side data
    (the decoder must have ``export_side_data=venc_params``); raises if the frame carries none."""
    side_data_list: Any = frame.side_data  # PyAV's stubs type its items as str; they are SideData
    for entry in side_data_list:
        # PyAV 18.1.1 iterates the container's keys (the types), 18.1.0 its SideData
        side_data = entry if hasattr(entry, "type") else side_data_list[entry]
        if side_data.type.name != "VIDEO_ENC_PARAMS":
            continue
        payload = bytes(side_data)
        blocks, offset, size, _kind, frame_qp = _ENC_PARAMS_HEADER.unpack_from(payload, 0)
        fields = np.frombuffer(payload[offset : offset + blocks * size], np.int32).reshape(blocks, size // 4)
        qp = np.zeros(grid, np.float32)
        qp[fields[:, 1] // 16, fields[:, 0] // 16] = frame_qp + fields[:, 4]
        return qp
    raise RuntimeError("the decoded frame carries no VIDEO_ENC_PARAMS side data")


def bilinear_sample(image: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Sample a float32 [H, W, C] image at fractional coordinates with edge clamping."""
    height, width = image.shape[:2]
    rows = np.clip(rows, 0, height - 1.001)
    cols = np.clip(cols, 0, width - 1.001)
    top = np.floor(rows).astype(np.int64)
    left = np.floor(cols).astype(np.int64)
    frac_r = (rows - top)[..., None]
    frac_c = (cols - left)[..., None]
    upper = image[top, left] * (1 - frac_c) + image[top, left + 1] * frac_c
    lower = image[top + 1, left] * (1 - frac_c) + image[top + 1, left + 1] * frac_c
    return upper * (1 - frac_r) + lower * frac_r


def pseudo_video(
    image: np.ndarray, count: int, size: int, rng: np.random.Generator, max_speed: float = 4.0
) -> np.ndarray:
    """Make ``count`` frames of ``size`` x ``size`` from one still with random global motion.

    Motion: constant-velocity translation with jitter, a slow zoom and a small rotation, plus a random base
    downscale (which also makes the still's own noise/compression smaller).
    """
    source = image.astype(np.float32)
    height, width = source.shape[:2]
    scale = rng.uniform(1.0, 2.0)  # source pixels per output pixel
    scale = min(scale, (min(height, width) - 2) / (size * 1.25))
    scale = max(scale, 0.5)
    velocity = rng.uniform(-max_speed, max_speed, size=2) * rng.choice([0.0, 0.3, 1.0], p=[0.15, 0.35, 0.5])
    zoom_rate = 1.0 + rng.uniform(-0.015, 0.015)
    rotation_rate = np.deg2rad(rng.uniform(-0.6, 0.6))
    margin = size * scale * 0.8
    centre = np.array(
        [
            rng.uniform(margin, max(margin + 1, height - margin)),
            rng.uniform(margin, max(margin + 1, width - margin)),
        ]
    )
    grid = (np.arange(size, dtype=np.float32) - size / 2)[:, None]
    out_rows, out_cols = np.meshgrid(grid[:, 0], grid[:, 0], indexing="ij")
    frames = []
    position = centre.copy()
    for index in range(count):
        zoom = scale * zoom_rate**index
        angle = rotation_rate * index
        cos, sin = np.cos(angle) * zoom, np.sin(angle) * zoom
        rows = position[0] + cos * out_rows - sin * out_cols
        cols = position[1] + sin * out_rows + cos * out_cols
        frames.append(bilinear_sample(source, rows, cols))
        position += velocity * scale + rng.normal(0, 0.3, size=2)
    return np.clip(np.rint(np.stack(frames)), 0, 255).astype(np.uint8)


def load_still(path: Path) -> np.ndarray:
    """Decode one image file (png/jpg/tif) to RGB uint8 with FFmpeg's decoders via PyAV."""
    with av.open(str(path)) as container:
        frame = next(container.decode(video=0))
        return frame.to_ndarray(format="rgb24")


def list_stills(folders: list[Path]) -> list[Path]:
    files: list[Path] = []
    for folder in folders:
        files += sorted(p for p in folder.rglob("*") if p.suffix.lower() in STILL_SUFFIXES)
    return files


def is_image_sequence(path: Path) -> bool:
    """A folder of numbered stills (DAVIS / YouTube-VOS style ``00000.jpg``...) read as one clip."""
    return path.is_dir() and any(p.suffix.lower() in STILL_SUFFIXES for p in path.iterdir())


def sequence_files(path: Path) -> list[Path]:
    return sorted(p for p in path.iterdir() if p.suffix.lower() in STILL_SUFFIXES)


def native_size(path: Path) -> tuple[int, int]:
    """(W, H) of a clip's or image sequence's first frame."""
    if is_image_sequence(path):
        height, width = load_still(sequence_files(path)[0]).shape[:2]
        return width, height
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return int(stream.codec_context.width), int(stream.codec_context.height)


def count_frames(path: Path) -> int:
    if is_image_sequence(path):
        return len(sequence_files(path))
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        if stream.frames:
            return int(stream.frames)
        return sum(1 for _ in container.decode(video=0))


def read_clip(
    path: Path, start: int, stop: int, size: tuple[int, int] = (640, 360), step: int = 1
) -> np.ndarray:
    """Decode frames [start, stop) (every ``step``-th) of a video or image sequence, resized to ``size`` = (W, H), as RGB uint8."""
    width, height = size
    frames: list[np.ndarray] = []
    if is_image_sequence(path):
        for file in sequence_files(path)[start:stop:step]:
            with av.open(str(file)) as container:
                still = next(container.decode(video=0))
                rgb = still.reformat(width=width, height=height, format="rgb24", interpolation="AREA")
                frames.append(rgb.to_ndarray())
        return np.stack(frames)
    with av.open(str(path)) as container:
        for index, frame in enumerate(container.decode(video=0)):
            if index >= stop:
                break
            if index >= start and (index - start) % step == 0:
                rgb = frame.reformat(width=width, height=height, format="rgb24", interpolation="AREA")
                frames.append(rgb.to_ndarray())
    return np.stack(frames)


def split_bounds(total: int, train_fraction: float = 0.6) -> tuple[tuple[int, int], tuple[int, int]]:
    """Frame ranges (train, held-out) of a clip: the first ``train_fraction`` trains, the rest evaluates."""
    cut = int(total * train_fraction)
    return (0, cut), (cut, total)
