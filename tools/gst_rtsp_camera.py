#!/usr/bin/python3
"""An independent RTSP camera for tests and benchmarks: GStreamer's RTSP server (Debian packages), run with
the system python3 (python3-gi), serving a video file in a loop as a live H.264 stream.

    /usr/bin/python3 tools/gst_rtsp_camera.py --port 8554 --path cam --file clip.mkv --width 320 --height 176
    /usr/bin/python3 tools/gst_rtsp_camera.py --port 8554 --path cam --h264 clip.h264 --fps 25

``--file`` decodes the file and re-encodes it with x264. ``--h264`` replays an H.264 clip as it is (no
decode, no encode: the cheapest camera there is; see tools/gst_replay.py).
Prints READY once serving; runs until killed.
"""

import argparse
import sys
from pathlib import Path

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tools.gst_replay import serve_replay  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", default="cam")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--file", help="video file to loop, decoded and re-encoded")
    source.add_argument("--h264", help="H.264 clip to replay as it is, looped")
    parser.add_argument("--width", type=int, default=0, help="frame size (--file)")
    parser.add_argument("--height", type=int, default=0)
    parser.add_argument("--fps", type=int, default=25)
    parser.add_argument("--bitrate", type=int, default=3000, help="kbit/s of the camera's H.264")
    parser.add_argument("--key-int", type=int, help="frames from one keyframe to the next (default: --fps)")
    args = parser.parse_args()
    Gst.init(None)
    if args.h264:
        return serve_replay(args.h264, args.port, args.path, args.fps)
    if not (args.width and args.height):
        parser.error("--file needs --width and --height")

    channel = f"cam{args.port}"
    player = Gst.parse_launch(
        f"filesrc location={args.file} ! decodebin ! videoconvert ! videorate ! "
        f"video/x-raw,format=I420,framerate={args.fps}/1 ! intervideosink channel={channel} sync=true"
    )

    def on_message(bus: Gst.Bus, message: Gst.Message) -> None:
        if message.type == Gst.MessageType.EOS:
            player.seek_simple(Gst.Format.TIME, Gst.SeekFlags.FLUSH | Gst.SeekFlags.KEY_UNIT, 0)
        elif message.type == Gst.MessageType.ERROR:
            error, _ = message.parse_error()
            print(f"player error: {error}", file=sys.stderr, flush=True)

    bus = player.get_bus()
    bus.add_signal_watch()
    bus.connect("message", on_message)
    player.set_state(Gst.State.PLAYING)
    player.get_state(10 * Gst.SECOND)  # the file is decoding before any client can connect

    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(args.port))
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(
        # A late frame (a loaded machine) repeats the last one instead of turning black after 1 s.
        f"( intervideosrc channel={channel} timeout={60 * Gst.SECOND} ! video/x-raw,format=I420,width={args.width},height={args.height},"
        f"framerate={args.fps}/1 ! x264enc tune=zerolatency speed-preset=ultrafast key-int-max={args.key_int or args.fps} "
        f"bitrate={args.bitrate} ! video/x-h264,profile=baseline ! rtph264pay name=pay0 pt=96 config-interval=1 )"
    )
    factory.set_shared(True)
    server.get_mount_points().add_factory(f"/{args.path}", factory)
    if server.attach(None) == 0:
        print("cannot bind", file=sys.stderr, flush=True)
        return 1
    print("READY", flush=True)
    GLib.MainLoop().run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
