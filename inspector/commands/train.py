"""``inspector train``: train a crack model on a data folder and save it as one ``.pt`` file."""

from __future__ import annotations

import itertools
import json
import os
import shlex
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any

import typer

from inspector.capture import CaptureRanges
from inspector.commands.common import console, fail
from inspector.crack_data import CrackTileSet, mixed_batches
from inspector.dataset import DataError, list_ids, read_meta
from inspector.errors import InspectorError
from inspector.training import (
    ARCHITECTURES,
    VARIANTS,
    crack_loss,
    crack_model_config,
    describe,
    to_batch,
    validation_batches,
    validation_f1,
)


def data_origin(folder: Path) -> dict[str, Any]:
    """Which synthetic sets a folder came from: presets, seeds, scales and the sample count."""
    ids = list_ids(folder)
    metas = [read_meta(folder / f"{i}.json") for i in ids]
    return {
        "folder": str(folder),
        "samples": len(ids),
        "presets": sorted({m.preset or "?" for m in metas}),
        "seeds": sorted({m.seed for m in metas if m.seed is not None}),
        "mm_per_px": sorted({m.mm_per_px for m in metas}),
    }


def model_card(path: Path, metadata: dict[str, Any]) -> str:
    """A short Markdown model card written next to the model file."""
    figures = metadata.get("validation", {})
    lines = [
        f"# Model card: {metadata['name']}",
        "",
        f"- **What**: crack segmentation ({metadata['variant']}), `mla` multi-modal model, "
        f"{metadata['parameters']:,} parameters, {metadata['macs_per_512_tile'] / 1e9:.2f} GMAC per 512x512 tile.",
        "- **Trained on synthetic data only** (`inspector synth`, see docs/DATA.md): "
        f"{json.dumps(metadata['train_data'])}.",
        f"- **Validation** (synthetic, separate seeds): {json.dumps(metadata['validation_data'])}.",
        f"- **Command**: `{metadata['command']}`",
        f"- **Training**: {metadata['steps']} steps, batch {metadata['batch']} x tile {metadata['tile']}, "
        f"{metadata['train_seconds'] / 60:.1f} min on {metadata['machine']}.",
        f"- **Validation figures** (pixel, 2 px tolerance, on validation tiles): {json.dumps(figures)}.",
        "- **Held-out figures**: docs/BENCHMARKS.md. Not checked on real parts: validate on your own "
        "captures before trusting its verdicts.",
        f"- **File**: `{path.name}`; load with `inspector predict ... --model {path}`.",
        "",
    ]
    return "\n".join(lines)


def initial_model(
    fusion: str, width: int, init: Path | None, modality_dropout: float | None = None, arch: str = "unshuffle"
) -> Any:
    """A fresh model of the variant, or the model in ``init`` as it is (its own architecture: pruned widths too).

    With ``init`` the file's architecture wins: --fusion, --width and --arch must agree with it, except
    that a pruned model (``width`` < 1 in its metadata) keeps its narrower channels.
    """
    import mla

    model = mla.MLAModel(crack_model_config(fusion, width=width, modality_dropout=modality_dropout, arch=arch))
    if init is None:
        return model
    try:
        start = mla.load_model(init, map_location="cpu")
        pruned = float(mla.load_metadata(init).get("width", 1.0)) < 1.0
        if not pruned:
            model.load_state_dict(start.state_dict())
            return model
    except (mla.MLAError, RuntimeError) as exc:
        fail(
            f"--init {init}: cannot start from it ({exc}); it must be a {fusion} model of width {width} "
            f"and architecture {arch} (--fusion, --width, --arch)"
        )
    if start.config.fusion_type != model.config.fusion_type or start.modalities != model.modalities:
        fail(f"--init {init} is a pruned {start.config.fusion_type} model; give --fusion {start.config.fusion_type}")
    return start


def inherited_metadata(init: Path | None) -> dict[str, Any]:
    """What a model fine-tuned from ``init`` keeps of it: its width share and pruning record, and its operating point.

    The pixel threshold and verdict rules were chosen for ``init`` on validation parts; the fine-tuned
    model keeps them (marked as inherited) until ``inspector threshold`` chooses its own, so that a
    comparison of the two measures what training changed, not a change of rules.
    """
    if init is None:
        return {}
    import mla

    metadata = mla.load_metadata(init)
    kept: dict[str, Any] = {k: metadata[k] for k in ("width", "pruning", "threshold", "verdict_rules") if k in metadata}
    if "verdict_rules" in kept:
        kept["verdict_rules_choice"] = f"inherited from --init {init.name} (version {metadata.get('version', '?')})"
    return kept


