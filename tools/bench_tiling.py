"""Tiled vs whole-frame restoration: seam PSNR per tile/overlap at 1080p, speed, and 4K speed and memory.

A 5-frame window of a 1920x1080 clip (``--clip``: a video or an image sequence; default the val/ 1080p
street market of ../shared/media where present, else synthetic demo frames) with Gaussian noise (σ 15) is
restored whole and in tiles; the tables give PSNR of tiled vs whole output (whole frame, and only the
pixels within 32 px of a tile edge), the largest difference in 8-bit levels, and ms per frame. At
3840x2160 (the same window upscaled x2) whole and tiled run each in a child process of its own, so that
each one's peak RSS over its calls (ONNX Runtime's arena included; Linux resets the peak before the first
call) and tracemalloc peak of its first call (numpy allocations only) are its own.

    python -m tools.bench_tiling --out tiling.json
    python -m tools.bench_tiling --model lite-detail --settings 512:32 512:64 --skip-4k
    python -m tools.bench_tiling --settings 512:32 --uhd 512:32 256:32 --runs-4k 5
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np

from engines import Engine, activate_engine
from engines.tiling import DEFAULT_OVERLAP, DEFAULT_TILE, TiledEngine, plan_axis, plan_tiles

REPO = Path(__file__).resolve().parents[1]
# ../shared/media beside the checkout (or beside the folder of worktrees holding it)
DEFAULT_CLIP = next(
    (base / "shared/media/val/ytvos_street_market_crowd_1080p" for base in (REPO.parent, REPO.parent.parent)
     if (base / "shared/media/val/ytvos_street_market_crowd_1080p").exists()),
    REPO.parent / "shared/media/val/ytvos_street_market_crowd_1080p",
)
SEAM_BAND = 32


def load_window(clip: str | None, width: int, height: int, frames: int, sigma: float, seed: int = 0) -> tuple[
        list[np.ndarray], str]:
    """``frames`` consecutive RGB frames at ``width`` x ``height`` with Gaussian noise ``sigma`` added."""
    path = Path(clip) if clip else DEFAULT_CLIP
    if path.exists():
        from tools.degrade import read_clip

        clean = list(read_clip(path, 0, frames, (width, height)))
        source = path.resolve().name
    else:
        from streamer.sources.demo import DemoScene

        scene = DemoScene(width, height, seed)
        clean = [scene.frame(index * 3, 25.0) for index in range(frames)]
        source = "synthetic demo scene"
    rng = np.random.default_rng(seed)
    noisy = [np.clip(frame + rng.normal(0, sigma, frame.shape), 0, 255).astype(np.uint8) for frame in clean]
    return noisy, source


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else float(10 * np.log10(255.0**2 / mse))


def seam_mask(height: int, width: int, tile: int, overlap: int, multiple: int, band: int = SEAM_BAND) -> np.ndarray:
    """Pixels within ``band`` px of an inner tile edge (where a tile's border effects could show)."""
    mask = np.zeros((height, width), dtype=bool)
    for spans, length, axis in ((plan_axis(height, tile, overlap, multiple), height, 0),
                                (plan_axis(width, tile, overlap, multiple), width, 1)):
        edges = [start for start, _ in spans if start > 0] + [end for _, end in spans if end < length]
        for edge in edges:
            lo, hi = max(0, edge - band), min(length, edge + band)
            if axis == 0:
                mask[lo:hi] = True
            else:
                mask[:, lo:hi] = True
    return mask


def median_ms(engine: Engine, clip: list[np.ndarray], runs: int, first: int = 0) -> float:
    """Median ms of ``runs`` calls, each on the next 5-frame window of ``clip`` from ``first`` (as live)."""
    timings = []
    for index in range(first, first + runs):
        started = time.perf_counter()
        engine.infer(clip[index : index + 5])
        timings.append(time.perf_counter() - started)
    return float(np.median(timings) * 1000)


def compare(tiled: np.ndarray, whole: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    return {
        "psnr_db": round(psnr(tiled, whole), 2),
        "seam_psnr_db": round(psnr(tiled[mask], whole[mask]), 2) if mask.any() else float("inf"),
        "max_diff": int(np.abs(tiled.astype(np.int16) - whole).max()),
        "differing_pct": round(float(np.mean(np.any(tiled != whole, axis=2)) * 100), 4),
    }


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def _reset_peak_rss() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return _status_kb("VmHWM") > 0


def child(args: argparse.Namespace) -> int:
    """One 4K measurement in this process: ``--child whole`` or ``--child tiled``."""
    clip, _ = load_window(args.clip, 1920, 1080, 5 + args.runs_4k, args.sigma)
    clip = [np.repeat(np.repeat(frame, 2, axis=0), 2, axis=1) for frame in clip]  # 3840x2160
    window = clip[:5]
    inner = activate_engine("cpu", args.model, threads=args.threads)
    engine: Engine = inner if args.child == "whole" else TiledEngine(inner, args.tile, args.overlap)
    rss_before = _status_kb("VmRSS")
    reset = _reset_peak_rss()  # Linux: VmHWM restarts from the current RSS
    baseline = rss_before if reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    tracemalloc.start()
    started = time.perf_counter()
    first = engine.infer(window)
    first_ms = (time.perf_counter() - started) * 1000
    _, traced_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    ms = median_ms(engine, clip, args.runs_4k, first=1)
    peak = _status_kb("VmHWM") if reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    retained = _status_kb("VmRSS") - rss_before
    np.save(args.save, first)
    json.dump({"first_ms": round(first_ms, 1), "ms": round(ms, 1), "peak_rss_delta_mb": round((peak - baseline) / 1024, 1),
               "retained_rss_mb": round(retained / 1024, 1),
               "tracemalloc_peak_mb": round(traced_peak / 2**20, 1), "runs": args.runs_4k}, sys.stdout)
    return 0


def run_child(args: argparse.Namespace, setting: str, save: Path) -> dict[str, Any]:
    """``setting`` is ``whole`` or TILE:OVERLAP."""
    tile, overlap = setting.split(":") if setting != "whole" else (str(DEFAULT_TILE), str(DEFAULT_OVERLAP))
    command = [sys.executable, "-m", "tools.bench_tiling", "--child", "whole" if setting == "whole" else "tiled",
               "--save", str(save), "--model", args.model, "--threads", str(args.threads), "--sigma",
               str(args.sigma), "--tile", tile, "--overlap", overlap, "--runs-4k", str(args.runs_4k)]
    if args.clip:
        command += ["--clip", args.clip]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clip", help="video or image sequence (default: val/ytvos_street_market_crowd_1080p)")
    parser.add_argument("--model", default="lite")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--sigma", type=float, default=15.0)
    parser.add_argument("--settings", nargs="+", default=["512:0", "512:16", "512:32", "512:48", "256:32", "768:32", "1024:32"],
                        help="TILE:OVERLAP pairs compared at 1080p")
    parser.add_argument("--uhd", nargs="+", default=[f"{DEFAULT_TILE}:{DEFAULT_OVERLAP}", "1024:32"],
                        help="TILE:OVERLAP pairs run at 3840x2160 (beside the whole frame)")
    parser.add_argument("--tile", type=int, default=DEFAULT_TILE, help=argparse.SUPPRESS)
    parser.add_argument("--overlap", type=int, default=DEFAULT_OVERLAP, help=argparse.SUPPRESS)
    parser.add_argument("--runs", type=int, default=9, help="timed calls per 1080p setting (median)")
    parser.add_argument("--runs-4k", type=int, default=3, help="timed runs at 4K after the first (median)")
    parser.add_argument("--skip-4k", action="store_true")
    parser.add_argument("--out", type=Path, help="write the results as JSON")
    parser.add_argument("--child", choices=["whole", "tiled"], help=argparse.SUPPRESS)
    parser.add_argument("--save", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child(args)

    clip, source = load_window(args.clip, 1920, 1080, 4 + args.runs, args.sigma)
    window = clip[:5]
    whole_engine = activate_engine("cpu", args.model, threads=args.threads)
    inner = activate_engine("cpu", args.model, threads=args.threads)  # the tiled engines' own session
    multiple = inner.info.pad_multiple
    whole = whole_engine.infer(window)
    rows: list[dict[str, Any]] = []
    engines: dict[str, Engine] = {"whole": whole_engine}
    for setting in args.settings:
        tile, overlap = (int(part) for part in setting.split(":"))
        tiled_engine = TiledEngine(inner, tile, overlap)
        tiled = tiled_engine.infer(window)
        row: dict[str, Any] = {"tile": tile, "overlap": overlap, "tiles": tiled_engine.layout(1080, 1920).tiles}
        row.update(compare(tiled, whole, seam_mask(1080, 1920, tile, overlap, multiple)))
        rows.append(row)
        engines[setting] = tiled_engine
    # Timing: round robin over the engines (load drifts on a shared machine), each call on the next window of
    # the clip as live does (the whole-frame engine converts one new frame per window, the others are cached).
    timings: dict[str, list[float]] = {name: [] for name in engines}
    for index in range(args.runs):
        for name, engine in engines.items():
            timings[name].append(median_ms(engine, clip, 1, first=index) / 1000)
    whole_ms = float(np.median(timings["whole"]) * 1000)
    for setting, row in zip(args.settings, rows, strict=True):
        row["ms"] = round(float(np.median(timings[setting]) * 1000), 1)
    results: dict[str, Any] = {
        "model": whole_engine.describe(), "source": source, "sigma": args.sigma, "window": len(window),
        "runs": args.runs, "whole_1080p_ms": round(whole_ms, 1), "settings_1080p": rows,
    }
    print(f"{whole_engine.describe()}, {source} at 1920x1080, σ {args.sigma:g}, window {len(window)}, "
          f"medians of {args.runs} calls round robin\n")
    print("| tile | overlap | tiles | PSNR tiled vs whole | PSNR within 32 px of a tile edge | max diff | "
          "pixels differing | ms per frame |")
    print("|---|---|---|---|---|---|---|---|")
    print(f"| whole frame | | 1 | | | | | {whole_ms:.0f} |")
    for row in rows:
        print(f"| {row['tile']} | {row['overlap']} | {row['tiles']} | {row['psnr_db']:.2f} dB | "
              f"{row['seam_psnr_db']:.2f} dB | {row['max_diff']} | {row['differing_pct']:.3f} % | {row['ms']:.0f} |")
    whole_engine.deactivate()
    inner.deactivate()
    if not args.skip_4k:
        big: dict[str, dict[str, Any]] = {}
        with tempfile.TemporaryDirectory() as folder:
            for setting in ["whole", *args.uhd]:
                big[setting] = run_child(args, setting, Path(folder) / f"{setting}.npy")
            whole4k = np.load(Path(folder) / "whole.npy")
            for setting in args.uhd:
                tile, overlap = (int(part) for part in setting.split(":"))
                tiled4k = np.load(Path(folder) / f"{setting}.npy")
                big[setting].update(compare(tiled4k, whole4k, seam_mask(2160, 3840, tile, overlap, multiple)))
                big[setting]["tiles"] = len(plan_tiles(2160, 3840, tile, overlap, multiple))
        results["uhd_3840x2160"] = big
        print(f"\n3840x2160 (the window upscaled x2), one child process each, median of {args.runs_4k} calls after "
              "the first:\n")
        print("| | tiles | ms per frame (first call) | ms per frame | peak RSS increase | "
              "RSS kept after | tracemalloc peak (numpy) | PSNR vs whole (within 32 px of a tile edge) |")
        print("|---|---|---|---|---|---|---|---|")
        for setting, entry in big.items():
            quality = f"{entry['psnr_db']:.2f} dB ({entry['seam_psnr_db']:.2f} dB)" if setting != "whole" else ""
            print(f"| {setting} | {entry.get('tiles', 1)} | {entry['first_ms']:.0f} | {entry['ms']:.0f} | "
                  f"{entry['peak_rss_delta_mb']:.0f} MB | {entry['retained_rss_mb']:.0f} MB | "
                  f"{entry['tracemalloc_peak_mb']:.0f} MB | {quality} |")
    if args.out:
        args.out.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
