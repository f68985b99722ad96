"""Tables, JSON and the Pareto plot of tools/eval.py's results."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


def mean_over_clips(per_clip: dict[str, dict[str, dict[str, float]]]) -> dict[str, dict[str, float]]:
    """Each method's metrics averaged over the clips of a ``{clip: {method: {metric: value}}}`` report."""
    first = next(iter(per_clip.values()))
    return {method: {metric: float(np.mean([rows[method][metric] for rows in per_clip.values()]))
                     for metric in metrics} for method, metrics in first.items()}


@dataclass
class MethodResult:
    psnr: list[float] = field(default_factory=list)
    ssim: list[float] = field(default_factory=list)
    flicker: list[float] = field(default_factory=list)
    frames: int = 0
    seconds: float = 0.0
    setting: str = ""
    baseline_seconds: float = 0.0

    def fps(self) -> float:
        """Frames per second; for FFmpeg, the pass-through run's time (I/O, startup) is subtracted (floor 5%)."""
        busy = max(self.seconds - self.baseline_seconds, 0.05 * self.seconds)
        return self.frames / busy if busy > 0 else float("nan")


def markdown_table(title: str, clip_names: list[str], results: dict[str, MethodResult]) -> str:
    header = ["method", *clip_names, "mean PSNR", "Δ vs input", "SSIM", "flicker", "fps", "setting"]
    lines = [f"### {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    reference = float(np.mean(results["input"].psnr))
    for name, result in results.items():
        mean = float(np.mean(result.psnr))
        fps = f"{result.fps():.1f}" if result.seconds > 0 else "-"
        flickers = [v for v in result.flicker if not np.isnan(v)]
        cells = [
            name,
            *(f"{v:.2f}" for v in result.psnr),
            f"**{mean:.2f}**",
            f"{mean - reference:+.2f}",
            f"{np.mean(result.ssim):.4f}",
            f"{np.mean(flickers):.2f}" if flickers else "-",
            fps,
            f"`{result.setting}`",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot_pareto(all_results: dict[str, dict[str, MethodResult]], path: Path) -> None:
    try:
        import matplotlib
    except ImportError:
        print(f"matplotlib is not installed: no {path.name} (the tables and JSON are written)")
        return

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(all_results), figsize=(5 * len(all_results), 4.2), squeeze=False)
    for axis, (title, results) in zip(axes[0], all_results.items(), strict=True):
        for name, result in results.items():
            if result.seconds <= 0:
                axis.axhline(np.mean(result.psnr), color="grey", linestyle="--", label="input")
                continue
            axis.scatter(result.fps(), np.mean(result.psnr), label=name)
            axis.annotate(name, (result.fps(), np.mean(result.psnr)), fontsize=8)
        axis.set_xscale("log")
        axis.set_xlabel("fps (640x360, 2 CPU threads)")
        axis.set_ylabel("RGB PSNR (dB)")
        axis.set_title(title)
        axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def write_results(
    out_dir: Path, report: list[str], names: list[str], all_results: dict[str, dict[str, MethodResult]]
) -> None:
    """results.md (the tables), results.json (every figure) and pareto.png under ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "results.md").write_text("\n".join(report))
    summary = {
        d: {
            m: {
                "psnr": r.psnr,
                "ssim": r.ssim,
                "flicker": r.flicker,
                "frames": r.frames,
                "seconds": r.seconds,
                "fps": r.fps(),
                "setting": r.setting,
            }
            for m, r in res.items()
        }
        for d, res in all_results.items()
    }
    (out_dir / "results.json").write_text(json.dumps({"clips": names, "results": summary}, indent=1))
    plot_pareto(all_results, out_dir / "pareto.png")
