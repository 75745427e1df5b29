"""The evidence folder on disk: atomic writes, the one safe way to read it, and retention by age and size.

    store = EvidenceStore(settings.evidence.root, settings.evidence.max_age_days, settings.evidence.max_bytes)
    store.write(bundle)                           # {root}/{day}/{camera_id}/{seq}/, all files or none
    store.resolve("2025-12-06/rig-1/42", "visible.jpg")   # a Path inside root, or EvidenceError
    store.prune(time.time())                      # every evidence.prune_every_s, from any worker

Layout and contract: docs/REVIEW.md, section 1 (``inspector.evidence/1``; the bundles come from
:func:`inspector.evidence.build_evidence`). A folder is written into ``{root}/.tmp-<uuid>/`` and renamed
into place, so a reader never sees half of one; a capture re-delivered after its folder exists
leaves the folder as it is. Every path goes through :meth:`EvidenceStore.resolve`, which refuses
anything that would leave the root (``..``, absolute paths, NUL bytes, symlinks pointing out). Several
workers may write and prune one shared folder: every delete tolerates a folder already gone.

:class:`EvidenceKeeper` is the inspection worker's use of it: each job's bundle is written before its
result is stored (a failed write drops the result's ``evidence`` key, never the result), and a prune
runs in a background thread every ``evidence.prune_every_s``.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any

from inspector.evidence import EvidenceBundle
from workers.errors import WorkerError
from workers.metrics import WorkerMetrics

__all__ = ["STALE_TEMP_S", "EvidenceError", "EvidenceKeeper", "EvidenceStore", "PruneReport"]

logger = logging.getLogger(__name__)

STALE_TEMP_S = 3600.0
"""A ``.tmp-*`` folder older than this was left by a worker that died mid-write: prune deletes it."""
_TEMP_PREFIX = ".tmp-"
_DAY_S = 86400.0


class EvidenceError(WorkerError):
    """A path into the evidence folder was refused (it would leave the root), or the root is unusable."""


@dataclass(frozen=True)
class PruneReport:
    """What one :meth:`EvidenceStore.prune` did.

    Attributes:
        expired: Capture folders deleted for their age.
        evicted: Capture folders deleted, oldest first, to get under ``max_bytes``.
        freed_bytes: Bytes of the folders this prune deleted (folders another worker deleted first not counted).
        captures: Capture folders left.
        total_bytes: Bytes of the files left.
        stale_temps: Abandoned ``.tmp-*`` folders deleted.

    """

    expired: int = 0
    evicted: int = 0
    freed_bytes: int = 0
    captures: int = 0
    total_bytes: int = 0
    stale_temps: int = 0


@dataclass(frozen=True)
class _Capture:
    path: Path
    day: float  # the UTC midnight of its day folder, epoch seconds
    mtime: float
    nbytes: int


def _day_start(name: str) -> float | None:
    try:
        return datetime.strptime(name, "%Y-%m-%d").replace(tzinfo=UTC).timestamp()
    except ValueError:
        return None


def _ignore_missing(function: Any, path: str, exc_info: Any) -> None:
    """``shutil.rmtree`` error handler: a file or folder already deleted (by another worker) is fine."""
    if not isinstance(exc_info[1], FileNotFoundError):
        raise exc_info[1]


def _folder_bytes(path: Path) -> int:
    """Bytes of the regular files directly in ``path`` (0 when it is gone)."""
    total = 0
    try:
        with os.scandir(path) as entries:
            for entry in entries:
                try:
                    if entry.is_file(follow_symlinks=False):
                        total += entry.stat(follow_symlinks=False).st_size
                except FileNotFoundError:
                    continue
    except (FileNotFoundError, NotADirectoryError):
        return 0
    return total


def _check_name(name: str) -> None:
    """A file name in a capture folder is one plain component."""
    if not name or name in (".", "..") or "/" in name or "\\" in name or "\0" in name:
        raise EvidenceError(f"evidence file name {name!r} refused: one plain file name is expected")


def _subfolders(path: Path) -> list[os.DirEntry[str]]:
    """Real (not symlinked) sub-folders of ``path``; none when it is gone."""
    try:
        with os.scandir(path) as entries:
            return [e for e in entries if e.is_dir(follow_symlinks=False)]
    except (FileNotFoundError, NotADirectoryError):
        return []


class EvidenceStore:
    """One evidence folder (``evidence.root``): write bundles, resolve paths safely, prune.

    Args:
        root: The folder (created if missing); nothing is ever written or deleted outside it.
        max_age_days: Capture folders older than this are deleted by :meth:`prune`.
        max_bytes: Then the oldest are deleted until the files left take at most this many bytes.

    Raises:
        EvidenceError: ``root`` cannot be created.

    """

    def __init__(self, root: Path | str, max_age_days: float, max_bytes: int) -> None:
        try:
            Path(root).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            msg = f"evidence.root {root} cannot be created ({exc}): mount a writable volume there or set evidence.root"
            raise EvidenceError(msg) from exc
        self.root = Path(root).resolve()
        self.max_age_s = max_age_days * _DAY_S
        self.max_bytes = max_bytes

    @classmethod
    def from_settings(cls, settings: Any) -> EvidenceStore:
        """The store of ``Settings.evidence``."""
        return cls(settings.root, settings.max_age_days, settings.max_bytes)

    # -- the one way in ----------------------------------------------------------------------------

    def resolve(self, relative: str, name: str | None = None) -> Path:
        """The absolute path of ``{root}/{relative}[/{name}]``, checked to stay inside the root.

        The path need not exist. Symlinks are followed before the check, so a link pointing out of
        the root is refused like ``..`` is.

        Args:
            relative: A path relative to the root, ``/``-separated (e.g. a result's ``evidence`` field).
            name: A file name inside it (one plain component, e.g. ``visible.jpg``).

        Raises:
            EvidenceError: ``relative`` is empty, absolute, contains ``..`` or a NUL byte; ``name`` is not one
                plain component; or the resolved path is outside the root. The message says which.

        """
        if not isinstance(relative, str) or not relative.strip("/"):
            raise EvidenceError(f"evidence path {relative!r} refused: empty")
        if "\0" in relative or (name is not None and "\0" in name):
            raise EvidenceError(f"evidence path {relative!r} refused: it contains a NUL byte")
        if relative.startswith(("/", "\\")) or PurePosixPath(relative).is_absolute() or ":" in relative[:3]:
            raise EvidenceError(f"evidence path {relative!r} refused: absolute paths are not allowed")
        parts = relative.replace("\\", "/").split("/")
        if ".." in parts:
            raise EvidenceError(f"evidence path {relative!r} refused: '..' is not allowed")
        if name is not None:
            _check_name(name)
        kept = [p for p in parts if p not in ("", ".")]
        if not kept:
            raise EvidenceError(f"evidence path {relative!r} refused: it names the root itself, not a capture")
        candidate = self.root.joinpath(*kept)
        if name is not None:
            candidate = candidate / name
        resolved = candidate.resolve()
        if resolved == self.root or not resolved.is_relative_to(self.root):
            where = relative if name is None else f"{relative}/{name}"
            raise EvidenceError(f"evidence path {where!r} refused: it resolves outside {self.root} (a symlink?)")
        return resolved

    # -- writing -----------------------------------------------------------------------------------

    def write(self, bundle: EvidenceBundle) -> bool:
        """Write one capture's folder atomically: all its files appear at once, or none.

        The files go into ``{root}/.tmp-<uuid>/`` and the folder is renamed to ``{root}/{bundle.path}``.
        When that folder already exists the capture was re-delivered: the copy is discarded and the
        folder left as it is.

        Returns:
            True when the folder was written now, False when it was there already.

        Raises:
            EvidenceError: The bundle's path or a file name is refused (:meth:`resolve`).
            OSError: The disk refused (full, read-only, permissions); the caller stores the result without evidence.

        """
        target = self.resolve(bundle.path)
        for name in bundle.files:  # plain names inside a folder that resolves inside the root stay inside it
            _check_name(name)
        if target.exists():
            return False
        temp = self.root / f"{_TEMP_PREFIX}{uuid.uuid4().hex}"
        temp.mkdir()
        try:
            for name, data in bundle.files.items():
                (temp / name).write_bytes(data)
            for attempt in range(3):  # a prune may remove the (empty) camera folder between mkdir and rename
                target.parent.mkdir(parents=True, exist_ok=True)
                try:
                    os.rename(temp, target)
                    return True
                except FileNotFoundError:
                    if attempt == 2:
                        raise
                except OSError:
                    if target.exists():  # another worker wrote the same capture first
                        return False
                    raise
            return False  # pragma: no cover - the loop returns or raises
        finally:
            if temp.exists():
                shutil.rmtree(temp, onerror=_ignore_missing)

    # -- retention ---------------------------------------------------------------------------------

    def prune(self, now_s: float) -> PruneReport:
        """Apply retention: by age, then by size (oldest first); tolerant of other workers pruning too.

        1. ``.tmp-*`` folders older than :data:`STALE_TEMP_S` are deleted (a writer died mid-write).
        2. A capture folder is expired when its whole day lies more than ``max_age_days`` before
           ``now_s``, or its day has begun before that limit and its mtime is older than it.
        3. Then, while the files left take more than ``max_bytes``, the oldest capture folder goes
           (by day, then mtime).
        4. Day and camera folders left empty are removed.

        Only real folders under the root whose day folder is named ``YYYY-MM-DD`` are considered;
        symlinks and other names are never followed or deleted.

        Args:
            now_s: Epoch seconds (the caller's clock).

        """
        stale = self._prune_temps(now_s)
        cutoff = now_s - self.max_age_s
        captures = self._scan()
        expired = [c for c in captures if c.day + _DAY_S <= cutoff or (c.day <= cutoff and c.mtime < cutoff)]
        freed = sum(c.nbytes for c in expired if self._delete(c.path))
        gone = {c.path for c in expired}
        left = sorted((c for c in captures if c.path not in gone), key=lambda c: (c.day, c.mtime, str(c.path)))
        total = sum(c.nbytes for c in left)
        evicted = 0
        while evicted < len(left) and total > self.max_bytes:
            oldest = left[evicted]
            total -= oldest.nbytes
            evicted += 1
            if self._delete(oldest.path):
                freed += oldest.nbytes
        self._remove_empty(self._cameras())
        report = PruneReport(len(expired), evicted, freed, len(left) - evicted, total, stale)
        if expired or evicted or stale:
            logger.info(
                "evidence prune: %d expired, %d evicted for size, %.1f MB freed; %d captures, %.1f MB left",
                report.expired, report.evicted, report.freed_bytes / 1e6, report.captures, report.total_bytes / 1e6,
            )  # fmt: skip
        return report

    def _scan(self) -> list[_Capture]:
        captures: list[_Capture] = []
        for day in _subfolders(self.root):
            start = _day_start(day.name)
            if start is None:
                continue
            for camera in _subfolders(Path(day.path)):
                for capture in _subfolders(Path(camera.path)):
                    try:
                        mtime = capture.stat(follow_symlinks=False).st_mtime
                    except FileNotFoundError:
                        continue
                    captures.append(_Capture(Path(capture.path), start, mtime, _folder_bytes(Path(capture.path))))
        return captures

    def _cameras(self) -> set[Path]:
        return {
            Path(camera.path)
            for day in _subfolders(self.root)
            if _day_start(day.name) is not None
            for camera in _subfolders(Path(day.path))
        }

    def _prune_temps(self, now_s: float) -> int:
        removed = 0
        for entry in _subfolders(self.root):
            if not entry.name.startswith(_TEMP_PREFIX):
                continue
            try:
                old = now_s - entry.stat(follow_symlinks=False).st_mtime > STALE_TEMP_S
            except FileNotFoundError:
                continue
            if old and self._delete(Path(entry.path)):
                removed += 1
        return removed

    def _delete(self, path: Path) -> bool:
        """Delete one folder under the root; False when it was already gone (another worker) or cannot be deleted."""
        if not path.is_relative_to(self.root) or path == self.root or not os.path.lexists(path):
            return False
        try:
            shutil.rmtree(path, onerror=_ignore_missing)
        except FileNotFoundError:
            return False
        except OSError as exc:
            logger.warning("evidence prune cannot delete %s: %s", path, exc)
            return False
        return True

    def _remove_empty(self, cameras: set[Path]) -> None:
        """Remove camera folders, then their day folders, that are empty now (a non-empty one stays)."""
        for folder in sorted(cameras, key=lambda p: len(p.parts), reverse=True):
            for empty in (folder, folder.parent):
                if empty == self.root or not empty.is_relative_to(self.root):
                    break
                try:
                    empty.rmdir()
                except OSError:  # not empty (or gone): leave it
                    break

    def size_bytes(self) -> int:
        """Bytes of the capture folders' files now (a scan, as :meth:`prune` does)."""
        return sum(c.nbytes for c in self._scan())


class EvidenceKeeper:
    """The inspection worker's side of the evidence: write a job's bundle before its result, prune on a timer.

    A result is never lost for evidence: when the write fails (disk full, read-only volume) the
    failure is logged and counted and the result is stored without its ``evidence`` key.

    Args:
        store: The evidence folder.
        metrics: The worker's metrics (``None`` records nothing).
        prune_every_s: Seconds between prunes (``evidence.prune_every_s``); the first one runs at the first check.
        wall_s: Epoch seconds, the clock retention is judged by.

    """

    def __init__(
        self,
        store: EvidenceStore,
        metrics: WorkerMetrics | None = None,
        *,
        prune_every_s: float = 60.0,
        wall_s: Callable[[], float] = time.time,
    ) -> None:
        self.store, self.metrics, self.prune_every_s, self.wall_s = store, metrics, prune_every_s, wall_s
        self.pruning: threading.Thread | None = None
        self._pruned_at: float | None = None
        self._failing = False

    def keep(self, document: dict[str, Any], bundle: EvidenceBundle | None) -> bool:
        """Write ``bundle`` (re-delivered: already there is fine); on failure drop ``document["evidence"]``.

        Returns:
            True when the document points at evidence on disk.

        """
        if bundle is None:
            return False
        try:
            fresh = self.store.write(bundle)
        except (OSError, EvidenceError) as exc:
            log = logger.debug if self._failing else logger.warning  # one warning per failing spell, not per part
            log("evidence %s not written, the result is stored without it: %s", bundle.path, exc)
            self._failing = True
            document.pop("evidence", None)
            if self.metrics is not None:
                self.metrics.evidence_failures.inc()
            return False
        self._failing = False
        document["evidence"] = bundle.path
        if fresh and self.metrics is not None:
            self.metrics.evidence_written.labels(kept=bundle.kept).inc()
            self.metrics.evidence_bytes_written.inc(bundle.nbytes)
        return True

    def prune_if_due(self, now_s: float) -> bool:
        """Start a prune in a background thread when ``prune_every_s`` has passed (``now_s``: a monotonic clock).

        A cheap check for every worker step; the prune itself walks the folder off the loop, one at a time.
        """
        if self._pruned_at is not None and now_s - self._pruned_at < self.prune_every_s:
            return False
        if self.pruning is not None and self.pruning.is_alive():
            return False
        self._pruned_at = now_s
        self.pruning = threading.Thread(target=self._prune, name="evidence-prune", daemon=True)
        self.pruning.start()
        return True

    def _prune(self) -> None:
        try:
            report = self.store.prune(self.wall_s())
        except Exception as exc:  # a prune that fails is retried at the next period; the worker goes on
            logger.warning("evidence prune of %s failed: %s", self.store.root, exc)
            return
        if self.metrics is not None:
            self.metrics.evidence_pruned.labels(reason="age").inc(report.expired)
            self.metrics.evidence_pruned.labels(reason="size").inc(report.evicted)
            self.metrics.evidence_bytes.set(report.total_bytes)
