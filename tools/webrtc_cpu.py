"""CPU of a `streamer run` process per WebRTC viewer: encode once means an extra viewer costs only its
packetising, encryption and sending, never an encode.

Runs the demo camera (passthrough engine) in its own process, then measures its CPU over ``--seconds``
with 0, 1, 2, ... ``--viewers`` aiortc WHEP players (in this process) watching. Figures depend on the
machine and what else runs on it: say so when you quote them.

    python tools/webrtc_cpu.py --viewers 4 --size 640x360
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tools.arguments import frame_size  # noqa: E402
from tools.live_peers import LoggedProcess, cpu_seconds, free_port, scrape, total  # noqa: E402
from tools.whep_client import WhepPlayer  # noqa: E402

CONFIG = """cameras:
  - name: cam
    source: {{type: demo, width: {width}, height: {height}, fps: 25}}
    engine: {{type: passthrough}}
server:
  rtsp: {{host: 127.0.0.1, port: {rtsp}}}
  http: {{host: 127.0.0.1, port: {http}}}
  webrtc: {{ice_host_addresses: [127.0.0.1]}}
"""


async def measure(http: int, pid: int, viewers: int, seconds: float) -> tuple[float, float, int]:
    """(CPU % of the streamer, frames per viewer per second (mean), dropped units) with ``viewers`` watching."""
    players = [WhepPlayer(f"http://127.0.0.1:{http}/whep/cam") for _ in range(viewers)]
    try:
        for player in players:
            await player.start()
            await player.first_frame(10)
        await asyncio.sleep(2.0)  # settle
        cpu, started = cpu_seconds(pid), time.monotonic()
        frames = [len(player.frames) for player in players]
        await asyncio.sleep(seconds)
        elapsed = time.monotonic() - started
        usage = 100 * (cpu_seconds(pid) - cpu) / elapsed
        rates = [(len(player.frames) - before) / elapsed for player, before in zip(players, frames, strict=True)]
        drops = int(total(scrape(http), "streamer_webrtc_viewer_dropped_units_total"))
        return usage, sum(rates) / len(rates) if rates else 0.0, drops
    finally:
        for player in players:
            await player.stop()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--viewers", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--size", type=frame_size, default="640x360")
    args = parser.parse_args()
    width, height = args.size
    http = free_port()
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as config:
        config.write(CONFIG.format(width=width, height=height, rtsp=free_port(), http=http))
    streamer = LoggedProcess([sys.executable, "-m", "streamer", "run", "--config", config.name])
    streamer.start("health and metrics at", 60)
    try:
        print(f"streamer CPU per WebRTC viewer, demo {width}x{height} @ 25 fps, passthrough")
        for viewers in range(args.viewers + 1):
            usage, rate, drops = await measure(http, streamer.pid, viewers, args.seconds)
            print(f"  {viewers} viewer(s): streamer CPU {usage:5.1f} %, {rate:4.1f} fps per viewer, "
                  f"{drops} units dropped")
    finally:
        streamer.stop()
        await asyncio.to_thread(Path(config.name).unlink)


if __name__ == "__main__":
    asyncio.run(main())
