"""The whole line in one process, no services: source → in-process queue → :class:`StreamCore` → local store.

This is the embedded default (``inspector run``). It goes through the same frame encoding, decoding,
pairing, batching, inspection and idempotent store code as the Kafka workers; only the transport
differs: a bounded :class:`queue.Queue` fed by a gateway thread instead of Kafka topics, and a
JSONL file instead of Redis::

    line = EmbeddedLine(SyntheticSource(["rig-1"]), StreamCore(model), JsonlResultStore(path), fps=5)
    report = line.run(count=20)
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from inspector.frame import Encoding
from inspector.results import ResultStore
from inspector.sources import Capture, SourceError, capture_to_records, pace
from inspector.stream import Record, StreamCore

logger = logging.getLogger(__name__)

_END = object()


@dataclass
class LineReport:
    """What an embedded run did."""

    captures: int = 0
    results: list[dict[str, Any]] = field(default_factory=list)
    unpaired: Counter[str] = field(default_factory=Counter)
    rejected: Counter[str] = field(default_factory=Counter)
    source_errors: int = 0
    seconds: float = 0.0

    @property
    def verdicts(self) -> Counter[str]:
        """Results by verdict."""
        return Counter(str(r["verdict"]) for r in self.results)


class EmbeddedLine:
    """Run a source through the streaming core into a result store, in one process.

    Args:
        source: Captures (``inspector.sources``).
        core: The streaming core with its model.
        store: Where results go (idempotent per capture).
        fps: Captures per second from the source (``None``: as fast as the model takes them).
        encoding: Pixel encoding on the in-process queue (the same codecs as Kafka records).
        on_result: Called with each stored document (progress bars, live tables).

    """

    def __init__(
        self,
        source: Iterable[Capture | SourceError],
        core: StreamCore,
        store: ResultStore,
        *,
        fps: float | None = None,
        encoding: Encoding = "png",
        on_result: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        self.source, self.core, self.store, self.fps, self.encoding = source, core, store, fps, encoding
        self.on_result = on_result
        self.frames: queue.Queue[object] = queue.Queue(maxsize=64)
        self._stop = threading.Event()

    def stop(self) -> None:
        """Stop reading the source; frames already queued are still inspected."""
        self._stop.set()

    def _gateway(self, count: int | None, report: LineReport) -> None:
        offset = 0
        try:
            for item in pace(self.source, self.fps):
                if self._stop.is_set() or (count is not None and report.captures >= count):
                    break
                if isinstance(item, SourceError):
                    report.source_errors += 1
                    logger.warning("source: %s", item)
                    continue
                for frame, data in capture_to_records(item, self.encoding):
                    record = Record(frame.modality, frame.camera_id.encode(), data, frame.to_headers(), offset)
                    self.frames.put(record)
                    offset += 1
                report.captures += 1
        finally:
            self.frames.put(_END)

    def run(self, *, count: int | None = None, timeout: float | None = None) -> LineReport:
        """Inspect ``count`` captures (or until the source ends, ``timeout`` s pass, or :meth:`stop`)."""
        report = LineReport()
        start = time.monotonic()
        gateway = threading.Thread(target=self._gateway, args=(count, report), name="gateway", daemon=True)
        gateway.start()
        ended = False
        while not ended or self.core.queued_pairs or self.core.pairing_frames:
            if timeout is not None and time.monotonic() - start > timeout:
                self.stop()
            records: list[Record] = []
            try:
                item = self.frames.get(timeout=0.01)
                while True:
                    if item is _END:
                        ended = True
                        break
                    records.append(item)  # type: ignore[arg-type]
                    item = self.frames.get_nowait()
            except queue.Empty:
                pass
            now = time.monotonic_ns()
            step = self.core.feed(records, now_ns=now, wall_ns=time.time_ns())
            report.unpaired.update(u.reason for u in step.unpaired)
            report.rejected.update(str(r.reason) for r in step.rejected)
            if ended and not self.core.queued_pairs and self.core.pairing_frames:
                step = self.core.feed([], now_ns=now + 10**12, wall_ns=time.time_ns())  # nothing more can come
                report.unpaired.update(u.reason for u in step.unpaired)
            while self.core.due(now_ns=time.monotonic_ns()) or (ended and self.core.queued_pairs):
                jobs, rejected = self.core.inspect_batch(wall_ns=time.time_ns)
                report.rejected.update(str(r.reason) for r in rejected)
                for job in jobs:
                    if self.store.put(job.document, job.overlay_jpeg):
                        report.results.append(job.document)
                        if self.on_result is not None:
                            self.on_result(job.document)
        gateway.join(timeout=5)
        report.seconds = time.monotonic() - start
        return report
