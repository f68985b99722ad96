"""Reads what an H.264 sequence parameter set says about timing: the VUI frame rate (ITU-T H.264 7.3.2.1, E.1)."""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

# Profiles whose SPS carries chroma format, bit depths and scaling lists (H.264 7.3.2.1.1).
HIGH_PROFILES = {100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135}
EXTENDED_SAR = 255


class SpsError(ValueError):
    """Not a sequence parameter set this reader understands."""


class BitReader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.position = 0

    def bit(self) -> int:
        byte, offset = divmod(self.position, 8)
        if byte >= len(self.data):
            raise SpsError("SPS ends early")
        self.position += 1
        return (self.data[byte] >> (7 - offset)) & 1

    def bits(self, count: int) -> int:
        value = 0
        for _ in range(count):
            value = (value << 1) | self.bit()
        return value

    def ue(self) -> int:
        zeros = 0
        while self.bit() == 0:
            zeros += 1
            if zeros > 31:
                raise SpsError("bad exp-Golomb code")
        return (1 << zeros) - 1 + self.bits(zeros)

    def se(self) -> int:
        value = self.ue()
        return (value + 1) // 2 if value % 2 else -(value // 2)


def unescape(nal: bytes) -> bytes:
    """The RBSP: emulation-prevention bytes (00 00 03) removed."""
    return nal.replace(b"\x00\x00\x03", b"\x00\x00")


@dataclass(frozen=True)
class SpsTiming:
    num_units_in_tick: int
    time_scale: int
    fixed_frame_rate: bool

    @property
    def frame_rate(self) -> Fraction:
        """Frames per second: two ticks per frame (a frame is two fields, H.264 E.2.1)."""
        return Fraction(self.time_scale, 2 * self.num_units_in_tick)


def _skip_scaling_list(reader: BitReader, size: int) -> None:
    last = next_scale = 8
    for _ in range(size):
        if next_scale != 0:
            next_scale = (last + reader.se() + 256) % 256
        last = next_scale if next_scale != 0 else last


def sps_timing(sps: bytes) -> SpsTiming | None:
    """The VUI timing of an SPS NAL unit (with its header byte), or None when it carries none."""
    if not sps or sps[0] & 0x1F != 7:
        raise SpsError("not an SPS NAL unit")
    reader = BitReader(unescape(sps[1:]))
    profile_idc = reader.bits(8)
    reader.bits(16)  # constraint flags, level_idc
    reader.ue()  # seq_parameter_set_id
    if profile_idc in HIGH_PROFILES:
        chroma_format_idc = reader.ue()
        if chroma_format_idc == 3:
            reader.bit()  # separate_colour_plane_flag
        reader.ue()  # bit_depth_luma_minus8
        reader.ue()  # bit_depth_chroma_minus8
        reader.bit()  # qpprime_y_zero_transform_bypass_flag
        if reader.bit():  # seq_scaling_matrix_present_flag
            for index in range(8 if chroma_format_idc != 3 else 12):
                if reader.bit():
                    _skip_scaling_list(reader, 16 if index < 6 else 64)
    reader.ue()  # log2_max_frame_num_minus4
    poc_type = reader.ue()
    if poc_type == 0:
        reader.ue()  # log2_max_pic_order_cnt_lsb_minus4
    elif poc_type == 1:
        reader.bit()  # delta_pic_order_always_zero_flag
        reader.se()  # offset_for_non_ref_pic
        reader.se()  # offset_for_top_to_bottom_field
        for _ in range(reader.ue()):
            reader.se()  # offset_for_ref_frame
    reader.ue()  # max_num_ref_frames
    reader.bit()  # gaps_in_frame_num_value_allowed_flag
    reader.ue()  # pic_width_in_mbs_minus1
    reader.ue()  # pic_height_in_map_units_minus1
    if not reader.bit():  # frame_mbs_only_flag
        reader.bit()  # mb_adaptive_frame_field_flag
    reader.bit()  # direct_8x8_inference_flag
    if reader.bit():  # frame_cropping_flag
        for _ in range(4):
            reader.ue()
    if not reader.bit():  # vui_parameters_present_flag
        return None
    if reader.bit():  # aspect_ratio_info_present_flag
        if reader.bits(8) == EXTENDED_SAR:
            reader.bits(32)  # sar_width, sar_height
    if reader.bit():  # overscan_info_present_flag
        reader.bit()
    if reader.bit():  # video_signal_type_present_flag
        reader.bits(4)  # video_format, video_full_range_flag
        if reader.bit():  # colour_description_present_flag
            reader.bits(24)
    if reader.bit():  # chroma_loc_info_present_flag
        reader.ue()
        reader.ue()
    if not reader.bit():  # timing_info_present_flag
        return None
    num_units_in_tick = reader.bits(32)
    time_scale = reader.bits(32)
    fixed = bool(reader.bit())
    if num_units_in_tick == 0 or time_scale == 0:
        return None
    return SpsTiming(num_units_in_tick, time_scale, fixed)


def sps_frame_rate(sps: bytes) -> Fraction | None:
    """The frame rate an SPS declares, or None (no timing info, or an SPS this reader cannot parse)."""
    try:
        timing = sps_timing(sps)
    except SpsError:
        return None
    return timing.frame_rate if timing is not None else None
