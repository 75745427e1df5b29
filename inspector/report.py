"""Pictures for people: PR and POD curves, overlays and galleries of the worst cases (PNG files)."""

from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import matplotlib as mpl
import numpy as np

mpl.use("Agg")
import matplotlib.pyplot as plt

from inspector.pod import PodResult

TRUTH_ONLY = (40, 200, 40)  # green: a true crack pixel the prediction missed
PRED_ONLY = (230, 40, 40)  # red: predicted where there is no crack
BOTH = (250, 220, 30)  # yellow: found


def overlay(
    grey: np.ndarray, predicted: np.ndarray, truth: np.ndarray | None = None, size: int | None = None
) -> np.ndarray:
    """RGB picture of a visible image with predicted (red), true (green) and found (yellow) crack pixels.

    Args:
        grey: (H, W) uint8 visible image.
        predicted: (H, W) bool predicted crack pixels.
        truth: (H, W) bool true crack pixels, if known.
        size: longest side of the output; masks are max-pooled so thin cracks stay visible.

    """
    truth_known = truth is not None
    truth = np.zeros_like(predicted) if truth is None else truth
    image, pred, true = grey, predicted.astype(np.uint8), truth.astype(np.uint8)
    if size is not None and max(grey.shape) > size:
        factor = max(grey.shape) / size
        dsize = (round(grey.shape[1] / factor), round(grey.shape[0] / factor))
        kernel = np.ones((int(np.ceil(factor)),) * 2, np.uint8)
        image = np.asarray(cv2.resize(grey, dsize, interpolation=cv2.INTER_AREA), dtype=np.uint8)
        pred = np.asarray(cv2.resize(cv2.dilate(pred, kernel), dsize, interpolation=cv2.INTER_AREA), dtype=np.uint8)
        true = np.asarray(cv2.resize(cv2.dilate(true, kernel), dsize, interpolation=cv2.INTER_AREA), dtype=np.uint8)
    dimmed = (image.astype(np.uint16) * 4 // 5).astype(np.uint8)  # 0.8 x grey, in integers
    rgb = np.asarray(cv2.cvtColor(dimmed, cv2.COLOR_GRAY2RGB))
    p = pred > 0
    if truth_known:
        t = true > 0
        for sel, colour in ((t & ~p, TRUTH_ONLY), (p & ~t, PRED_ONLY), (p & t, BOTH)):
            rgb[sel] = colour
    else:
        rgb[p] = PRED_ONLY
    return rgb


def save_rgb(path: Path, rgb: np.ndarray) -> None:
    """Write an RGB uint8 array as PNG."""
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))


def plot_pr_curves(curves: Mapping[str, Sequence[Mapping[str, float]]], path: Path, title: str) -> None:
    """Precision-recall curves (one per model) with the operating point at threshold 0.5 marked."""
    fig, ax = plt.subplots(figsize=(5.5, 5), dpi=110)
    for name, curve in curves.items():
        recall = [p["recall"] for p in curve]
        precision = [p["precision"] for p in curve]
        (line,) = ax.plot(recall, precision, marker=".", label=name)
        at = [p for p in curve if abs(p["threshold"] - 0.5) < 1e-9]
        if at:
            ax.plot(at[0]["recall"], at[0]["precision"], "o", ms=9, mfc="none", color=line.get_color())
    ax.set(xlabel="recall (2 px tolerance)", ylabel="precision (2 px tolerance)", xlim=(0, 1.02), ylim=(0, 1.02))
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left", fontsize=8, title="○ = threshold 0.5", title_fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def plot_pod(results: Mapping[str, PodResult], path: Path, title: str) -> None:
    """POD against max width (log x axis, as the model is in ln a), one panel per model, side by side.

    Each panel shows the fitted curve, its one-sided 95% lower bound as a band, the cracks as jittered
    points at 1 (found) and 0 (missed), and a90 and a90/95 as annotated vertical lines; without a fit,
    the points; the reason there is no fit (or no a90/95) is written under the panel's title.
    """
    panels = max(len(results), 1)
    fig, axes = plt.subplots(1, panels, figsize=(4.6 * panels, 4.2), dpi=110, sharey=True, squeeze=False)
    sizes = [o.size_mm for r in results.values() for o in r.observations]
    low, high = (min(sizes) / 1.3, max(sizes) * 1.3) if sizes else (0.01, 1.0)
    marked = [r.fit.a90_95_mm for r in results.values() if r.fit is not None and r.fit.a90_95_mm is not None]
    high = max([high, *(1.2 * a for a in marked)])  # an a90/95 beyond the largest crack stays in view
    jitter = np.random.default_rng(0)
    for ax, (name, result) in zip(axes.ravel(), results.items(), strict=False):
        found = np.array([o.hit for o in result.observations], dtype=bool)
        a = np.array([o.size_mm for o in result.observations], dtype=np.float64)
        y = found + jitter.uniform(-0.03, 0.03, len(a))
        ax.scatter(a[found], y[found], s=8, alpha=0.5, color="tab:green", label="found")
        ax.scatter(a[~found], y[~found], s=8, alpha=0.5, color="tab:red", marker="x", label="missed")
        fit = result.fit
        if fit is not None:
            grid = np.geomspace(low, high, 200)
            pod, lower = fit.curve(grid)
            ax.plot(grid, pod, color="tab:blue", label="POD (logit on ln a)")
            ax.fill_between(grid, lower, pod, color="tab:blue", alpha=0.2, label="95% lower bound")
            ax.axhline(0.9, color="grey", lw=0.8, ls=":")
            for size, style, text in ((fit.a90_mm, "--", "a90"), (fit.a90_95_mm, "-", "a90/95")):
                if size is not None:
                    ax.axvline(size, color="black", lw=1, ls=style)
                    ax.annotate(
                        f"{text} = {size:.3f} mm", (size, 0.5), rotation=90, fontsize=7, ha="right", va="center"
                    )
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(mpl.ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(mpl.ticker.FormatStrFormatter("%g"))
        ax.xaxis.set_minor_formatter(mpl.ticker.NullFormatter())
        ax.set(xlim=(low, high), ylim=(-0.08, 1.08), xlabel="max width (mm, log scale)")
        why = f"\n{textwrap.fill(result.reason, 60)}" if result.reason else ""
        a90_95 = f", a90/95 {fit.a90_95_mm:.3f} mm" if fit is not None and fit.a90_95_mm is not None else ""
        ax.set_title(f"{name}: {result.hits}/{result.n} found{a90_95}{why}", fontsize=8)
        ax.grid(alpha=0.3, which="both")
    axes[0, 0].set_ylabel("probability of detection")
    axes[0, 0].legend(loc="center left", fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


@dataclass(frozen=True)
class GalleryItem:
    """One tile of a gallery."""

    title: str
    rgb: np.ndarray


def save_gallery(items: Sequence[GalleryItem], path: Path, title: str, columns: int = 4) -> None:
    """Tiles with titles in a grid, written as one PNG."""
    if not items:
        return
    rows = (len(items) + columns - 1) // columns
    fig, axes = plt.subplots(rows, columns, figsize=(3.2 * columns, 3.4 * rows), dpi=100, squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, item in zip(axes.ravel(), items, strict=False):
        ax.imshow(item.rgb)
        ax.set_title(item.title, fontsize=7)
    fig.suptitle(f"{title}\ngreen: missed   red: false   yellow: found", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
