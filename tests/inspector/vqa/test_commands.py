from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from inspector.cli import app
from inspector.vqa.data import build_set, encode_png
from inspector.vqa.model import VQAModel

runner = CliRunner()


def test_synth_writes_scenes_questions_and_captions(tmp_path: Path) -> None:
    result = runner.invoke(app, ["vqa", "synth", "--out", str(tmp_path), "--count", "3", "--seed", "1"])
    assert result.exit_code == 0, result.output
    assert len(list(tmp_path.glob("scene-*.png"))) == 3
    records = [json.loads(line) for line in (tmp_path / "questions.jsonl").read_text().splitlines()]
    assert {r["type"] for r in records} == {"colour", "shape", "count", "position", "relational"} or len(records) > 5
    assert len((tmp_path / "captions.jsonl").read_text().splitlines()) == 3


def test_ask_answers_and_refuses_bad_input(tiny_model_path: Path, tmp_path: Path) -> None:
    image = tmp_path / "s.png"
    image.write_bytes(encode_png(build_set(1, seed=1).images[0]))
    ok = runner.invoke(
        app,
        [
            "vqa",
            "ask",
            "--model",
            str(tiny_model_path),
            "-i",
            str(image),
            "-q",
            "what shape is the red object?",
            "--json",
        ],
    )
    assert ok.exit_code == 0, ok.output
    assert "confidence" in json.loads(ok.output)
    bad = runner.invoke(app, ["vqa", "ask", "--model", str(tiny_model_path), "-i", str(image), "-q", "what is love?"])
    assert bad.exit_code == 2 and "unknown word" in bad.output
    noise = tmp_path / "noise.png"
    noise.write_bytes(b"\x00\x01garbage")
    assert (
        runner.invoke(
            app,
            ["vqa", "ask", "--model", str(tiny_model_path), "-i", str(noise), "-q", "what shape is the red object?"],
        ).exit_code
        == 2
    )
    missing = runner.invoke(app, ["vqa", "ask", "--model", str(tmp_path / "none.pt"), "-i", str(image), "-q", "x"])
    assert missing.exit_code == 2 and "vqa train" in missing.output


def test_eval_and_train_commands(tiny_model_path: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, ["vqa", "eval", "--models", str(tiny_model_path), "--scenes", "5", "--json"])
    assert result.exit_code == 0, result.output
    assert "relational" in json.loads(result.output)["models"]["tiny"]["by_type"]
    out = tmp_path / "m.pt"
    trained = runner.invoke(
        app,
        [
            "vqa",
            "train",
            "--out",
            str(out),
            "--fusion",
            "concat",
            "--steps",
            "2",
            "--batch",
            "4",
            "--eval-scenes",
            "3",
            "--no-progress",
            "--json",
        ],
    )
    assert trained.exit_code == 0, trained.output
    assert out.is_file() and json.loads(trained.output)["steps"] == 2
    assert runner.invoke(app, ["vqa", "train", "--out", str(out), "--fusion", "mean"]).exit_code == 2


def test_train_warm_starts_a_new_relation_head_and_refuses_it_with_init(tiny_model_path: Path, tmp_path: Path) -> None:
    out = tmp_path / "warm.pt"
    common = ["vqa", "train", "--out", str(out), "--steps", "1", "--batch", "4", "--eval-scenes", "2", "--no-progress"]
    warm = ["--warm-start", str(tiny_model_path), "--relation-source", "image", "--anchor", "--pointer", "--json"]
    trained = runner.invoke(app, [*common, *warm, "--glimpse", "3"])
    assert trained.exit_code == 0, trained.output
    head = VQAModel.load(out).network.heads["answer"]
    assert head.relation is not None and head.relation.key is not None  # the anchored relation head
    assert head.pointer is not None and head.pointer.glimpse == 3  # and the pointer with its window, fresh
    both = runner.invoke(app, [*common, "--init", str(tiny_model_path), "--warm-start", str(tiny_model_path)])
    assert both.exit_code != 0 and "not both" in both.output
    bad = runner.invoke(app, [*common, "--relation-source", "text"])
    assert bad.exit_code != 0 and "fused or image" in bad.output
    fused = runner.invoke(app, [*common, "--pointer"])
    assert fused.exit_code != 0 and "--relation-source image" in fused.output
    alone = runner.invoke(app, [*common, "--relation-source", "image", "--glimpse", "5"])
    assert alone.exit_code != 0 and "add --pointer" in alone.output
    single = runner.invoke(app, ["vqa", "train", "--out", str(out), "--batch", "1", "--relation-source", "image"])
    assert single.exit_code != 0 and "--batch 2 or more" in single.output
