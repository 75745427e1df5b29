"""Follow the model registry from a running worker: load promoted models in the background, hand them over verified.

The inspection worker calls :meth:`ModelWatcher.poll` at the start of every turn of its loop, that is
between batches. The watcher reads the registry keys at most every ``poll_s``; when the active (or
shadow) entry names another SHA-256 than the one serving, it loads that file on a background thread,
so the loop keeps inspecting with the old model meanwhile. A later ``poll`` returns the loaded model
in a :class:`Change`, and the worker swaps it in before its next batch::

    watcher = ModelWatcher(registry, load=lambda path: create_model(str(path)), poll_s=2.0)
    change = watcher.poll(now=time.monotonic())
    if change.active is not None:
        core.model = change.active.model        # between batches: no capture sees half a swap

Before loading, the file's SHA-256 is checked against the entry's (a file replaced or damaged in the
shared folder is refused). Any failure — missing file, digest mismatch, a model that does not load —
keeps the old model serving, logs an ERROR naming the file, the SHA and the reason, and counts
``inspector_worker_model_load_failures_total{role}``. The same SHA is not tried again for
:data:`RETRY_AFTER_S` seconds, so a broken promotion costs one load a minute, not one per poll.
A Redis error while reading the keys is logged and leaves everything as it is.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Literal, Protocol

from inspector.config import Settings
from inspector.export_cache import file_sha256
from inspector.model import CrackModel, create_model
from workers.metrics import WorkerMetrics
from workers.registry import ModelRegistry, RegistryEntry, RegistryError

logger = logging.getLogger(__name__)

__all__ = [
    "RETRY_AFTER_S", "Change", "LoadedModel", "ModelWatcher", "RegistryView", "describe_model", "watcher_from_settings",
]  # fmt: skip

RETRY_AFTER_S = 60.0

Role = Literal["active", "shadow"]
ROLES: tuple[Role, ...] = ("active", "shadow")


class RegistryView(Protocol):
    """What a worker uses of :class:`~workers.registry.ModelRegistry`: the two entries, and the review stream."""

    def active(self) -> RegistryEntry | None: ...  # noqa: D102

    def shadow_entry(self) -> RegistryEntry | None: ...  # noqa: D102

    def review_disagreement(self, key: str, verdict: str, shadow_verdict: str, shadow_sha: str) -> None: ...  # noqa: D102


def describe_model(model: CrackModel, sha256: str = "") -> dict[str, Any]:
    """``name``, ``version``, ``width``, ``backend``, ``sha256`` of a model, as the worker's model metric wants."""
    metadata = dict(getattr(model, "metadata", {}) or {})
    return {
        "name": model.name,
        "version": model.version,
        "width": float(metadata.get("width", 1.0)),
        "backend": str(metadata.get("backend", "")),
        "sha256": sha256 or str(metadata.get("sha256", "")),
    }


@dataclass(frozen=True)
class LoadedModel:
    """A registry entry and the model loaded from its verified file."""

    entry: RegistryEntry
    model: CrackModel

    @property
    def width(self) -> float:
        """Share of channels the model keeps (its metadata's ``width``; 1.0 when it has none)."""
        return float(describe_model(self.model)["width"])

    def info(self) -> dict[str, Any]:
        """What the worker's model metric reports about it (see :func:`describe_model`)."""
        return describe_model(self.model, self.entry.sha256)


@dataclass(frozen=True)
class Change:
    """What a :meth:`ModelWatcher.poll` asks the worker to apply now; empty when nothing changed.

    Attributes:
        active: A newly promoted (or rolled back) model to serve.
        shadow: A new shadow model, or the same one with a new fraction.
        shadow_cleared: The shadow run ended: stop running it.

    """

    active: LoadedModel | None = None
    shadow: LoadedModel | None = None
    shadow_cleared: bool = False

    def __bool__(self) -> bool:
        return self.active is not None or self.shadow is not None or self.shadow_cleared


