"""``inspector prune``: a smaller, faster crack model (channels removed, fine-tuned), with a before/after report."""

from __future__ import annotations

import itertools
import os
import statistics
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from inspector.capture import CaptureRanges
from inspector.commands.common import console, fail
from inspector.crack_data import CrackTileSet
from inspector.dataset import DataError
from inspector.errors import InspectorError
from inspector.training import TileBatch, crack_loss, describe, to_batch, validation_batches, validation_f1


def median_ms(model: Any, example: dict[str, Any], repeats: int = 10) -> float:
    """Median milliseconds of one forward pass on ``example`` (after two warm-up calls)."""
    import torch

    times = []
    with torch.inference_mode():
        for index in range(repeats + 2):
            t0 = time.perf_counter()
            model(**example)
            if index >= 2:
                times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def conv_channels(model: Any) -> int:
    """Output channels of every convolution: what structured pruning removes."""
    import torch

    return sum(m.out_channels for m in model.modules() if isinstance(m, torch.nn.Conv2d))


def figures(model: Any, val: list[TileBatch], example: dict[str, Any]) -> dict[str, float]:
    """What the report compares: validation F1, parameters, MACs, median ms per 512x512 pair."""
    return validation_f1(model, val) | describe(model) | {"ms_per_512": median_ms(model, example)}


