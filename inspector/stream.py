"""Frames in, stored results out: the streaming core every runner shares (Kafka worker, ``inspector run``).

A runner hands in the records it received, with where each came from, and the clocks; the core
decodes them, rejects what cannot be used (with a reason for the dead-letter topic), pairs visible
with infrared frames (:func:`inspector.sync.pair_frames`), gathers pairs into micro-batches and
inspects them (register → model → measure → verdict). It never touches Kafka, Redis or a clock::

    core = StreamCore(model, StreamPolicy(batch_pairs=4))
    step = core.feed(records, now_ns=monotonic_ns(), wall_ns=time_ns())
    send_to_dlq(step.rejected); count(step.unpaired)          # the runner's sinks
    if core.due(now_ns=monotonic_ns()):
        for job in core.inspect_batch(wall_ns=time_ns):
            store.put(job.document, job.overlay_jpeg)          # then the job's positions are done

Every record fed in ends in exactly one place: ``step.rejected``, ``step.unpaired`` (with the
positions of frames that will not be inspected), an inspected job's ``positions``, or still waiting
(:attr:`StreamCore.waiting_positions`). The runner commits a source position only once it is done,
which is what makes delivery at-least-once; idempotent stores make it exactly one result.

A capture's identity is ``(camera_id, seq)``; a camera without a trigger counter (``seq == 0``) uses
the visible frame's ``capture_ts_ns`` in its place.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Hashable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from enum import StrEnum
from functools import partial
from typing import Any, TypeVar

import cv2
import numpy as np

from inspector.errors import InspectorError
from inspector.evidence import EvidenceBundle, build_evidence, kept_as, ok_sample_draw
from inspector.frame import DEFAULT_MAX_PIXELS, Frame, FrameDecodeError, Modality, decode_image
from inspector.model import CrackModel
from inspector.pipeline import InspectionResult, inspect_pair, to_grey
from inspector.report import overlay
from inspector.results import result_document
from inspector.sync import DEFAULT_MAX_WAIT_NS, SyncState, UnpairedReason, pair_frames
from inspector.verdict import VerdictRules

T = TypeVar("T")
U = TypeVar("U")

logger = logging.getLogger(__name__)

__all__ = [
    "Arrival",
    "InspectedJob",
    "Record",
    "RejectReason",
    "Rejection",
    "ShadowModel",
    "Step",
    "StreamCore",
    "StreamPolicy",
    "UnpairedFrame",
    "capture_key",
    "decode_record",
]


class RejectReason(StrEnum):
    """Why a record goes to the dead-letter topic (the ``dlq_reason`` header)."""

    TOO_LARGE = "too_large"
    BAD_HEADERS = "bad_headers"
    UNKNOWN_SCHEMA = "unknown_schema"
    BAD_IMAGE = "bad_image"
    WRONG_TOPIC = "wrong_topic"
    KEY_MISMATCH = "key_mismatch"
    CLOCK_SKEW = "clock_skew"
    NO_CALIBRATION = "no_calibration"
    UNINSPECTABLE = "uninspectable"


@dataclass(frozen=True)
class Record:
    """One received record, transport-neutral.

    Attributes:
        modality: The modality of the topic it came from (``frames.visible`` → ``visible``).
        key: The record key (the camera id), if any.
        value: The encoded image.
        headers: ``(name, value)`` pairs as the client returns them.
        position: Where it came from (e.g. topic, partition, offset); opaque to the core.

    """

    modality: Modality
    key: bytes | None
    value: bytes
    headers: Sequence[tuple[str, bytes | None]]
    position: Hashable


@dataclass(frozen=True)
class Rejection:
    """A record the core cannot use, and why."""

    record: Record
    reason: RejectReason
    detail: str


@dataclass(frozen=True)
class Arrival:
    """A decoded frame, its pixels and the record it came in (kept for the dead-letter topic)."""

    frame: Frame
    image: np.ndarray
    record: Record

    @property
    def position(self) -> Hashable:
        """Where the record came from."""
        return self.record.position


@dataclass(frozen=True)
class UnpairedFrame:
    """A frame given up on by the pairing (or dropped as stale); ``inspected`` when it went on visible-only."""

    frame: Frame
    reason: str
    position: Hashable
    inspected: bool = False


@dataclass(frozen=True)
class StreamPolicy:
    """Limits and choices of the streaming core (see ``WorkerSettings`` and ``EvidenceSettings`` for their meaning).

    ``evidence`` off (the default) keeps no evidence; on, every NG part and a share ``evidence_ok_fraction``
    of OK parts get an :class:`~inspector.evidence.EvidenceBundle` (docs/REVIEW.md, section 1).
    """

    batch_pairs: int = 4
    batch_wait_ns: int = 20_000_000
    pair_timeout_ns: int = DEFAULT_MAX_WAIT_NS
    tolerance_ns: int = 2_000_000
    deadline_ns: int = 0
    max_clock_skew_ns: int = 60_000_000_000
    visible_only_unpaired: bool = False
    max_record_bytes: int = 32 * 2**20
    max_pixels: int = DEFAULT_MAX_PIXELS
    default_mm_per_px: float | None = None
    overlay_size: int = 1024
    lanes: int = 1
    evidence: bool = False
    evidence_ok_fraction: float = 0.0
    evidence_jpeg_quality: int = 90

    @classmethod
    def from_settings(cls, worker: Any, lanes: int = 1, evidence: Any = None) -> StreamPolicy:
        """Build the policy from ``Settings.worker`` (milliseconds become nanoseconds) and ``inference.lanes``.

        ``evidence`` is ``Settings.evidence`` for a runner that writes evidence (``None``: keep none).
        """
        return cls(
            evidence=bool(evidence is not None and evidence.enabled),
            evidence_ok_fraction=evidence.ok_fraction if evidence is not None else 0.0,
            evidence_jpeg_quality=evidence.jpeg_quality if evidence is not None else 90,
            lanes=lanes,
            batch_pairs=worker.batch_pairs,
            batch_wait_ns=int(worker.batch_wait_ms * 1e6),
            pair_timeout_ns=int(worker.pair_timeout_ms * 1e6),
            tolerance_ns=int(worker.tolerance_ms * 1e6),
            deadline_ns=int(worker.deadline_ms * 1e6),
            max_clock_skew_ns=int(worker.max_clock_skew_ms * 1e6),
            visible_only_unpaired=worker.visible_only_unpaired,
            max_record_bytes=worker.max_record_bytes,
            max_pixels=worker.pixel_limit,
            default_mm_per_px=worker.mm_per_px,
        )


@dataclass(frozen=True)
class Step:
    """What one :meth:`StreamCore.feed` call decided about the records it was given."""

    rejected: tuple[Rejection, ...] = ()
    unpaired: tuple[UnpairedFrame, ...] = ()
    pairs: int = 0
    frames: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class InspectedJob:
    """One inspected capture: the document to store, its overlay, and the source positions it settles.

    ``evidence`` is the capture's evidence folder when the policy keeps one (``document["evidence"]`` is
    then its path); the runner writes it before it stores the document.
    """

    document: dict[str, Any]
    overlay_jpeg: bytes | None
    positions: tuple[Hashable, ...]
    inference_s: float
    evidence: EvidenceBundle | None = None
    shadow: dict[str, Any] | None = None  # the shadow model's comparison (StreamCore.compare_shadow), never the verdict


@dataclass(frozen=True)
class ShadowModel:
    """A candidate run beside the serving model on a share of captures (``inspector promote --shadow``).

    Attributes:
        model: The candidate.
        fraction: Share of captures it runs on, picked by a stable hash of ``camera_id:seq``.
        sha256: Its file's digest, reported with each comparison.

    """

    model: CrackModel
    fraction: float
    sha256: str


@dataclass
class _Job:
    visible: Arrival
    infrared: Arrival | None
    formed_ns: int


def capture_key(frame: Frame) -> tuple[str, int]:
    """``(camera_id, seq)`` of a capture; ``seq`` falls back to the capture time when the camera has no counter."""
    return frame.camera_id, frame.seq if frame.seq > 0 else frame.capture_ts_ns


def decode_record(
    record: Record, policy: StreamPolicy, *, wall_ns: int, scaled: Collection[str] = ()
) -> Arrival | Rejection:
    """Decode one record into a frame and its pixels, or say why it cannot be used (pure).

    ``scaled`` names the cameras with a calibration (their visible frames need no ``mm_per_px``).
    """
    if len(record.value) > policy.max_record_bytes:
        detail = f"record of {len(record.value)} bytes exceeds worker.max_record_bytes={policy.max_record_bytes}"
        return Rejection(record, RejectReason.TOO_LARGE, detail)
    try:
        frame = Frame.from_headers(record.headers)
    except FrameDecodeError as exc:
        reason = RejectReason.UNKNOWN_SCHEMA if "understands only" in str(exc) else RejectReason.BAD_HEADERS
        return Rejection(record, reason, str(exc))
    if (problem := _check_frame(record, frame, policy, wall_ns, scaled)) is not None:
        return problem
    try:
        image = decode_image(record.value, frame, max_pixels=policy.max_pixels)
    except FrameDecodeError as exc:
        return Rejection(record, RejectReason.BAD_IMAGE, str(exc))
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    return Arrival(frame, image, record)


def _check_frame(
    record: Record, frame: Frame, policy: StreamPolicy, wall_ns: int, scaled: Collection[str]
) -> Rejection | None:
    """The header checks beyond the schema: topic, key, clock and calibration."""
    problem: tuple[RejectReason, str] | None = None
    if frame.modality != record.modality:
        problem = RejectReason.WRONG_TOPIC, f"a {frame.modality} frame on the {record.modality} topic"
    elif record.key is not None and record.key != frame.camera_id.encode():
        detail = f"record key {record.key[:64]!r} differs from camera_id {frame.camera_id!r}"
        problem = RejectReason.KEY_MISMATCH, detail
    elif frame.capture_ts_ns - wall_ns > policy.max_clock_skew_ns:
        ahead = (frame.capture_ts_ns - wall_ns) / 1e9
        detail = f"capture time is {ahead:.1f} s ahead of this worker's clock: check the camera's clock (NTP/PTP)"
        problem = RejectReason.CLOCK_SKEW, detail
    elif (
        frame.modality == "visible"
        and frame.mm_per_px is None
        and policy.default_mm_per_px is None
        and frame.camera_id not in scaled
    ):
        problem = RejectReason.NO_CALIBRATION, "visible frame without mm_per_px and no default calibration configured"
    return Rejection(record, *problem) if problem is not None else None


class StreamCore:
    """Decode, pair, batch and inspect frames; the runner brings the records, the clocks and the sinks.

    With ``policy.lanes`` > 1 the records of one :meth:`feed` are decoded, and the pairs of one batch
    inspected, that many at a time on a thread pool: PNG decoding, OpenCV warps and the runtime's
    kernels release the GIL, so while one pair is in the model another is decoded or measured and no
    core sits idle. Results keep their batch order.

    Args:
        model: Any crack model (:func:`inspector.model.create_model`).
        policy: Batching, pairing and rejection limits.
        rules: Verdict rules (default: the model's own operating point where it has one, else ≥ 0.2 mm wide
            and ≥ 1 mm long is NG).
        model_width: Share of channels of the model variant, reported with every result.
        homographies: Per ``camera_id``, the rig's IR → visible homography (``inspector calibrate``);
            rigs not listed are taken as coaxial (:func:`inspector.pipeline.nominal_homography`).
        scales: Per ``camera_id``, the calibrated mm per visible pixel, used when a frame has none.

    """

    def __init__(
        self,
        model: CrackModel,
        policy: StreamPolicy | None = None,
        *,
        rules: VerdictRules | None = None,
        model_width: float = 1.0,
        homographies: Mapping[str, np.ndarray] | None = None,
        scales: Mapping[str, float] | None = None,
    ) -> None:
        self.model, self.policy, self.rules, self.model_width = model, policy or StreamPolicy(), rules, model_width
        self.homographies, self.scales = dict(homographies or {}), dict(scales or {})
        self._sync = SyncState()
        self._arrivals: dict[int, Arrival] = {}  # id(frame) -> arrival, for frames waiting in the pairing
        self._queue: list[_Job] = []
        lanes = self.policy.lanes
        self._pool = ThreadPoolExecutor(lanes, thread_name_prefix="lane") if lanes > 1 else None
        self.shadow: ShadowModel | None = None  # set between batches by the runner (workers.model_watch)

    def close(self) -> None:
        """Stop the lanes' threads (a core that is thrown away; one that lives with its process needs no call)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)

    def _map(self, function: Callable[[T], U], items: Sequence[T]) -> list[U]:
        """``function`` over ``items`` in order, on the lanes when there are several."""
        if self._pool is None or len(items) < 2:
            return [function(item) for item in items]
        return list(self._pool.map(function, items))

    @property
    def waiting_positions(self) -> list[Hashable]:
        """Positions of frames fed in but not yet settled (waiting for a partner or a batch)."""
        queued = [a.position for job in self._queue for a in (job.visible, job.infrared) if a is not None]
        return [a.position for a in self._arrivals.values()] + queued

    @property
    def queued_pairs(self) -> int:
        """Pairs waiting for the next batch."""
        return len(self._queue)

    @property
    def pairing_frames(self) -> int:
        """Frames waiting for their partner."""
        return len(self._arrivals)

    def feed(self, records: Sequence[Record], *, now_ns: int, wall_ns: int, pairing_ns: int | None = None) -> Step:
        """Take newly received records.

        Args:
            records: What arrived since the last call.
            now_ns: A monotonic clock (batch waits).
            wall_ns: Epoch time (capture-time checks: skew, deadline).
            pairing_ns: The clock the pairing timeout runs on (default ``now_ns``); a runner reading
                a backlog stops it so that partners still unread are not declared missing.

        """
        rejected: list[Rejection] = []
        unpaired: list[UnpairedFrame] = []
        fresh: dict[str, list[Frame]] = {"visible": [], "infrared": []}
        decode = partial(decode_record, policy=self.policy, wall_ns=wall_ns, scaled=self.scales)
        for decoded in self._map(decode, records):
            if isinstance(decoded, Rejection):
                rejected.append(decoded)
                continue
            frame = decoded.frame
            if self.policy.deadline_ns and wall_ns - frame.capture_ts_ns > self.policy.deadline_ns:
                unpaired.append(UnpairedFrame(frame, "stale", decoded.position))
                continue
            self._arrivals[id(frame)] = decoded
            fresh[frame.modality].append(frame)
        result = pair_frames(
            fresh["visible"], fresh["infrared"], tolerance_ns=self.policy.tolerance_ns, state=self._sync,
            now_ns=pairing_ns if pairing_ns is not None else now_ns, max_wait_ns=self.policy.pair_timeout_ns,
        )  # fmt: skip
        self._sync = result.state
        for pair in result.pairs:
            visible, infrared = self._arrivals.pop(id(pair.visible)), self._arrivals.pop(id(pair.infrared))
            self._queue.append(_Job(visible, infrared, now_ns))
        for lost in result.unpaired:
            arrival = self._arrivals.pop(id(lost.frame))
            go_on = (
                self.policy.visible_only_unpaired
                and lost.frame.modality == "visible"
                and lost.reason == UnpairedReason.NO_PARTNER
            )
            if go_on:
                self._queue.append(_Job(arrival, None, now_ns))
            unpaired.append(UnpairedFrame(lost.frame, str(lost.reason), arrival.position, inspected=go_on))
        counts = {"visible": len(fresh["visible"]), "infrared": len(fresh["infrared"])}
        return Step(tuple(rejected), tuple(unpaired), len(result.pairs), counts)

    def due(self, *, now_ns: int) -> bool:
        """A batch is full, or its first pair has waited ``batch_wait_ns``."""
        if not self._queue:
            return False
        full = len(self._queue) >= self.policy.batch_pairs
        return full or now_ns - self._queue[0].formed_ns >= self.policy.batch_wait_ns

    def inspect_batch(
        self, *, wall_ns: Callable[[], int], clock: Callable[[], float] | None = None
    ) -> tuple[list[InspectedJob], list[Rejection]]:
        """Inspect up to ``batch_pairs`` queued pairs; a pair the model cannot take is rejected, not raised.

        Args:
            wall_ns: Epoch nanoseconds, read when each document is made (its end-to-end time).
            clock: Seconds for the stage timings (default ``time.perf_counter``).

        """
        batch, self._queue = self._queue[: self.policy.batch_pairs], self._queue[self.policy.batch_pairs :]
        done: list[InspectedJob] = []
        rejected: list[Rejection] = []

        def inspect(job: _Job) -> InspectedJob | InspectorError:
            try:
                return self._inspect(job, wall_ns, clock)
            except InspectorError as exc:
                return exc

        for job, outcome in zip(batch, self._map(inspect, batch), strict=True):
            if isinstance(outcome, InspectedJob):
                done.append(outcome)
                continue
            for arrival in (job.visible, job.infrared):
                if arrival is not None:
                    logger.warning("capture %s cannot be inspected: %s", capture_key(arrival.frame), outcome)
                    rejected.append(Rejection(arrival.record, RejectReason.UNINSPECTABLE, str(outcome)))
        return done, rejected

    def forget(self, revoked: Callable[[Hashable], bool]) -> list[Hashable]:
        """Drop waiting frames and queued pairs whose position is revoked (a rebalance); return their positions."""
        dropped = [a.position for a in self._arrivals.values() if revoked(a.position)]
        self._arrivals = {k: a for k, a in self._arrivals.items() if not revoked(a.position)}
        keep = {id(a.frame) for a in self._arrivals.values()}
        self._sync = SyncState(
            pending=tuple(p for p in self._sync.pending if id(p.frame) in keep),
            offset_samples=self._sync.offset_samples,
            resolved=self._sync.resolved,
            default_offset_ns=self._sync.default_offset_ns,
        )
        kept: list[_Job] = []
        for job in self._queue:
            positions = [a.position for a in (job.visible, job.infrared) if a is not None]
            if any(revoked(p) for p in positions):
                dropped += positions
            else:
                kept.append(job)
        self._queue = kept
        return dropped

    def _inspect(self, job: _Job, wall_ns: Callable[[], int], clock: Callable[[], float] | None) -> InspectedJob:
        visible = job.visible.frame
        mm_per_px = visible.mm_per_px or self.scales.get(visible.camera_id) or self.policy.default_mm_per_px
        assert mm_per_px is not None  # decode_record rejects visible frames without a scale
        camera_id, seq = capture_key(visible)
        extra = {"clock": clock} if clock is not None else {}
        result, probability = inspect_pair(
            job.visible.image, job.infrared.image if job.infrared is not None else None,
            self.homographies.get(camera_id), mm_per_px,
            self.model, rules=self.rules, sample_id=f"{camera_id}:{seq}", part_id=visible.part_id, **extra,
        )  # fmt: skip
        overlay_jpeg = None
        if result.verdict == "NG":
            rgb = overlay(to_grey(job.visible.image), probability >= 0.5, size=self.policy.overlay_size)
            # JPEG: 3 ms and ~0.3 MB for a 1024 px overlay where PNG took 26 ms and ~1.8 MB (textured surfaces)
            ok, data = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 90])
            overlay_jpeg = data.tobytes() if ok else None
        shadow = self.compare_shadow(job, result)
        evidence = self._evidence(job, result, probability, disputed=shadow is not None and not shadow["agree"])
        document = result_document(
            result, camera_id=camera_id, seq=seq, capture_ts_ns=visible.capture_ts_ns, stored_ns=wall_ns(),
            model_width=self.model_width,
        )  # fmt: skip
        if job.infrared is None:
            document["infrared"] = "missing"
        if evidence is not None:
            document["evidence"] = evidence.path
        positions = tuple(a.position for a in (job.visible, job.infrared) if a is not None)
        model_s = result.timings_ms.get("model", 0.0) / 1e3
        return InspectedJob(document, overlay_jpeg, positions, model_s, evidence, shadow)

    def _evidence(
        self, job: _Job, result: InspectionResult, probability: np.ndarray, *, disputed: bool = False
    ) -> EvidenceBundle | None:
        """The capture's evidence when the policy keeps it, else ``None``.

        Kept: every NG part, a share of OK ones, and the OK parts a shadow model disputed (``disputed``).

        Runs in the lanes with the inspection, so the encoding is parallel. A capture whose evidence
        cannot be made (a camera id that cannot name a folder) is logged and stored without it.
        """
        if not self.policy.evidence:
            return None
        visible = job.visible.frame
        camera_id, seq = capture_key(visible)
        kept = kept_as(camera_id, seq, result.verdict, self.policy.evidence_ok_fraction, disputed=disputed)
        if kept is None:
            return None
        infrared = job.infrared
        received = infrared.record.value if infrared is not None and infrared.frame.encoding == "png" else None
        encoding = visible.encoding
        as_sent = (encoding, job.visible.record.value) if encoding in ("png", "jpeg") else None
        try:
            return build_evidence(
                result, probability, job.visible.image, infrared.image if infrared is not None else None,
                ir_to_visible=self.homographies.get(camera_id), camera_id=camera_id, seq=seq,
                capture_ts_ns=visible.capture_ts_ns, kept=kept, jpeg_quality=self.policy.evidence_jpeg_quality,
                infrared_png=received, visible_encoded=as_sent,  # the frames as received: no second encoding
            )  # fmt: skip
        except (InspectorError, cv2.error) as exc:
            logger.warning("capture %s keeps no evidence: %s", (camera_id, seq), exc)
            return None

    def compare_shadow(self, job: _Job, result: InspectionResult) -> dict[str, Any] | None:
        """Run the shadow model on a sampled capture's inputs; ``{"verdict", "sha256", "agree"}`` or ``None``.

        A capture is sampled when its draw (:func:`inspector.evidence.ok_sample_draw` of ``camera_id:seq``)
        is below ``shadow.fraction``: a re-delivered capture is compared again or not at all, alike. A
        disputed OK part keeps its evidence (``kept: "shadow"``), so the review queue can show it. The
        comparison is returned beside the result and never changes it; a shadow model that fails is
        logged and compares nothing.
        """
        shadow = self.shadow
        if shadow is None:
            return None
        visible = job.visible.frame
        camera_id, seq = capture_key(visible)
        if ok_sample_draw(camera_id, seq) >= shadow.fraction:
            return None
        mm_per_px = visible.mm_per_px or self.scales.get(camera_id) or self.policy.default_mm_per_px
        try:
            theirs, _ = inspect_pair(
                job.visible.image, job.infrared.image if job.infrared is not None else None,
                self.homographies.get(camera_id), float(mm_per_px or 0.0),
                shadow.model, rules=self.rules, sample_id=f"{camera_id}:{seq}", part_id=visible.part_id,
            )  # fmt: skip
        except Exception as exc:  # the candidate must never cost a result
            logger.warning("shadow model %s failed on capture %s: %s", shadow.sha256[:16], (camera_id, seq), exc)
            return None
        return {"verdict": theirs.verdict, "sha256": shadow.sha256, "agree": theirs.verdict == result.verdict}