@dataclass
class _Load:
    """One background load: its entry, and when finished, the model or the reason it failed."""

    entry: RegistryEntry
    done: threading.Event = field(default_factory=threading.Event)
    model: CrackModel | None = None
    error: str | None = None


def _in_thread(work: Callable[[], None]) -> None:
    threading.Thread(target=work, name="model-load", daemon=True).start()


class ModelWatcher:
    """Poll the registry, load new models in the background, return verified ones (see the module docs).

    Args:
        registry: The registry to read (:class:`RegistryView`; the worker also queues shadow disagreements on it).
        load: Builds a model from a file (``create_model(str(path), inference=...)``); may raise anything.
        poll_s: Least time between two reads of the registry keys (``registry.poll_s``).
        clock: Monotonic seconds, read by :meth:`poll` when it is given no ``now``.
        metrics: Counts load failures; ``None`` counts nothing.
        start: Runs a load off the loop (default: a daemon thread); tests pass ``lambda work: work()``.
        retry_after_s: Least time before a SHA that failed is tried again.

    """

    def __init__(
        self,
        registry: RegistryView,
        load: Callable[[Path], CrackModel],
        poll_s: float,
        clock: Callable[[], float] = time.monotonic,
        *,
        metrics: WorkerMetrics | None = None,
        start: Callable[[Callable[[], None]], None] = _in_thread,
        retry_after_s: float = RETRY_AFTER_S,
    ) -> None:
        self.registry, self.load, self.poll_s, self.clock = registry, load, poll_s, clock
        self.metrics, self.start, self.retry_after_s = metrics, start, retry_after_s
        self.serving: dict[Role, RegistryEntry | None] = dict.fromkeys(ROLES)
        self.wanted: dict[Role, RegistryEntry | None] = dict.fromkeys(ROLES)
        self._loads: dict[Role, _Load] = {}
        self._ready: dict[Role, LoadedModel] = {}
        self._failed: dict[tuple[Role, str], float] = {}  # (role, sha) -> when it last failed
        self._shadow_model: CrackModel | None = None
        self._last_read: float | None = None

    def load_active_now(self, now: float | None = None) -> LoadedModel | None:
        """At start: load the registry's active model synchronously; ``None`` when there is none or it fails.

        A failure is logged and counted like a background one (and not retried for a minute); the
        caller then serves its configured model.
        """
        now = self.clock() if now is None else now
        try:
            entry = self.registry.active()
        except Exception as exc:  # Redis away or a damaged key: start on the configured model
            logger.error("cannot read the model registry (%s): serving the configured model", exc)
            return None
        if entry is None:
            return None
        self.wanted["active"] = entry
        job = _Load(entry)
        self._run(job)
        if job.model is None:
            self._failed_load("active", job, now)
            return None
        self.serving["active"] = entry
        return LoadedModel(entry, job.model)

    def poll(self, now: float | None = None) -> Change:
        """Read the registry if ``poll_s`` has passed, start the loads it needs, and return finished ones.

        Call it between batches: the models it returns are ready to serve (their file verified).
        """
        now = self.clock() if now is None else now
        self._harvest(now)  # frees a role whose load finished, so the read below may start the next one
        if self._last_read is None or now - self._last_read >= self.poll_s:
            self._last_read = now
            self._read(now)
            self._harvest(now)
        return self._change()

    # -- internals ---------------------------------------------------------------------------------

    def _read(self, now: float) -> None:
        try:
            wanted = {"active": self.registry.active(), "shadow": self.registry.shadow_entry()}
        except Exception as exc:  # Redis away or a damaged key: keep serving what serves
            logger.warning("cannot read the model registry (%s): keeping the models serving", exc)
            return
        for role in ROLES:
            entry = self.wanted[role] = wanted[role]
            if entry is None or role in self._loads:
                continue
            serving = self.serving[role]
            if serving is not None and serving.sha256 == entry.sha256:
                continue
            last_failure = self._failed.get((role, entry.sha256))
            if last_failure is not None and now - last_failure < self.retry_after_s:
                continue
            job = self._loads[role] = _Load(entry)
            logger.info("loading the %s model %s (sha256 %s) in the background", role, entry.path, entry.sha256)
            self.start(partial(self._run, job))

    def _run(self, job: _Load) -> None:
        """Verify the file's digest, then load it; never raises (the outcome is in ``job``)."""
        try:
            path = Path(job.entry.path)
            if not path.is_file():
                raise RegistryError("the file is missing (is registry.models_dir shared with this worker?)")
            sha = file_sha256(path)
            if sha != job.entry.sha256:
                raise RegistryError(f"its SHA-256 is {sha}, not the registry's: the file was replaced or damaged")
            model = self.load(path)
            loaded_sha = str((getattr(model, "metadata", None) or {}).get("sha256", "") or sha)
            if loaded_sha != sha:  # the file changed between the check and the load
                raise RegistryError(f"the loaded model's SHA-256 is {loaded_sha}, not the registry's")
            job.model = model
        except Exception as exc:  # any load failure keeps the old model serving
            job.error = f"{type(exc).__name__}: {exc}"
        finally:
            job.done.set()

    def _harvest(self, now: float) -> None:
        """Take the finished loads: a model still wanted becomes ready (and serving), a failure is reported."""
        for role in ROLES:
            job = self._loads.get(role)
            if job is None or not job.done.is_set():
                continue
            del self._loads[role]
            if job.model is None:
                self._failed_load(role, job, now)
                continue
            wanted = self.wanted[role]
            if wanted is None or wanted.sha256 != job.entry.sha256:
                logger.info("the %s model %s was replaced while loading: dropped", role, job.entry.sha256)
                continue
            self.serving[role] = wanted
            self._ready[role] = LoadedModel(wanted, job.model)
            if role == "shadow":
                self._shadow_model = job.model

    def _change(self) -> Change:
        """What the worker applies now: the ready models, and a shadow that ended or changed its fraction."""
        active, shadow = self._ready.pop("active", None), self._ready.pop("shadow", None)
        shadow_cleared = False
        serving_shadow, wanted_shadow = self.serving["shadow"], self.wanted["shadow"]
        if shadow is None and serving_shadow is not None:
            if wanted_shadow is None:
                self.serving["shadow"], self._shadow_model, shadow_cleared = None, None, True
            elif wanted_shadow.sha256 == serving_shadow.sha256 and wanted_shadow != serving_shadow:
                assert self._shadow_model is not None
                self.serving["shadow"] = wanted_shadow  # same model, new fraction
                shadow = LoadedModel(wanted_shadow, self._shadow_model)
        return Change(active, shadow, shadow_cleared)

    def _failed_load(self, role: Role, job: _Load, now: float) -> None:
        self._failed[(role, job.entry.sha256)] = now
        serving = self.serving[role]
        if serving is not None:
            keeping = f"keeping {serving.sha256} serving"
        else:
            keeping = "keeping the configured model" if role == "active" else "no shadow runs"
        logger.error(
            "cannot load the %s model %s (sha256 %s): %s; %s, next try in %.0f s",
            role, job.entry.path, job.entry.sha256, job.error, keeping, self.retry_after_s,
        )  # fmt: skip
        if self.metrics is not None:
            self.metrics.model_load_failures.labels(role=role).inc()


def watcher_from_settings(settings: Settings, client: Any, metrics: WorkerMetrics | None = None) -> ModelWatcher | None:
    """An inspection worker's watcher on ``{redis.key_prefix}:model:*``; ``None`` when ``registry.watch`` is off.

    Models load as the configured one does: ``create_model(path, inference=settings.inference)``.
    """
    if not settings.registry.watch:
        return None
    registry = ModelRegistry(client, settings.redis.key_prefix, settings.registry.models_dir)
    inference = settings.inference.model_dump()

    def load(path: Path) -> CrackModel:
        return create_model(str(path), inference=inference)

    return ModelWatcher(registry, load, settings.registry.poll_s, metrics=metrics)