def prune_rounds(
    net: Any,
    tiles: CrackTileSet,
    trace: dict[str, Any],
    ratio: float,
    *,
    criterion: str,
    iterations: int,
    steps: int,
    lr: float,
    batch: int,
    tile: int,
    workdir: Path,
    progress: bool,
    optics: bool = True,
    round_to: int = 16,
) -> tuple[Any, list[dict[str, Any]]]:
    """Remove ``ratio`` of the channels in prune -> fine-tune rounds; returns the model and each round's sizes."""
    from mla.prune import prune as prune_model
    from mla.train import TrainConfig, Trainer

    per_round = 1.0 - (1.0 - ratio) ** (1.0 / iterations)
    capture = CaptureRanges() if optics else None  # the same capture variation as training
    stream = tiles.batches(seed=77, size=batch, tile=tile, crack_fraction=0.5, distractor_fraction=0.3, capture=capture)

    def taylor_loss(m: Any, b: TileBatch) -> Any:
        return crack_loss(m, b)[0]

    rounds: list[dict[str, Any]] = []
    for index in range(iterations):
        grads = [to_batch(next(stream)) for _ in range(4)]
        report = prune_model(
            net, trace, ratio=per_round, criterion=criterion, loss_fn=taylor_loss, batches=grads, round_to=round_to
        )
        rounds.append(report.to_dict())
        share = steps // iterations + (1 if index < steps % iterations else 0)
        if share:
            cfg = TrainConfig(lr=lr, min_lr_ratio=0.1, warmup_steps=max(share // 10, 1), total_steps=share,
                              log_every=max(share // 10, 1), seed=index)  # fmt: skip
            trainer = Trainer(net, crack_loss, cfg, workdir / str(index), progress=progress)

            def chunk(_epoch: int, n: int = share) -> Iterator[TileBatch]:
                return (to_batch(b) for b in itertools.islice(stream, n))

            trainer.fit(chunk, overwrite=True)
            net = trainer.model.to("cpu").eval()
    return net, rounds


def prune(
    model: Annotated[Path, typer.Option("--model", "-m", help="Trained crack model (.pt).")],
    data: Annotated[Path, typer.Option("--data", help="Training folder: Taylor gradients and fine-tuning.")],
    val: Annotated[Path, typer.Option("--val", help="Validation folder for the before/after F1.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Pruned model file (.pt).")],
    ratio: Annotated[float | None, typer.Option(help="Share of channels to remove from every layer group.")] = None,
    target_speedup: Annotated[
        float | None, typer.Option(help="Instead of --ratio: remove channels until MACs fall by this factor.")
    ] = None,
    criterion: Annotated[str, typer.Option(help="Channel importance: taylor, l1 or bn_scale.")] = "taylor",
    iterations: Annotated[int, typer.Option(min=1, help="Prune -> fine-tune rounds to get there.")] = 3,
    steps: Annotated[int, typer.Option(min=0, help="Fine-tuning steps in all (split over the rounds).")] = 300,
    lr: Annotated[float, typer.Option(help="Peak fine-tuning learning rate.")] = 1e-3,
    batch: Annotated[int, typer.Option(min=1, help="Tiles per batch.")] = 8,
    tile: Annotated[int, typer.Option(help="Tile side.")] = 256,
    threads: Annotated[int | None, typer.Option(help="CPU threads for torch.")] = None,
    optics: Annotated[
        bool, typer.Option(help="Fine-tune on tiles re-captured with random optics, as `inspector train` does.")
    ] = True,
    round_to: Annotated[
        int,
        typer.Option(
            min=1,
            help="Keep channel counts multiples of this. 16 is onnxruntime's NCHWc block on AVX-512 (8 on AVX2): "
            "an unaligned layer falls back to a layout change around it, and a narrower model can run slower.",
        ),
    ] = 16,
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
) -> None:
    """Prune a crack model (torch-pruning dependency graph: channels really leave), fine-tune it, compare."""
    import torch

    import mla
    from mla.prune import CRITERIA, ratio_for_speedup

    if (ratio is None) == (target_speedup is None):
        fail("give exactly one of --ratio or --target-speedup")
    if criterion not in CRITERIA:
        fail(f"unknown --criterion {criterion!r}: choose one of {', '.join(CRITERIA)}")
    torch.set_num_threads(threads or max(os.cpu_count() or 1, 1))
    try:
        net = mla.load_model(model, map_location="cpu")
        metadata = mla.load_metadata(model)
        train_tiles, val_tiles = CrackTileSet.load(data), CrackTileSet.load(val)
    except (mla.MLAError, DataError, InspectorError) as exc:
        fail(exc)
    val_batches = validation_batches(val_tiles, count=6, size=8, tile=256)
    example = {m: torch.rand(1, 1, 512 // net.encoder(m).scale, 512 // net.encoder(m).scale) for m in net.modalities}
    trace = {m: x[:, :, : x.shape[2] // 2, : x.shape[3] // 2] for m, x in example.items()}
    before = figures(net, val_batches, example)
    channels_before = conv_channels(net)
    if target_speedup is not None:
        try:
            ratio = ratio_for_speedup(net, trace, target_speedup)
        except mla.MLAError as exc:
            fail(exc)
    assert ratio is not None
    started = time.perf_counter()
    net, rounds = prune_rounds(
        net, train_tiles, trace, ratio, criterion=criterion, iterations=iterations, steps=steps, lr=lr,
        batch=batch, tile=tile, workdir=out.parent / f".prune-{out.stem}", progress=progress, optics=optics,
        round_to=round_to,
    )  # fmt: skip
    after = figures(net, val_batches, example)
    pruning = {
        "source": model.name,
        "criterion": criterion,
        "ratio": round(ratio, 4),
        "iterations": iterations,
        "round_to": round_to,
        "fine_tune_steps": steps,
        "rounds": rounds,
        "before": before,
        "after": after,
        "seconds": round(time.perf_counter() - started, 1),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    name = out.stem
    kept = conv_channels(net) / channels_before  # what the rounds really left (rounding, compounding)
    width = round(float(metadata.get("width", 1.0)) * kept, 4)  # share of the original model's channels
    mla.save_model(net, out, metadata=metadata | {"name": name, "width": width, "pruning": pruning} | describe(net))
    table = Table("figure", "before", "after", "after / before", title=f"{model.name} -> {out.name}")
    for key in ("val_f1", "parameters", "macs_per_512_tile", "ms_per_512"):
        b, a = float(before[key]), float(after[key])
        table.add_row(key, f"{b:,.4g}", f"{a:,.4g}", f"{a / b:.3f}" if b else "-")
    console.print(table)
    console.print(f"pruned {ratio:.0%} of the channels ({criterion}, {iterations} rounds, {steps} steps) -> {out}")


def register(app: typer.Typer) -> None:
    """Add ``prune`` to the CLI."""
    app.command("prune")(prune)
