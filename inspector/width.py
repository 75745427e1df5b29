"""Load-adaptive model width: which pruned variant a worker runs, from its load, with hysteresis.

A model is exported as a family of widths (e.g. 100%, 60%, 35% of the channels, each fine-tuned).
When the line outruns the worker, it switches to a narrower, faster variant; when the load falls, it
goes back to the widest one. The decision is a pure function of the load signal::

    policy = WidthPolicy(variants=(WidthVariant("w100", 1.0, 40.0), WidthVariant("w60", 0.6, 22.0)),
                         latency_budget_ms=500)
    state = WidthState()
    state = policy.decide(state, Load(lag_frames=120, arrival_fps=30))
    policy.variants[state.index].name          # "w60"

Two signals are read: *utilisation* (arrival rate x the variant's time per frame: above 1 the queue
grows) and *backlog wait* (frames waiting x time per frame: what the newest frame will wait). The
worker narrows at once when either is too high, and widens only when the wider variant would be
comfortably below both for ``dwell`` decisions in a row, so a load hovering at a threshold does not
make it flap.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class WidthVariant:
    """One member of the width family.

    Attributes:
        name: Its name in results and metrics (``w100``, ``w60``...).
        width: Share of channels kept (1.0 = unpruned).
        ms_per_frame: Measured time per frame on this worker's hardware and backend.

    """

    name: str
    width: float
    ms_per_frame: float


@dataclass(frozen=True)
class Load:
    """The load a worker sees at a decision: frames waiting (consumer lag) and frames arriving per second."""

    lag_frames: float
    arrival_fps: float


@dataclass(frozen=True)
class WidthState:
    """The active variant (index into the policy's variants, 0 = widest) and decisions spent there."""

    index: int = 0
    held: int = 0


@dataclass(frozen=True)
class WidthPolicy:
    """Pick a width variant from the load.

    Attributes:
        variants: Widest first.
        latency_budget_ms: The longest a frame may wait in the queue.
        high_water: Narrow when utilisation exceeds this (a share of the worker's capacity).
        low_water: Widen only when the wider variant's utilisation would stay below this.
        dwell: Decisions to hold a variant before widening again.

    """

    variants: tuple[WidthVariant, ...]
    latency_budget_ms: float
    high_water: float = 0.85
    low_water: float = 0.6
    dwell: int = 5

    def __post_init__(self) -> None:
        if not self.variants:
            raise ValueError("a width policy needs at least one variant")
        widths = [v.width for v in self.variants]
        if widths != sorted(widths, reverse=True):
            raise ValueError(f"variants must be ordered widest first, got widths {widths}")
        if not 0 < self.low_water < self.high_water:
            raise ValueError(f"need 0 < low_water < high_water, got {self.low_water} and {self.high_water}")
        if self.latency_budget_ms <= 0 or self.dwell < 0:
            raise ValueError("latency_budget_ms must be > 0 and dwell >= 0")

    def utilisation(self, index: int, load: Load) -> float:
        """Share of the worker's time variant ``index`` needs for the arriving frames."""
        return load.arrival_fps * self.variants[index].ms_per_frame / 1000.0

    def backlog_ms(self, index: int, load: Load) -> float:
        """How long the frames already waiting take with variant ``index``."""
        return load.lag_frames * self.variants[index].ms_per_frame

    def overloaded(self, index: int, load: Load) -> bool:
        """Variant ``index`` cannot keep up, or the queue already waits longer than the budget."""
        return self.utilisation(index, load) > self.high_water or self.backlog_ms(index, load) > self.latency_budget_ms

    def comfortable(self, index: int, load: Load) -> bool:
        """Variant ``index`` would keep up with room to spare and drain the queue well inside the budget."""
        return (
            self.utilisation(index, load) < self.low_water and self.backlog_ms(index, load) < self.latency_budget_ms / 2
        )

    def decide(self, state: WidthState, load: Load) -> WidthState:
        """The next state: narrower at once when overloaded, one step wider after ``dwell`` calm decisions."""
        index = min(state.index, len(self.variants) - 1)
        if self.overloaded(index, load):
            narrower = index
            while narrower < len(self.variants) - 1 and self.overloaded(narrower, load):
                narrower += 1
            return WidthState(narrower, 0) if narrower != index else WidthState(index, state.held + 1)
        if index > 0 and state.held >= self.dwell and self.comfortable(index - 1, load):
            return WidthState(index - 1, 0)
        return WidthState(index, state.held + 1)
