"""The degradation ladder's table: each level's cost per frame at 360p / 720p / 1080p and its PSNR gain on
the validation clips (scenes never trained on), for noise σ25 and x264 CRF 37, in one run.

Cost: ``Level.restore`` end to end (scaling and RGB maths included), median of --runs calls on a 5-frame
window of a val clip, 2 inference threads. Quality: the first --frames frames of each val clip at 640x360,
degraded as tools/eval.py does (same seeds), every frame with a full window restored by each level; the
gain is the mean PSNR over the clips minus the degraded input's.

    python tools/ladder_table.py --out runs/ladder/table.json
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from engines import activate_engine  # noqa: E402
from streamer.ladder import Level, ModelLevel, ReducedResolutionLevel, TemporalLevel  # noqa: E402
from tools import degrade  # noqa: E402
from tools.eval import MEDIA, degradation_seed, degrade_clip, psnr  # noqa: E402
from tools.watch_demo import change_error  # noqa: E402

SIZES = {"360p": (640, 360), "720p": (1280, 720), "1080p": (1920, 1080)}


def levels(model: str, fast: str | None) -> tuple[list[Level], list[Any]]:
    full = activate_engine("cpu", model, threads=2)
    engines = [full]
    result: list[Level] = [ModelLevel("full", full)]
    cheapest = full
    if fast:
        cheapest = activate_engine("cpu", fast, threads=2)
        engines.append(cheapest)
        result.append(ModelLevel("fast", cheapest))
    result += [ReducedResolutionLevel(cheapest, 2), ReducedResolutionLevel(cheapest, 4), TemporalLevel()]
    return result, engines


def cost_ms(level: Level, clip: Path, size: tuple[int, int], runs: int) -> float:
    frames = list(degrade.read_clip(clip, 0, 5, size))
    level.restore(frames, 2)
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        level.restore(frames, 2)
        times.append(time.perf_counter() - started)
    return round(1000 * float(np.median(times)), 1)


def gains(level_list: list[Level], clips: list[Path], degradation: str, frames: int) -> dict[str, Any]:
    """Each level's PSNR gain, and flicker: the input's, each level's within itself, and at a switch between
    two levels (frame t-1 from one level, frame t from the other, both directions)."""
    per_level: dict[str, list[float]] = {level.name: [] for level in level_list}
    inputs: list[float] = []
    steady: dict[str, list[float]] = {level.name: [] for level in level_list}
    switches: dict[str, list[float]] = {}
    input_flicker: list[float] = []
    for clip in clips:
        clean = degrade.read_clip(clip, 0, frames, (640, 360))
        reference, degraded = degrade_clip(degradation, clean, degradation_seed(degradation, [degradation], 0))
        indices = range(2, len(clean) - 2)
        inputs.append(float(np.mean([psnr(degraded[index], reference[index]) for index in indices])))
        outputs = {level.name: {index: level.restore(list(degraded[index - 2:index + 3]), 2) for index in indices}
                   for level in level_list}
        for level in level_list:
            per_level[level.name].append(float(np.mean([psnr(outputs[level.name][index], reference[index])
                                                        for index in indices])))
        pairs = [index for index in indices if index - 1 in outputs[level_list[0].name]]
        input_flicker += [change_error(degraded[i - 1], degraded[i], reference[i - 1], reference[i]) for i in pairs]
        for level in level_list:
            out = outputs[level.name]
            steady[level.name] += [change_error(out[i - 1], out[i], reference[i - 1], reference[i]) for i in pairs]
        for upper, lower in itertools.combinations(level_list, 2):
            for first, second in ((upper, lower), (lower, upper)):
                one, two = outputs[first.name], outputs[second.name]
                switches.setdefault(f"{first.name}->{second.name}", []).extend(
                    change_error(one[i - 1], two[i], reference[i - 1], reference[i]) for i in pairs)
    base = float(np.mean(inputs))
    return ({"input_db": round(base, 2)}
            | {name: round(float(np.mean(values)) - base, 2) for name, values in per_level.items()}
            | {"flicker": {"input": round(float(np.mean(input_flicker)), 3)}
               | {name: round(float(np.mean(values)), 3) for name, values in steady.items()}
               | {name: round(float(np.mean(values)), 3) for name, values in switches.items()}})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="lite")
    parser.add_argument("--fast", help="the 'fast' level's model (e.g. lite under lite-detail)")
    parser.add_argument("--frames", type=int, default=12, help="frames per val clip")
    parser.add_argument("--runs", type=int, default=7, help="timed calls per level and size (0: no costs)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    clips = sorted(path for path in (MEDIA / "val").iterdir() if not path.name.startswith("."))
    level_list, engines = levels(args.model, args.fast)
    try:
        costs = {size: {level.name: (cost_ms(level, clips[0], dims, args.runs) if args.runs else None)
                        for level in level_list} for size, dims in SIZES.items()}
        quality = {name: gains(level_list, clips, name, args.frames) for name in ("sigma25", "crf37")}
    finally:
        for engine in engines:
            engine.deactivate()
    print(f"| level | {' | '.join(f'ms {size}' for size in SIZES)} | gain σ25 | gain CRF 37 |")
    print("|---|" + "---|" * (len(SIZES) + 2))
    for level in level_list:
        print(f"| {level.name} ({level.describe()}) | " + " | ".join(str(costs[size][level.name]) for size in SIZES)
              + f" | {quality['sigma25'][level.name]:+.2f} dB | {quality['crf37'][level.name]:+.2f} dB |")
    print(f"input PSNR: σ25 {quality['sigma25']['input_db']} dB, CRF 37 {quality['crf37']['input_db']} dB "
          f"({len(clips)} val clips × {args.frames} frames, 640x360)")
    print("\nflicker (mean |frame-to-frame change − the clean change|, grey levels): the input, each level on its own, "
          "and a switch (frame t-1 at one level, frame t at the next)")
    print("| | " + " | ".join(quality["sigma25"]["flicker"]) + " |")
    print("|---|" + "---|" * len(quality["sigma25"]["flicker"]))
    for name in ("sigma25", "crf37"):
        print(f"| {name} | " + " | ".join(str(value) for value in quality[name]["flicker"].values()) + " |")
    if args.out:
        args.out.write_text(json.dumps({"model": args.model, "fast": args.fast, "costs_ms": costs,
                                        "gains_db": quality, "clips": [clip.name for clip in clips]}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
