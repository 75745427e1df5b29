"""The model registry: which model the inspection workers serve, which one shadows it, and what came before.

``inspector promote`` writes it; every inspection worker with ``registry.watch`` reads it
(:class:`workers.model_watch.ModelWatcher`). It is a few Redis keys plus a shared folder of model
files (docs/REVIEW.md, section 4)::

    registry = ModelRegistry(client, "inspector", Path("/srv/models"), clock=utc_now)
    entry = registry.promote(Path("runs/7/crack.pt"), who="ana", metrics={"f1": 0.88})
    registry.shadow(Path("runs/8/crack.pt"), fraction=0.2, who="ana")
    registry.rollback(who="ana")                 # the previous entry is active again

Keys (``prefix`` is ``redis.key_prefix``):

* ``{prefix}:model:active``: the served model, one :class:`RegistryEntry` as JSON.
* ``{prefix}:model:history``: a list, newest first, of the entries that were active before
  (at most :data:`HISTORY_LENGTH`). ``rollback`` pops its head back into ``active``.
* ``{prefix}:model:shadow``: the candidate run beside the active model on a share of captures.
* ``{prefix}:review:shadow``: a stream of the shadow model's disagreements, for the review queue.

Every change of ``active`` and ``history`` is one optimistic transaction (``WATCH`` + ``MULTI``), so a
crash or a concurrent promotion never leaves a new active entry without its predecessor in the
history, nor a history entry that is also lost from ``active``. Model files are copied to
``models_dir/{sha256[:16]}/{name}`` (the file keeps its name, so the ONNX export cached for the
original serves the copy too; the ``.md`` model card beside it, when the source has one) before the
key names them, atomically (a temporary file renamed into place), so a worker never reads half a file.
``models_dir`` must be the same folder, at the same path, for every worker.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from inspector.export_cache import file_sha256
from workers.errors import WorkerError

logger = logging.getLogger(__name__)

__all__ = ["HISTORY_LENGTH", "ModelRegistry", "RegistryEntry", "RegistryError", "utc_now"]

HISTORY_LENGTH = 50
SHADOW_REVIEW_MAXLEN = 10_000


class RegistryError(WorkerError):
    """The registry cannot do what was asked (nothing to roll back to, a missing file, a bad key)."""


def utc_now() -> datetime:
    """The wall clock, in UTC: the default clock of :class:`ModelRegistry`."""
    return datetime.now(UTC)


@dataclass(frozen=True)
class RegistryEntry:
    """One registry record: a model file and who put it there, when, with which figures.

    Attributes:
        path: The model file in ``registry.models_dir`` (absolute).
        sha256: SHA-256 of the file; a worker refuses a file whose digest differs.
        name: The model's name (its file stem unless given).
        metrics: Figures the promoter vouches for (e.g. from ``inspector eval --json``).
        who: Who promoted it.
        when: When, ISO 8601 in UTC.
        fraction: For a shadow entry, the share of captures it runs on; ``None`` for an active one.
        action: ``promote``, ``rollback`` (restored from the history) or ``shadow``.

    """

    path: str
    sha256: str
    name: str
    who: str
    when: str
    metrics: dict[str, Any] = field(default_factory=dict)
    fraction: float | None = None
    action: str = "promote"

    def to_json(self) -> str:
        """The entry as stored in Redis."""
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, raw: bytes | str, key: str = "registry entry") -> RegistryEntry:
        """Parse a stored entry; :class:`RegistryError` naming ``key`` when it is not one."""
        try:
            data = json.loads(raw)
            return cls(
                path=str(data["path"]), sha256=str(data["sha256"]), name=str(data.get("name", "")),
                who=str(data.get("who", "")), when=str(data.get("when", "")), metrics=dict(data.get("metrics") or {}),
                fraction=None if data.get("fraction") is None else float(data["fraction"]),
                action=str(data.get("action", "promote")),
            )  # fmt: skip
        except (ValueError, TypeError, KeyError) as exc:
            msg = f"{key} is not a registry entry ({exc}): promote a model again with `inspector promote MODEL`"
            raise RegistryError(msg) from exc


class ModelRegistry:
    """The registry keys in Redis and the shared model folder (see the module docs).

    Args:
        client: A ``redis.Redis`` client (bytes responses).
        prefix: ``redis.key_prefix``.
        models_dir: ``registry.models_dir``: where promoted files are copied, shared by every worker.
        clock: The wall clock for ``when`` (UTC); tests pass a fixed one.

    """

    def __init__(self, client: Any, prefix: str, models_dir: Path, *, clock: Callable[[], datetime] = utc_now) -> None:
        self.client, self.prefix, self.models_dir, self.clock = client, prefix, Path(models_dir), clock
        self.active_key = f"{prefix}:model:active"
        self.history_key = f"{prefix}:model:history"
        self.shadow_key = f"{prefix}:model:shadow"
        self.review_key = f"{prefix}:review:shadow"

    # -- reading -----------------------------------------------------------------------------------

    def active(self) -> RegistryEntry | None:
        """The promoted model, or ``None`` when nothing was ever promoted."""
        raw = self.client.get(self.active_key)
        return None if raw is None else RegistryEntry.from_json(raw, self.active_key)

    def shadow_entry(self) -> RegistryEntry | None:
        """The shadow candidate, or ``None``."""
        raw = self.client.get(self.shadow_key)
        return None if raw is None else RegistryEntry.from_json(raw, self.shadow_key)

    def history(self, n: int = 10) -> list[RegistryEntry]:
        """The ``n`` entries active before the current one, newest first."""
        return [
            RegistryEntry.from_json(raw, self.history_key) for raw in self.client.lrange(self.history_key, 0, n - 1)
        ]

    # -- writing -----------------------------------------------------------------------------------

    def promote(
        self, path: Path, *, who: str, metrics: Mapping[str, Any] | None = None, name: str | None = None
    ) -> RegistryEntry:
        """Copy ``path`` into ``models_dir`` and make it the active model; the previous one goes to the history.

        Promoting the shadow candidate also ends the shadow run (it would compare the model with itself).

        Raises:
            RegistryError: The file is missing, or it is the active model already.

        """
        entry = self._entry(path, who=who, metrics=metrics, name=name, fraction=None, action="promote")
        current = self.active()
        if current is not None and current.sha256 == entry.sha256:
            msg = (
                f"{path} (sha256 {entry.sha256[:16]}) is the active model already, promoted by {current.who} at "
                f"{current.when}: nothing to do"
            )
            raise RegistryError(msg)

        def write(pipe: Any, previous: bytes | None) -> None:
            if previous is not None:
                pipe.lpush(self.history_key, previous)
                pipe.ltrim(self.history_key, 0, HISTORY_LENGTH - 1)
            pipe.set(self.active_key, entry.to_json())

        self._transaction(write)
        shadow = self.shadow_entry()
        if shadow is not None and shadow.sha256 == entry.sha256:
            self.client.delete(self.shadow_key)
            logger.info("the promoted model was the shadow candidate: shadow run ended")
        logger.info("%s promoted %s (sha256 %s)", who, entry.path, entry.sha256)
        return entry

    def rollback(self, *, who: str) -> RegistryEntry:
        """Make the newest history entry active again (the current one is dropped, not pushed).

        Raises:
            RegistryError: The history is empty.

        """
        restored: list[RegistryEntry] = []

        def write(pipe: Any, _previous: bytes | None) -> None:
            head = pipe.lindex(self.history_key, 0)
            if head is None:
                msg = (
                    f"nothing to roll back to: {self.history_key} is empty (only one model was ever promoted); "
                    "promote the model you want with `inspector promote MODEL`"
                )
                raise RegistryError(msg)
            back = replace(
                RegistryEntry.from_json(head, self.history_key), who=who, when=self._now(), action="rollback"
            )
            restored[:] = [back]
            pipe.multi()
            pipe.lpop(self.history_key)
            pipe.set(self.active_key, back.to_json())

        self._transaction(write, explicit_multi=True)
        logger.info("%s rolled back to %s (sha256 %s)", who, restored[0].path, restored[0].sha256)
        return restored[0]

    def shadow(
        self, path: Path, *, fraction: float, who: str, metrics: Mapping[str, Any] | None = None
    ) -> RegistryEntry:
        """Run ``path`` beside the active model on ``fraction`` of the captures (0 < fraction ≤ 1).

        Raises:
            RegistryError: ``fraction`` out of range, or the file is missing.

        """
        if not 0.0 < fraction <= 1.0:
            raise RegistryError(f"--fraction {fraction} must be in (0, 1]: e.g. 0.2 runs the shadow on 1 capture in 5")
        entry = self._entry(path, who=who, metrics=metrics, name=None, fraction=fraction, action="shadow")
        self.client.set(self.shadow_key, entry.to_json())
        logger.info(
            "%s put %s (sha256 %s) in shadow on %.0f%% of captures", who, entry.path, entry.sha256, 100 * fraction
        )
        return entry

    def clear_shadow(self, *, who: str) -> RegistryEntry | None:
        """End the shadow run; returns the entry it ended, or ``None`` when there was none."""
        entry = self.shadow_entry()
        self.client.delete(self.shadow_key)
        if entry is not None:
            logger.info("%s ended the shadow run of %s (sha256 %s)", who, entry.path, entry.sha256)
        return entry

    def review_disagreement(self, key: str, verdict: str, shadow_verdict: str, shadow_sha: str) -> None:
        """Add one shadow disagreement to ``{prefix}:review:shadow`` (the review queue reads it)."""
        fields = {"key": key, "verdict": verdict, "shadow_verdict": shadow_verdict, "shadow_sha": shadow_sha}
        self.client.xadd(self.review_key, fields, maxlen=SHADOW_REVIEW_MAXLEN, approximate=True)

    # -- internals ---------------------------------------------------------------------------------

    def _now(self) -> str:
        return self.clock().astimezone(UTC).isoformat(timespec="seconds")

    def _entry(
        self, path: Path, *, who: str, metrics: Mapping[str, Any] | None, name: str | None, fraction: float | None,
        action: str,
    ) -> RegistryEntry:  # fmt: skip
        path = Path(path)
        if not path.is_file():
            raise RegistryError(f"model file {path} does not exist: give the path of a .pt, .onnx or .engine file")
        sha = file_sha256(path)
        stored = self._store(path, sha)
        return RegistryEntry(
            path=str(stored), sha256=sha, name=name or path.stem, who=who, when=self._now(),
            metrics=dict(metrics or {}), fraction=fraction, action=action,
        )  # fmt: skip

    def _store(self, path: Path, sha: str) -> Path:
        """Copy the file (and its ``.md`` card) into ``models_dir`` unless an intact copy is there already."""
        target = (self.models_dir / sha[:16] / path.name).resolve()
        target.parent.mkdir(parents=True, exist_ok=True)
        if not (target.is_file() and file_sha256(target) == sha):
            _copy_atomically(path, target)
            if file_sha256(target) != sha:
                raise RegistryError(f"{path} changed while it was copied to {target}: promote it again")
        card = path.with_suffix(".md")
        if card.is_file() and card != path:
            _copy_atomically(card, target.with_suffix(".md"))
        return target

    def _transaction(self, write: Callable[[Any, bytes | None], None], *, explicit_multi: bool = False) -> None:
        """Run ``write`` in ``WATCH active history`` + ``MULTI``, retried when another client changed either key."""
        import redis

        with self.client.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(self.active_key, self.history_key)
                    previous = pipe.get(self.active_key)
                    if not explicit_multi:
                        pipe.multi()
                    write(pipe, previous)
                    pipe.execute()
                    return
                except redis.WatchError:
                    continue


def _copy_atomically(source: Path, target: Path) -> None:
    """Copy ``source`` to ``target`` through a temporary file in the same folder, renamed into place."""
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-", suffix=target.suffix)
    os.close(fd)
    try:
        shutil.copyfile(source, tmp)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
