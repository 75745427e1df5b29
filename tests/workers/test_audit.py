"""The audit's counting checks, without services: they must be able to fail.

A check that can never see a duplicate or a premature commit proves nothing; these feed it runs that
are wrong on purpose.
"""

from __future__ import annotations

from workers.audit import KafkaContents, LagSample, commits_ahead_of_store, count_duplicates

VIS = ("vis", 0)


def test_a_second_stream_entry_for_a_capture_is_a_duplicate() -> None:
    sent = {("rig-1", 1), ("rig-1", 2)}
    assert count_duplicates([("rig-1", 1), ("rig-1", 2)], sent) == (0, 0)
    assert count_duplicates([("rig-1", 1), ("rig-1", 2), ("rig-1", 1)], sent) == (1, 0)
    assert count_duplicates([("rig-1", 1), ("rig-9", 7)], sent) == (0, 1)  # a result nobody sent


def contents(*captures: tuple[str, int]) -> KafkaContents:
    """One visible record per capture at offsets 0, 1, ... of partition ``vis/0`` (and its IR partner)."""
    kafka = KafkaContents()
    for offset, capture in enumerate(captures):
        kafka.modalities[capture].update(["visible", "infrared"])
        kafka.positions[VIS].append((offset, capture))
    return kafka


def test_a_commit_before_the_result_was_stored_is_caught() -> None:
    kafka = contents(("rig-1", 1), ("rig-1", 2), ("rig-1", 3))
    stored_at = {("rig-1", 1): 10.0, ("rig-1", 2): 11.0, ("rig-1", 3): 12.0}
    fine = [LagSample(10.5, {VIS: 3}, {VIS: 1}), LagSample(12.5, {VIS: 3}, {VIS: 3})]
    assert commits_ahead_of_store(fine, kafka, stored_at) == 0
    early = [LagSample(10.5, {VIS: 3}, {VIS: 3})]  # offsets 1 and 2 committed, their results came later
    assert commits_ahead_of_store(early, kafka, stored_at) == 2
    lost = [LagSample(20.0, {VIS: 3}, {VIS: 3})]
    assert commits_ahead_of_store(lost, kafka, {("rig-1", 1): 10.0}) == 2  # committed, never stored
