"""Reports out to a PACS: DICOM Structured Reports sent by C-STORE or STOW-RS, then the JSON to Redis.

    sender = PacsSender.from_settings(settings.pacs)       # None when pacs.send is "none"
    sink = ReportSink(store, sender)                      # the medical worker's checkpoint sink
    sink.hold("medical.studies/0/41", [measurements, narrative])
    sink.write([claim])                                   # SRs to the PACS first, then the claim to Redis

The SRs of a record are sent before its JSON is written, and both before its offset is committed
(:class:`~workers.kafka.checkpoint.Checkpoint`): a PACS that refuses or is down raises, the checkpoint
holds the record and tries again with back-off, and nothing is committed meanwhile. Sending again
is safe: a report's SOP Instance UIDs come from the study and the model
(:func:`inspector.medical.sr.report_uids`), so the PACS keeps one copy.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from pydicom.dataset import Dataset

from inspector.config import PacsSettings
from workers.errors import WorkerError
from workers.stores import Claim, ClaimedStore

__all__ = ["PacsError", "PacsSender", "ReportSink"]

logger = logging.getLogger(__name__)

_STORED = {0x0000, 0xB000, 0xB006, 0xB007}  # success, and the C-STORE warnings (coercion, elements discarded)


class PacsError(WorkerError):
    """The PACS could not be reached or refused a report; the record is tried again later."""


class PacsSender:
    """Sends datasets to the configured PACS, by C-STORE (pynetdicom) or STOW-RS (dicomweb-client)."""

    def __init__(self, settings: PacsSettings) -> None:
        if settings.send == "none":
            raise ValueError("PacsSender needs pacs.send = cstore or stow")
        self.settings = settings

    @classmethod
    def from_settings(cls, settings: PacsSettings) -> PacsSender | None:
        """A sender, or None when reports are not sent (``pacs.send: none``)."""
        return None if settings.send == "none" else cls(settings)

    @property
    def target(self) -> str:
        """Where reports go, for logs."""
        s = self.settings
        return f"{s.pacs_ae_title}@{s.pacs_host}:{s.pacs_port}" if s.send == "cstore" else s.stow_url

    def send(self, datasets: Sequence[Dataset]) -> None:
        """Store every dataset in the PACS.

        Raises:
            PacsError: No association, a refused store, or an HTTP error; says which and where.

        """
        if self.settings.send == "stow":
            self._stow(datasets)
        else:
            self._c_store(datasets)

    def _c_store(self, datasets: Sequence[Dataset]) -> None:
        from pynetdicom import AE

        s = self.settings
        ae = AE(ae_title=s.ae_title)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = s.timeout_s
        ae.connection_timeout = s.timeout_s
        for uid in sorted({str(ds.SOPClassUID) for ds in datasets}):
            ae.add_requested_context(uid)
        assoc = ae.associate(s.pacs_host, s.pacs_port, ae_title=s.pacs_ae_title)
        if not assoc.is_established:
            raise PacsError(f"no DICOM association with {self.target}: is the PACS up, and does it accept "
                            f"calling AE {s.ae_title}?")  # fmt: skip
        try:
            for ds in datasets:
                status = assoc.send_c_store(ds)
                code = int(status.Status) if status and "Status" in status else None
                if code not in _STORED:
                    shown = "no answer" if code is None else f"status 0x{code:04X}"
                    raise PacsError(f"{self.target} did not store a {ds.SOPClassUID.name} ({shown})")
        finally:
            assoc.release()

    def _stow(self, datasets: Sequence[Dataset]) -> None:
        from dicomweb_client.api import DICOMwebClient
        from requests import RequestException

        try:
            DICOMwebClient(url=self.settings.stow_url).store_instances(list(datasets))
        except (RequestException, OSError, ValueError) as exc:  # HTTP errors, refused connections
            raise PacsError(f"STOW-RS to {self.target} failed: {type(exc).__name__}: {exc}") from None


class ReportSink:
    """The medical worker's sink: each record's Structured Reports to the PACS, then its JSON to Redis.

    Args:
        store: The Redis store (the dashboards' copy).
        sender: The PACS sender, or None to write to Redis only.

    """

    def __init__(self, store: ClaimedStore, sender: PacsSender | None) -> None:
        self.store, self.sender = store, sender
        self.outbox: dict[str, list[Dataset]] = {}
        self.sent = 0

    def hold(self, record: str, datasets: list[Dataset]) -> None:
        """Keep a record's reports until its claim is written (nothing is kept without a sender)."""
        if self.sender is not None:
            self.outbox[record] = datasets

    def forget(self, partitions: set[tuple[str, int]] | None = None) -> None:
        """Drop the reports of these partitions' records (all with None): their next owner reports them."""
        prefixes = None if partitions is None else tuple(f"{t}/{p}/" for t, p in partitions)
        for record in list(self.outbox):
            if prefixes is None or record.startswith(prefixes):
                del self.outbox[record]

    def write(self, claims: Sequence[Claim]) -> list[bool]:
        """Send the claims' reports, then write the claims; raises (the checkpoint retries) if either fails."""
        if self.sender is not None:
            for claim in claims:
                datasets = self.outbox.get(claim.record)
                if datasets:
                    self.sender.send(datasets)
                    self.sent += len(datasets)
        written = self.store.write(claims)
        for claim in claims:
            self.outbox.pop(claim.record, None)
        return written
