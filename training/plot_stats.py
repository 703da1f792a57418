"""Plot the quality measure of one or more training runs (their stats.jsonl) against minutes and kimg.

    python -m training.plot_stats runs/fast64 runs/ada64 --labels "fast (projected D)" "ada" \\
        --out docs/img/recipe-race.png

Four panels: descriptor FD (log scale, with the real-vs-real floor) and HOG share (with the share on real
crops), each against training minutes (evaluation and snapshot time excluded) and against kimg.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

from training.options import add_options, layered_values, opt


@dataclass(frozen=True)
class PlotOptions:
    runs: tuple[str, ...] = opt(None, "run folders (each with a stats.jsonl) or stats .jsonl files",
                                positional=True, nargs="+")
    labels: tuple[str, ...] | None = opt(None, "legend names (default: the folder names)", nargs="+")
    psi: str = opt("", "plot the figures at this truncation (e.g. 0.7; default psi 1)")
    out: str = opt(None, "output PNG", required=True)


def read_quality(run: str | Path) -> list[dict]:
    """The quality records (lines with Quality/* keys) of a run folder's stats.jsonl (or of a .jsonl file)."""
    path = Path(run) if Path(run).is_file() else Path(run) / "stats.jsonl"
    lines = path.read_text().splitlines()
    return [r for r in map(json.loads, lines) if "Quality/fd_dlib" in r]


def plot(runs: list[str], labels: list[str], out: str, psi: str = "") -> None:
    """Write the four-panel PNG ``out``; ``psi`` '' = psi 1, or e.g. '0.7' for the truncated samples."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tag = f"_psi{psi}" if psi else ""
    fig, axes = plt.subplots(2, 2, figsize=(11, 7.5))
    floor = hog_real = None
    for run, label in zip(runs, labels):
        recs = read_quality(run)
        if not recs:
            raise SystemExit(f"{run}: no quality records in stats.jsonl (train with --quality-source)")
        minutes = [r["train_time_s"] / 60 for r in recs]
        kimg = [r["kimg"] for r in recs]
        fd = [r[f"Quality/fd_dlib{tag}"] for r in recs]
        hog = [100 * r[f"Quality/hog_share{tag}"] for r in recs]
        floor, hog_real = recs[-1]["Quality/fd_floor"], 100 * recs[-1]["Quality/hog_real"]
        for col, x in enumerate((minutes, kimg)):
            axes[0, col].plot(x, fd, marker="o", ms=3, label=label)
            axes[1, col].plot(x, hog, marker="o", ms=3, label=label)
    for col, xlabel in enumerate(("training minutes (2-core CPU)", "kimg (thousands of real images shown to D)")):
        axes[0, col].axhline(floor, color="k", ls="--", lw=1, label="real vs real floor")
        axes[0, col].set_yscale("log")
        axes[0, col].set_ylabel("dlib descriptor FD (lower is better)")
        axes[1, col].axhline(hog_real, color="k", ls="--", lw=1, label="real crops")
        axes[1, col].set_ylabel("% of samples where HOG finds a face")
        axes[1, col].set_ylim(0, 100)
        for row in range(2):
            axes[row, col].set_xlabel(xlabel)
            axes[row, col].grid(alpha=0.3)
            axes[row, col].legend(fontsize=8)
    fig.suptitle(f"Quality of G_ema samples{f' (truncation psi {psi})' if psi else ''}")
    fig.tight_layout()
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90)


def main(argv: list[str] | None = None) -> None:
    p = add_options(argparse.ArgumentParser(description=__doc__.split("\n\n")[0]), PlotOptions)
    a = PlotOptions(**layered_values(PlotOptions, p.parse_args(argv)))
    labels = a.labels or [Path(r).name for r in a.runs]
    if len(labels) != len(a.runs):
        p.error("give one --labels entry per run")
    plot(a.runs, labels, a.out, a.psi)
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
