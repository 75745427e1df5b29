"""The shadow model in the streaming core: a stable sample of captures, compared, and never part of a verdict."""

from __future__ import annotations

from typing import Any

import numpy as np

from inspector.evidence import ok_sample_draw
from inspector.model import ModelInput, ModelOutput
from inspector.stream import InspectedJob, ShadowModel, StreamCore, StreamPolicy
from tests.inspector.test_stream import WALL, LineModel, record

SHADOW_SHA = "5" * 64


class Blind:
    """A candidate that sees no crack anywhere; counts its calls."""

    name, version = "blind", "1"

    def __init__(self) -> None:
        self.calls = 0

    def predict(self, inputs: ModelInput) -> ModelOutput:
        self.calls += 1
        return ModelOutput(np.zeros(inputs.visible.shape, np.float32))


class Broken:
    """A candidate that fails on every capture."""

    name, version = "broken", "1"

    def predict(self, inputs: ModelInput) -> ModelOutput:
        raise RuntimeError("CUDA error: an illegal memory access (injected)")


def inspect(core: StreamCore, seqs: range, camera: str = "rig-1") -> list[InspectedJob]:
    """Feed one capture per seq (odd seqs are dark-odd grey: the line model calls them NG) and inspect them all."""
    records = [
        record(modality, camera, seq, offset=seq, grey=100 + seq % 2)
        for seq in seqs
        for modality in ("visible", "infrared")
    ]
    core.feed(records, now_ns=0, wall_ns=WALL)
    jobs: list[InspectedJob] = []
    while core.queued_pairs:
        done, rejected = core.inspect_batch(wall_ns=lambda: WALL)
        assert not rejected
        jobs += done
    return jobs


def verdicts(jobs: list[InspectedJob]) -> list[tuple[Any, ...]]:
    """What a result says, without its timings."""
    return [
        (j.document["seq"], j.document["verdict"], j.document["defects"], j.document["model"], j.overlay_jpeg is None)
        for j in jobs
    ]


def test_every_sampled_capture_is_compared_and_disagreements_are_marked() -> None:
    core = StreamCore(LineModel(), StreamPolicy(batch_pairs=4))
    core.shadow = ShadowModel(Blind(), 1.0, SHADOW_SHA)
    jobs = inspect(core, range(1, 7))
    for job in jobs:
        ng = job.document["seq"] % 2 == 1
        assert job.document["verdict"] == ("NG" if ng else "OK")  # the serving model's verdict
        assert job.shadow == {"verdict": "OK", "sha256": SHADOW_SHA, "agree": not ng}
        assert "shadow" not in job.document


def test_the_sample_is_fixed_by_camera_and_seq() -> None:
    blind = Blind()
    core = StreamCore(LineModel(), StreamPolicy(batch_pairs=8))
    core.shadow = ShadowModel(blind, 0.3, SHADOW_SHA)
    seqs = range(1, 201)
    first = {j.document["seq"] for j in inspect(core, seqs) if j.shadow is not None}
    assert first == {seq for seq in seqs if ok_sample_draw("rig-1", seq) < 0.3}
    assert 40 <= len(first) <= 80 and blind.calls == len(first)  # about 30%, and only those ran the candidate
    again = StreamCore(LineModel(), StreamPolicy(batch_pairs=8))  # another worker, a re-delivery
    again.shadow = ShadowModel(Blind(), 0.3, SHADOW_SHA)
    assert {j.document["seq"] for j in inspect(again, seqs) if j.shadow is not None} == first


def test_the_shadow_never_changes_a_result() -> None:
    alone = inspect(StreamCore(LineModel(), StreamPolicy(batch_pairs=4)), range(1, 9))
    for candidate in (Blind(), LineModel(), Broken()):
        core = StreamCore(LineModel(), StreamPolicy(batch_pairs=4))
        core.shadow = ShadowModel(candidate, 1.0, SHADOW_SHA)
        shadowed = inspect(core, range(1, 9))
        assert verdicts(shadowed) == verdicts(alone)
        assert all((j.shadow is None) == isinstance(candidate, Broken) for j in shadowed)  # a failure compares nothing


def test_without_a_shadow_nothing_is_compared() -> None:
    jobs = inspect(StreamCore(LineModel(), StreamPolicy(batch_pairs=4)), range(1, 5))
    assert all(job.shadow is None for job in jobs)


class Alarmist:
    """A candidate that sees the line model's crack on every part."""

    name, version = "alarmist", "1"

    def predict(self, inputs: ModelInput) -> ModelOutput:
        probability = np.zeros(inputs.visible.shape, np.float32)
        probability[10:-10, 30:36] = 1.0
        return ModelOutput(probability)


def test_an_ok_part_the_shadow_disputes_keeps_its_evidence_for_review() -> None:
    core = StreamCore(LineModel(), StreamPolicy(batch_pairs=4, evidence=True, evidence_ok_fraction=0.0))
    core.shadow = ShadowModel(Alarmist(), 1.0, SHADOW_SHA)
    jobs = inspect(core, range(1, 7))
    for job in jobs:
        ng = job.document["seq"] % 2 == 1
        assert job.document["verdict"] == ("NG" if ng else "OK")
        assert job.evidence is not None and job.document["evidence"] == job.evidence.path
        assert job.evidence.kept == ("ng" if ng else "shadow")
    core.shadow = ShadowModel(LineModel(), 1.0, SHADOW_SHA)  # agrees everywhere: OK parts keep nothing
    agreed = inspect(core, range(7, 13))
    assert [j.evidence is not None for j in agreed] == [j.document["verdict"] == "NG" for j in agreed]
