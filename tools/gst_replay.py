"""Replays an H.264 clip as a live RTSP camera without decoding or encoding it (gst_rtsp_camera.py
``--h264``): its access units are read into memory once, then pushed, looped, one every 1/fps s of the
monotonic clock, whether or not anyone watches, as a camera would. Runs under the system python3 (python3-gi).

Prints ``READY epoch=<unix time of frame 0> frames=<clip length>`` once serving: frame n of the endless
stream is clip frame n % frames, due at epoch + n/fps. Then a ``STATS`` line every 10 s (frames pushed,
frames pushed over 20 ms after they were due, the largest delay).
"""

import sys
import threading
import time

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402

# The media the RTSP server builds for each shared session: our access units, payloaded as they are. A
# media that is not playing keeps at most 10 access units (the oldest are dropped), never a backlog.
LAUNCH = (
    "( appsrc name=src is-live=true format=time do-timestamp=true max-bytes=0 max-buffers=10 leaky-type=downstream "
    "caps=video/x-h264,stream-format=byte-stream,alignment=au ! h264parse ! "
    "rtph264pay name=pay0 pt=96 config-interval=-1 )"
)


def read_access_units(path: str) -> list[bytes]:
    """Every access unit of the first H.264 stream in ``path`` (any container, or Annex B), as Annex B."""
    pipeline = Gst.parse_launch(
        "filesrc name=file ! parsebin ! h264parse ! video/x-h264,stream-format=byte-stream,alignment=au ! "
        "appsink name=sink sync=false"
    )
    pipeline.get_by_name("file").set_property("location", path)
    sink = pipeline.get_by_name("sink")
    pipeline.set_state(Gst.State.PLAYING)
    pipeline.get_state(10 * Gst.SECOND)  # started (the sink reports "eos" until then) or failed
    units = []
    bus = pipeline.get_bus()
    deadline = time.monotonic() + 300
    while True:
        sample = sink.emit("try-pull-sample", Gst.SECOND // 10)  # None at the end, or after 0.1 s
        if sample is not None:
            buffer = sample.get_buffer()
            units.append(buffer.extract_dup(0, buffer.get_size()))
            continue
        message = bus.pop_filtered(Gst.MessageType.ERROR)
        if message is not None or time.monotonic() > deadline:
            pipeline.set_state(Gst.State.NULL)
            reason = message.parse_error()[0].message if message is not None else "took over 300 s"
            raise SystemExit(f"cannot read H.264 from {path}: {reason}")
        if sink.get_property("eos"):
            break
    pipeline.set_state(Gst.State.NULL)
    if not units:
        raise SystemExit(f"no H.264 access units in {path}")
    return units


class Replay:
    """Pushes the clip's access units, looped, into the appsrc of the media that is playing (if any)."""

    def __init__(self, units: list[bytes], fps: float) -> None:
        self.units = units
        self.fps = fps
        self.appsrc = None
        self._media = None
        self.pushed = 0
        self.late = 0  # frames pushed more than 20 ms after they were due
        self.max_late_s = 0.0
        self.epoch = time.time() + 0.2
        self._start = time.monotonic() + 0.2

    def attach(self, factory: object, media: GstRtspServer.RTSPMedia) -> None:
        self._media = media
        self.appsrc = media.get_element().get_by_name("src")
        media.connect("unprepared", self.detach)

    def detach(self, media: GstRtspServer.RTSPMedia) -> None:
        if media is self._media:  # a media replaced by a newer one must not detach the newer one
            self.appsrc = self._media = None

    def run(self) -> None:
        index = 0
        while True:
            due = self._start + index / self.fps
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            elif -delay > 0.02:
                self.late += 1
                self.max_late_s = max(self.max_late_s, -delay)
            appsrc = self.appsrc
            if appsrc is not None:
                appsrc.emit("push-buffer", Gst.Buffer.new_wrapped(self.units[index % len(self.units)]))
                self.pushed += 1
            index += 1

    def report(self) -> bool:
        print(f"STATS pushed={self.pushed} late={self.late} max_late_ms={self.max_late_s * 1000:.0f}", flush=True)
        return True


def serve_replay(path: str, port: int, mount: str, fps: float) -> int:
    replay = Replay(read_access_units(path), fps)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(port))
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(LAUNCH)
    factory.set_shared(True)
    factory.connect("media-configure", replay.attach)
    server.get_mount_points().add_factory(f"/{mount}", factory)
    if server.attach(None) == 0:
        print("cannot bind", file=sys.stderr, flush=True)
        return 1
    threading.Thread(target=replay.run, daemon=True).start()
    GLib.timeout_add_seconds(10, replay.report)
    print(f"READY epoch={replay.epoch:.6f} frames={len(replay.units)}", flush=True)
    GLib.MainLoop().run()
    return 0
