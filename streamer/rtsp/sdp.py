"""The session description of a restored H.264 stream."""

from __future__ import annotations

import base64
import secrets

from streamer.sps import sps_frame_rate

TRACK = "trackID=0"
PAYLOAD_TYPE = 96


def build_sdp(name: str, host: str, parameter_sets: tuple[bytes, bytes], fps: float) -> str:
    """The SDP of one stream. ``a=framerate`` is the rate the SPS declares (what the encoder runs at);
    ``fps`` (a rate measured from timestamps) only stands in when the SPS carries no timing."""
    sps, pps = parameter_sets
    declared = sps_frame_rate(sps)
    if declared is not None:
        fps = float(declared)
    profile_level_id = sps[1:4].hex()
    sprop = ",".join(base64.b64encode(nal).decode() for nal in (sps, pps))
    session_id = secrets.randbelow(1 << 62)
    lines = [
        "v=0",
        f"o=- {session_id} 1 IN IP4 {host}",
        f"s=streamer {name}",
        "c=IN IP4 0.0.0.0",
        "t=0 0",
        "a=tool:streamer",
        "a=range:npt=now-",
        "a=control:*",
        f"m=video 0 RTP/AVP {PAYLOAD_TYPE}",
        f"a=rtpmap:{PAYLOAD_TYPE} H264/90000",
        f"a=fmtp:{PAYLOAD_TYPE} packetization-mode=1;profile-level-id={profile_level_id};sprop-parameter-sets={sprop}",
        f"a=control:{TRACK}",
    ]
    if fps > 0:
        lines.append(f"a=framerate:{fps:.3f}".rstrip("0").rstrip("."))  # 30000/1001 -> 29.97
    return "\r\n".join(lines) + "\r\n"
