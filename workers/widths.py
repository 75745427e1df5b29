"""Load-adaptive width in the worker: a family of pruned variants, timed at start, switched by the load.

The decision itself is :class:`inspector.width.WidthPolicy` (pure, with hysteresis); this module
loads the variants, times each on a probe frame of the line's size, and turns the worker's view of
Kafka (records behind, frames arriving) into the policy's :class:`~inspector.width.Load`::

    family = WidthFamily.load(settings)             # worker.widths: files, widest first
    meter = LoadMeter()
    meter.arrived(now_s, frames=12)
    index, changed = family.decide(meter.load(now_s, lag_records=40))
"""

from __future__ import annotations

import logging
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from inspector.config import Settings
from inspector.model import CrackModel, create_model
from inspector.pipeline import inspect_pair
from inspector.width import Load, WidthPolicy, WidthState, WidthVariant

logger = logging.getLogger(__name__)


def probe_ms(model: CrackModel, size: int, repeats: int = 2) -> float:
    """Milliseconds one ``size``² capture (IR at a quarter) takes: the best of ``repeats`` after a warm-up."""
    rng = np.random.default_rng(0)
    visible = rng.integers(90, 160, (size, size), dtype=np.uint8)
    infrared = rng.integers(2900, 3100, (size // 4, size // 4), dtype=np.uint16)
    inspect_pair(visible, infrared, None, 0.05, model)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        inspect_pair(visible, infrared, None, 0.05, model)
        times.append((time.perf_counter() - start) * 1e3)
    return min(times)


@dataclass
class WidthFamily:
    """The loaded variants (widest first), the policy and its state."""

    models: list[CrackModel]
    policy: WidthPolicy
    state: WidthState = field(default_factory=WidthState)

    @classmethod
    def load(cls, settings: Settings) -> WidthFamily:
        """Load ``worker.widths`` and time each on a ``worker.probe_size`` frame.

        A variant's cost is its probe time per capture divided by ``inference.lanes``: the lanes
        inspect that many captures at once, each with its share of the threads the probe ran with.
        """
        inference = settings.inference.model_dump()
        lanes = settings.inference.lanes
        models = [create_model(path, inference=inference) for path in settings.worker.widths]
        variants = []
        for path, model in zip(settings.worker.widths, models, strict=True):
            width = float(getattr(model, "metadata", {}).get("width", 1.0))
            ms = probe_ms(model, settings.worker.probe_size) / lanes
            logger.info(
                "width variant %s: width %.2f, %.0f ms per %d px capture", path, width, ms, settings.worker.probe_size
            )
            variants.append(WidthVariant(name=getattr(model, "name", path), width=width, ms_per_frame=ms))
        policy = WidthPolicy(tuple(variants), latency_budget_ms=settings.worker.latency_budget_ms)
        return cls(models, policy)

    @property
    def active(self) -> CrackModel:
        """The model of the active variant."""
        return self.models[self.state.index]

    @property
    def width(self) -> float:
        """The active variant's share of channels."""
        return self.policy.variants[self.state.index].width

    def decide(self, load: Load) -> tuple[int, bool]:
        """Take one decision; return the active index and whether it changed."""
        before = self.state.index
        self.state = self.policy.decide(self.state, load)
        return self.state.index, self.state.index != before

    def info(self) -> dict[str, Any]:
        """What the worker reports about the active variant."""
        model = self.active
        metadata = dict(getattr(model, "metadata", {}) or {})
        return {"name": model.name, "version": model.version, "width": self.width,
                "backend": str(metadata.get("backend", "")), "sha256": str(metadata.get("sha256", ""))}  # fmt: skip


class LoadMeter:
    """Captures arriving per second over a sliding window, and the captures waiting (consumer lag / 2).

    Arrivals are what the line offers — the growth of the partitions' end offsets at the broker
    (:meth:`offered`) — not what the worker read: a worker that falls behind reads no faster than it
    inspects, so counting its reads would hide the overload that should narrow it.
    """

    def __init__(self, window_s: float = 10.0) -> None:
        self.window_s = window_s
        self._arrivals: deque[tuple[float, int]] = deque()
        self._ends: dict[tuple[str, int], int] = {}

    def offered(self, now_s: float, ends: dict[tuple[str, int], int]) -> None:
        """The end offsets of the assigned partitions at ``now_s``; their growth since the last call arrived.

        A partition seen for the first time (a new assignment) only sets its mark.
        """
        grown = sum(max(0, end - self._ends[p]) for p, end in ends.items() if p in self._ends)
        self._ends = dict(ends)
        self.arrived(now_s, grown)

    def arrived(self, now_s: float, frames: int) -> None:
        """``frames`` records were consumed at ``now_s``."""
        if frames:
            self._arrivals.append((now_s, frames))
        while self._arrivals and now_s - self._arrivals[0][0] >= self.window_s:
            self._arrivals.popleft()

    def load(self, now_s: float, lag_records: int) -> Load:
        """The load now: a capture is two records (visible and infrared)."""
        self.arrived(now_s, 0)
        frames = sum(n for _, n in self._arrivals)
        return Load(lag_frames=lag_records / 2, arrival_fps=frames / 2 / self.window_s)
