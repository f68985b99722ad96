"""One job's child process: ``python -m streamer.jobs.worker SOURCE TARGET [options]``.

It lowers its own CPU priority first (niceness, and SCHED_IDLE on Linux), so that every thread it starts
afterwards — ONNX Runtime's intra-op pool, FFmpeg's decoder and x264's encoder threads — inherits it and
gets only the CPU time the live cameras leave. It then restores every frame of SOURCE with the full model
(``FileRestorer``) into TARGET and reports on stdout as JSON lines, one event each:

    {"event": "priority", "nice": 19, "idle_class": true}
    {"event": "total", "frames": 240}                       (null when the container does not say)
    {"event": "engine", "engine": "onnxruntime-cpu lite int8 (1 thread)"}
    {"event": "progress", "frames": 57, "elapsed_s": 4.1}   (at most every PROGRESS_INTERVAL_S)
    {"event": "done", "frames": 240, "elapsed_s": 17.0}
    {"event": "error", "error": "..."}                      (then exit status 1)

TARGET is written under a temporary name and renamed when complete. Anything a library prints on stdout
goes to stderr instead (the events have the real stdout to themselves).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import IO, Any

PROGRESS_INTERVAL_S = 0.25


def lower_priority(nice: int, idle_class: bool) -> dict[str, Any]:
    """Raise this process's niceness to ``nice`` and, on Linux, move it to SCHED_IDLE; what was reached.

    With Linux's autogroup scheduling (the default on desktop and server kernels for processes outside CPU
    cgroups) the CPU is shared between sessions first and only then between a session's threads. The server
    starts the worker in a session of its own, and the worker lowers that group's weight too (nice 19 in
    /proc/self/autogroup): in the server's group, the job's CPU time would be charged to the server and
    delay the live cameras whenever other processes compete for the cores; in a group of its own at nice 0
    it would get half of the machine whatever its threads' niceness."""
    current = os.nice(0)
    if nice > current:
        current = os.nice(nice - current)
    autogroup = None
    if os.getsid(0) == os.getpid():  # a session of its own is, with autogroup scheduling, a group of its own
        with contextlib.suppress(OSError):
            Path("/proc/self/autogroup").write_text(str(nice))
            autogroup = Path("/proc/self/autogroup").read_text().split()[-1]
    idle = False
    if idle_class and hasattr(os, "sched_setscheduler") and hasattr(os, "SCHED_IDLE"):
        try:
            os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
            idle = True
        except OSError:
            idle = False
    return {"nice": current, "idle_class": idle, "autogroup_nice": autogroup}


def count_frames(path: Path) -> int | None:
    """Frames in the first video stream: the container's count, else its packets counted (no decoding)."""
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        if stream.frames:
            return int(stream.frames)
        return sum(1 for packet in container.demux(stream) if packet.size)


class Events:
    def __init__(self, out: IO[str]) -> None:
        self.out = out

    def emit(self, event: str, **fields: Any) -> None:
        self.out.write(json.dumps({"event": event, **fields}) + "\n")
        self.out.flush()


def restore(args: argparse.Namespace, events: Events) -> None:
    from engines import activate_engine
    from streamer.config import ExposureConfig
    from streamer.restore_file import FileRestorer

    source, target = Path(args.source), Path(args.target)
    events.emit("total", frames=count_frames(source))
    engine = activate_engine(args.engine, args.model, args.threads, int8=args.int8)
    with engine:
        events.emit("engine", engine=engine.describe())
        started = last = time.monotonic()

        def on_frame(frames: int) -> None:
            nonlocal last
            now = time.monotonic()
            if now - last >= PROGRESS_INTERVAL_S:
                last = now
                events.emit("progress", frames=frames, elapsed_s=round(now - started, 3))

        partial = target.with_name(f".partial-{target.name}")
        restorer = FileRestorer(engine, exposure=ExposureConfig(enabled=args.exposure))
        frames = restorer.run(source, partial, progress=False, on_frame=on_frame)
        partial.replace(target)
        events.emit("done", frames=frames, elapsed_s=round(time.monotonic() - started, 3))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m streamer.jobs.worker", description=__doc__.split("\n\n")[0])
    parser.add_argument("source", help="video file to restore")
    parser.add_argument("target", help="result file (.mp4: H.264)")
    parser.add_argument("--engine", default="auto", help="engine type (auto, cpu, tensorrt, cuda, passthrough)")
    parser.add_argument("--model", default=None, help="shipped model name or ONNX file (default: lite)")
    parser.add_argument("--threads", type=int, default=1, help="CPU inference threads")
    parser.add_argument("--float", dest="int8", action="store_false", help="CPU: the float model, not its int8 twin")
    parser.add_argument("--nice", type=int, default=19, help="niceness to run at (0-19)")
    parser.add_argument("--no-idle-class", dest="idle_class", action="store_false", help="do not use SCHED_IDLE")
    parser.add_argument("--exposure", action="store_true", help="brighten dark scenes after restoration")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    events = Events(os.fdopen(os.dup(sys.stdout.fileno()), "w", encoding="utf-8"))
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # stray prints of libraries: to stderr, not the events
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    logging.getLogger("libav").setLevel(logging.ERROR)
    events.emit("priority", **lower_priority(args.nice, args.idle_class))
    try:
        restore(args, events)
    except Exception as error:  # reported to the server as the job's error; the traceback on stderr
        logging.getLogger(__name__).debug("job failed", exc_info=True)
        events.emit("error", error=str(error) or type(error).__name__)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
