"""``inspector bench labels``: how many labelled pairs a crack model needs, with and without pre-training.

The progressive pre-training (PPT) claim is about label efficiency: self-supervised stages on
unlabelled images (masked reconstruction, visible<->IR alignment) should let the supervised stage
reach a given quality with fewer labelled pairs and in fewer steps. This benchmark measures it here:

1. pre-train one model on all of ``--data``'s images, masks unused (``inspector train --steps 0
   --pretrain-steps P``);
2. for each labelled-pair count N, fine-tune twice with the same recipe and seed: from scratch and
   from the pre-trained weights (``--limit N`` [``--init``]);
3. evaluate every model on held-out parts and read the validation curves of the supervised stage.

It prints pixel F1 per count for both arms, the labelled pairs each arm needs to reach a target F1
(interpolated on a log scale, or "not reached"), the supervised steps each needs to reach a share of
its final validation F1, and a plot.
"""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from inspector.commands.bench import bench_app, emit, machine
from inspector.commands.common import console, fail
from inspector.commands.evaluate import evaluate_folder
from inspector.commands.predict import load_model, predict_folder
from inspector.commands.train import train


def pairs_to_reach(counts: list[int], f1s: list[float], target: float) -> float | None:
    """Labelled pairs at which F1 first reaches ``target``, interpolated in log(count); None if never."""
    points = sorted(zip(counts, f1s, strict=True))
    for (n0, f0), (n1, f1) in itertools.pairwise(points):
        if f0 >= target:
            return float(n0)
        if f1 >= target:
            share = (target - f0) / (f1 - f0)
            return float(math.exp(math.log(n0) + share * (math.log(n1) - math.log(n0))))
    if points and points[-1][1] >= target:
        return float(points[-1][0])
    return None


def steps_to_reach(curve: list[tuple[int, float]], share: float) -> int | None:
    """First evaluation step whose validation F1 reaches ``share`` of the curve's last value."""
    if not curve:
        return None
    goal = share * curve[-1][1]
    return next((step for step, value in curve if value >= goal), None)


def validation_curve(metrics: Path) -> list[tuple[int, float]]:
    """``(step, val_f1)`` of the supervised stage, from a training run's metrics.jsonl."""
    rows = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    return [(int(r["step"]), float(r["val_f1"])) for r in rows if r.get("split") == "eval" and "val_f1" in r]