def architecture_of(init: Path | None, fusion: str | None, width: int | None, arch: str | None) -> tuple[str, int, str]:
    """``(fusion, width, arch)``: the options given, else ``init``'s, else hffn, 32, unshuffle."""
    if init is None:
        return fusion or "hffn", width or 32, arch or "unshuffle"
    import mla

    try:
        metadata = mla.load_metadata(init)
        config = mla.load_model(init, map_location="cpu").config
    except (mla.MLAError, OSError, RuntimeError) as exc:
        fail(f"--init {init}: not a readable model file ({exc})")
    return (
        fusion or str(metadata.get("variant", config.fusion_type)),
        width or config.width,
        arch or str(metadata.get("arch", "unshuffle")),
    )


def progressive_pretraining(
    model: Any,
    tiles: CrackTileSet,
    steps: int,
    workdir: Path,
    *,
    batch: int,
    tile: int,
    accum_steps: int,
    amp: bool,
    device: str,
    seed: int,
    progress: bool,
) -> None:
    """Stages 1-2 of progressive pre-training on the images of ``tiles`` (masks unused), in place."""
    from mla.pretrain import applicable_stages, pretrain
    from mla.train import TrainConfig

    def unlabelled_batches(epoch: int):  # type: ignore[no-untyped-def]
        # crack_fraction=0: the masks must not choose the tiles that self-supervision sees
        stream = tiles.batches(seed=seed * 1000 + 500 + epoch, size=batch, tile=tile, crack_fraction=0.0)
        return (to_batch(b) for b in itertools.islice(stream, steps * accum_steps))

    stage_cfg = TrainConfig(
        lr=1e-3, total_steps=steps, warmup_steps=max(steps // 20, 1), amp=amp,
        device=device, seed=seed, log_every=max(steps // 20, 1), accum_steps=accum_steps,
    )  # fmt: skip
    console.print(f"pre-training ({', '.join(applicable_stages(model))}), {steps} steps each on {len(tiles)} parts ...")
    pretrain(
        model, unlabelled_batches, workdir, train=stage_cfg, stages=applicable_stages(model),
        overwrite=True, progress=progress,
    )  # fmt: skip


def check_options(fusion: str, arch: str, tile: int, fractions: float, steps: int, pretrain_steps: int) -> None:
    """Exit 2 with what to change when the training options contradict each other."""
    if fusion not in VARIANTS:
        fail(f"unknown --fusion {fusion!r}: choose one of {', '.join(VARIANTS)}")
    if arch not in ARCHITECTURES:
        fail(f"unknown --arch {arch!r}: choose one of {', '.join(ARCHITECTURES)}")
    if tile % 16:
        fail(f"--tile {tile} must be a multiple of 16")
    if fractions > 1:
        fail(f"--crack-fraction + --distractor-fraction is {fractions:g}: it must be <= 1")
    if steps == 0 and not pretrain_steps:
        fail("--steps 0 only makes sense with --pretrain-steps (a pre-trained model, no supervised stage)")


def train(
    data: Annotated[Path, typer.Option("--data", help="Training data folder (with masks).")],
    val: Annotated[Path, typer.Option("--val", help="Validation data folder (other seeds than --data).")],
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Model file to write (.pt); a .md model card goes beside it.")
    ],
    fusion: Annotated[
        str | None, typer.Option(help=f"Model variant: {', '.join(VARIANTS)} (default: --init's, else hffn).")
    ] = None,
    steps: Annotated[
        int, typer.Option(min=0, help="Supervised optimizer steps (0 with --pretrain-steps: a pre-trained model only).")
    ] = 1500,
    batch: Annotated[int, typer.Option(min=1, help="Tiles per micro-batch.")] = 8,
    tile: Annotated[int, typer.Option(help="Training tile side in visible pixels (a multiple of 16).")] = 256,
    accum_steps: Annotated[int, typer.Option(min=1, help="Micro-batches per optimizer step.")] = 1,
    lr: Annotated[float, typer.Option(help="Peak learning rate (AdamW, warm-up then cosine).")] = 3e-3,
    width: Annotated[
        int | None,
        typer.Option(min=8, help="Base width of the visible encoder and the fusion (default: --init's, else 32)."),
    ] = None,
    arch: Annotated[
        str | None,
        typer.Option(
            help="Network shape: unshuffle (space-to-depth stem and pixel-shuffle decoder, nothing convolved above "
            "stride 4: the fast one) or pyramid (the first-round network, about 3x slower on a CPU); "
            "default: --init's, else unshuffle."
        ),
    ] = None,
    amp: Annotated[bool, typer.Option(help="Mixed precision: bf16 on CPU, fp16 on CUDA.")] = False,
    device: Annotated[str, typer.Option(help="cpu, cuda, cuda:N or auto.")] = "cpu",
    seed: Annotated[int, typer.Option(help="Seed of the weights and the tile sampler.")] = 0,
    limit: Annotated[
        int | None, typer.Option(help="Use only N labelled training samples, spread evenly over the folder.")
    ] = None,
    crack_fraction: Annotated[
        float, typer.Option(min=0, max=1, help="Share of training tiles centred near a crack.")
    ] = 0.5,
    distractor_fraction: Annotated[
        float,
        typer.Option(min=0, max=1, help="Share of training tiles centred on a recorded distractor (hard negatives)."),
    ] = 0.3,
    init: Annotated[
        Path | None,
        typer.Option(
            help="Start from this model file: fine-tune the serving model, or a pre-trained one. Its variant, width "
            "and architecture are used unless given; its verdict rules are kept."
        ),
    ] = None,
    mix: Annotated[
        Path | None,
        typer.Option(
            help="Replay data mixed into every batch (e.g. the synthetic training set) so that a fine-tune on a few "
            "reviewed parts (--data) forgets nothing."
        ),
    ] = None,
    mix_fraction: Annotated[
        float, typer.Option(min=0, max=0.95, help="Share of each batch's tiles drawn from --mix.")
    ] = 0.75,
    unlabelled: Annotated[
        Path | None,
        typer.Option(help="Folder whose images (masks unused) feed --pretrain-steps (default: all of --data)."),
    ] = None,
    workdir: Annotated[
        Path | None, typer.Option(help="Checkpoints, metrics.jsonl and curves.png (default: runs/train-<name>).")
    ] = None,
    pretrain_steps: Annotated[
        int,
        typer.Option(
            help="Progressive pre-training: steps of masked reconstruction and of visible<->IR alignment on the "
            "training images (masks unused) before the supervised stage; 0 = none."
        ),
    ] = 0,
    optics: Annotated[
        bool,
        typer.Option(
            help="Re-capture 80% of the training tiles with a random optics and sensor variation (blur 0-1.6 px, "
            "gain, gamma, noise, JPEG; inspector.capture) so the model holds on cameras other than the generator's."
        ),
    ] = True,
    modality_dropout: Annotated[
        float | None,
        typer.Option(
            min=0, max=0.9, help="Chance of dropping one modality per sample (default: 0.15 for dma/hffn, 0 otherwise)."
        ),
    ] = None,
    threads: Annotated[int | None, typer.Option(help="CPU threads for torch (default: all cores).")] = None,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
) -> None:
    """Train a crack model (visible + infrared, or one of them) on synthetic data and save it."""
    import torch

    import mla
    from mla.train import TrainConfig, Trainer, plot_metrics

    fusion, width, arch = architecture_of(init, fusion, width, arch)
    check_options(fusion, arch, tile, crack_fraction + distractor_fraction, steps, pretrain_steps)
    torch.set_num_threads(threads or max(os.cpu_count() or 1, 1))
    try:
        console.print(f"loading {data} and {val} ...")
        train_tiles = CrackTileSet.load(data, limit=limit)
        val_tiles = CrackTileSet.load(val)
        origin, val_origin = data_origin(data), data_origin(val)
        origin["labelled_samples"] = len(train_tiles)
        mix_tiles = CrackTileSet.load(mix) if mix is not None else None
        unlabelled_tiles = CrackTileSet.load(unlabelled) if unlabelled else None
        if unlabelled_tiles is None and limit is not None and pretrain_steps:
            unlabelled_tiles = CrackTileSet.load(data)
    except (DataError, InspectorError) as exc:
        fail(exc)
    overlap = (
        set(origin["seeds"]) & set(val_origin["seeds"])
        if set(origin["presets"]) & set(val_origin["presets"])
        else set()
    )
    if overlap:
        fail(f"--data and --val share seeds {sorted(overlap)}: validation must not see training parts")
    model = initial_model(fusion, width, init, modality_dropout, arch)
    name = out.stem
    workdir = workdir or Path("runs") / f"train-{name}"
    cfg = TrainConfig(
        lr=lr,
        min_lr_ratio=0.05,
        warmup_steps=max(steps // 20, 1),
        total_steps=max(steps, 1),
        accum_steps=accum_steps,
        amp=amp,
        seed=seed,
        log_every=max(steps // 100, 1),
        eval_every=max(steps // 10, 1),
        checkpoint_every=max(steps // 5, 1),
        device=device,
    )
    val_batches = validation_batches(val_tiles, count=6, size=8, tile=256)
    micro_steps = steps * accum_steps

    def batches(epoch: int):  # type: ignore[no-untyped-def]
        sets = (
            [(train_tiles, 1.0)] if mix_tiles is None else [(train_tiles, 1 - mix_fraction), (mix_tiles, mix_fraction)]
        )
        stream = mixed_batches(
            sets, seed=seed * 1000 + epoch, size=batch, tile=tile, crack_fraction=crack_fraction,
            distractor_fraction=distractor_fraction, capture=CaptureRanges() if optics else None,
        )  # fmt: skip
        return (to_batch(b) for b in itertools.islice(stream, micro_steps))

    trainer = Trainer(
        model,
        crack_loss,
        cfg,
        workdir,
        evaluate=lambda m: validation_f1(m, val_batches),
        progress=progress,
        extra={"model_config": model.to_dict()},
    )
    started = time.perf_counter()
    if pretrain_steps:
        progressive_pretraining(
            model, unlabelled_tiles or train_tiles, pretrain_steps, workdir / "pretrain",
            batch=batch, tile=tile, accum_steps=accum_steps, amp=amp, device=device, seed=seed, progress=progress,
        )  # fmt: skip
    supervised_steps = trainer.fit(batches, overwrite=True).step if steps else 0
    seconds = time.perf_counter() - started
    if steps:
        plot_metrics(workdir / "metrics.jsonl", workdir / "curves.png")
    model = trainer.model.to("cpu").eval()
    final = validation_f1(model, val_batches)
    metadata: dict[str, Any] = {
        "name": name,
        "version": "1",
        "variant": fusion,
        "arch": arch,
        "command": "inspector train " + shlex.join(sys.argv[2:]) if len(sys.argv) > 2 else "inspector train",
        "train_data": origin,
        "validation_data": val_origin,
        "steps": supervised_steps,
        "crack_fraction": crack_fraction,
        "distractor_fraction": distractor_fraction,
        "optics_augmentation": asdict(CaptureRanges()) if optics else None,
        "modality_dropout": model.config.modality_dropout,
        "init": str(init) if init else None,
        "mix_data": data_origin(mix) | {"fraction": mix_fraction} if mix is not None else None,
        "unlabelled_data": data_origin(unlabelled) if unlabelled else None,
        "batch": batch * accum_steps,
        "tile": tile,
        "lr": lr,
        "seed": seed,
        "pretrain_steps": pretrain_steps,
        "train_seconds": round(seconds, 1),
        "machine": f"{torch.get_num_threads()} torch thread(s) on a {os.cpu_count()}-core CPU"
        if device == "cpu"
        else device,
        "validation": {k: round(v, 4) for k, v in final.items()},
        **describe(model),
        **inherited_metadata(init),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    mla.save_model(model, out, metadata=metadata)
    out.with_suffix(".md").write_text(model_card(out, metadata))
    console.print(
        f"trained {name} ({fusion}) in {seconds / 60:.1f} min: validation F1 {final['val_f1']:.3f} "
        f"(P {final['val_precision']:.3f}, R {final['val_recall']:.3f}) -> {out}, curves in {workdir / 'curves.png'}"
    )


def register(app: typer.Typer) -> None:
    """Add ``train`` to the CLI."""
    app.command("train")(train)