def plot_label_curves(results: dict[str, dict[int, float]], target: float, path: Path) -> None:
    """Held-out F1 against labelled pairs (log scale), one line per arm."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for arm, by_count in results.items():
        counts = sorted(by_count)
        ax.plot(counts, [by_count[n] for n in counts], marker="o", label=arm)
    ax.axhline(target, color="grey", linestyle="--", linewidth=1, label=f"target F1 {target}")
    ax.set_xscale("log")
    ax.set_xlabel("labelled training pairs")
    ax.set_ylabel("held-out pixel F1 (2 px tolerance)")
    ax.set_title("label efficiency, synthetic data")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


@bench_app.command("labels")
def bench_labels(
    data: Annotated[Path, typer.Option("--data", help="Training folder: labelled subsets and the unlabelled pool.")],
    val: Annotated[Path, typer.Option("--val", help="Validation folder (for the learning curves).")],
    heldout: Annotated[Path, typer.Option("--heldout", help="Held-out folder the figures are measured on.")],
    out: Annotated[Path, typer.Option("--out", help="Models, runs, bench.json and labels.png go here.")],
    counts: Annotated[str, typer.Option(help="Labelled-pair counts, comma-separated.")] = "25,100,900",
    fusion: Annotated[str, typer.Option(help="Model variant.")] = "hffn",
    steps: Annotated[int, typer.Option(min=1, help="Supervised steps of every fine-tuning run.")] = 300,
    pretrain_steps: Annotated[int, typer.Option(min=1, help="Steps of each pre-training stage.")] = 200,
    target: Annotated[float, typer.Option(help="The F1 whose label cost is reported.")] = 0.9,
    limit: Annotated[int | None, typer.Option(help="Only the first N held-out parts.")] = 100,
    batch: Annotated[int, typer.Option(min=1, help="Tiles per batch (as inspector train).")] = 8,
    tile: Annotated[int, typer.Option(help="Tile side (as inspector train).")] = 256,
    width: Annotated[int, typer.Option(min=8, help="Model width (as inspector train).")] = 32,
    threads: Annotated[int | None, typer.Option(help="CPU threads for torch.")] = None,
) -> None:
    """Labelled pairs (and supervised steps) needed with and without progressive pre-training."""
    try:
        sizes = sorted({int(c) for c in counts.split(",") if c.strip()})
    except ValueError:
        fail(f"--counts {counts!r}: give whole numbers separated by commas, e.g. 25,100,900")
    if not sizes or sizes[0] < 1:
        fail("--counts needs at least one count >= 1")
    common: dict[str, Any] = {
        "data": data, "val": val, "fusion": fusion, "threads": threads, "progress": False,
        "batch": batch, "tile": tile, "width": width,
    }  # fmt: skip
    pretrained = out / f"{fusion}-pretrained.pt"
    train(
        out=pretrained, steps=0, pretrain_steps=pretrain_steps, workdir=out / "runs" / "pretrained", **common
    )  # fmt: skip
    f1: dict[str, dict[int, float]] = {"scratch": {}, "ppt": {}}
    curves: dict[str, dict[int, list[tuple[int, float]]]] = {"scratch": {}, "ppt": {}}
    figures: dict[str, dict[int, Any]] = {"scratch": {}, "ppt": {}}
    for n in sizes:
        for arm, init in (("scratch", None), ("ppt", pretrained)):
            name = f"{fusion}-{arm}-{n}"
            workdir = out / "runs" / name
            train(out=out / f"{name}.pt", steps=steps, limit=n, init=init, workdir=workdir, **common)
            model = load_model(str(out / f"{name}.pt"))
            predicted = out / "predictions" / name
            predict_folder(heldout, predicted, model, limit, show_progress=True)
            report = evaluate_folder(heldout, predicted, show_progress=True).report()
            f1[arm][n] = report.pixel["f1"]
            figures[arm][n] = {
                "pixel": report.pixel,
                "defect_crack_recall": report.defect_crack_recall,
                "false_reject_rate": report.parts["false_reject_rate"],
            }
            curves[arm][n] = validation_curve(workdir / "metrics.jsonl")
    plot_label_curves(f1, target, out / "labels.png")
    full = sizes[-1]
    costs: dict[str, dict[str, float | None]] = {
        "pairs_to_target": {a: pairs_to_reach(sizes, [f1[a][n] for n in sizes], target) for a in f1},
        "pairs_to_scratch_best": {
            a: pairs_to_reach(sizes, [f1[a][n] for n in sizes], max(f1["scratch"].values())) for a in f1
        },
        "steps_to_90pct_final_val_f1_at_full_labels": {
            a: None if (s := steps_to_reach(curves[a][full], 0.9)) is None else float(s) for a in f1
        },
    }
    document = {
        "benchmark": "labels",
        "data": str(data),
        "heldout": str(heldout),
        "heldout_parts": limit,
        "fusion": fusion,
        "supervised_steps": steps,
        "pretrain_steps_per_stage": pretrain_steps,
        "counts": sizes,
        "target_f1": target,
        "f1": f1,
        "figures": figures,
        **costs,
        "validation_curves": {arm: {str(n): c for n, c in by_n.items()} for arm, by_n in curves.items()},
        "machine": machine(),
    }
    (out / "bench.json").write_text(json.dumps(document, indent=1) + "\n")
    table = Table("labelled pairs", "F1 from scratch", "F1 with PPT", title=f"{fusion}, {steps} supervised steps")
    for n in sizes:
        table.add_row(str(n), f"{f1['scratch'][n]:.3f}", f"{f1['ppt'][n]:.3f}")
    for key, values in costs.items():
        table.add_row(key, *(("not reached" if values[a] is None else f"{values[a]:.0f}") for a in ("scratch", "ppt")))
    emit(document, table, as_json=False)
    console.print(f"plot: {out / 'labels.png'}")
