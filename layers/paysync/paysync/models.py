"""Plain data passed between the logic and data-access layers."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from paysync.records import Entity

Source = Literal["api", "s3", "cli"]
Status = Literal["applied", "rejected", "skipped", "failed"]


@dataclass(frozen=True)
class S3Object:
    """One version of an S3 object that carries a snapshot (or was named by an S3 event).

    `last_modified` is whole seconds, as S3 reports it (None when the object was
    not read); `sequencer` is the event's (orders versions of one key);
    `key_order` is "<ms>-<suffix>" of a key issued by POST /uploads (orders
    objects stored in the same second), else None. `size` is the object's
    stored (maybe compressed) size in bytes, when it was read.
    """

    bucket: str
    key: str
    version_id: str | None
    etag: str | None
    last_modified: datetime | None
    sequencer: str | None = None
    key_order: str | None = None
    size: int | None = None


@dataclass
class SyncSummary:
    """What one sync did (or, for a dry run, would do). Recorded in sync_runs."""

    entity: Entity | None  # None only for an S3 key that names no entity
    source: Source
    started: datetime
    status: Status = "applied"
    dry_run: bool = False
    forced: bool = False
    s3: S3Object | None = None
    snapshot_at: datetime | None = None  # when the snapshot was taken; None: the sync's own time
    received: int = 0
    inserted: int = 0
    updated: int = 0
    deleted: int = 0
    restored: int = 0
    unchanged: int = 0
    orphaned: int = 0
    live_before: int | None = None  # live rows of the table before the sync (the deletion guard's base)
    duration_ms: int = 0
    error: dict[str, Any] | None = None
    sync_id: int | None = None
    reserved_id: int | None = None  # the run's id, reserved when its merge began

    def to_json(self) -> dict[str, Any]:
        """The summary as the API and the CLI print it."""
        body: dict[str, Any] = {
            "syncId": self.sync_id,
            "entity": self.entity,
            "source": self.source,
            "status": self.status,
            "dryRun": self.dry_run,
            "forced": self.forced,
            "received": self.received,
            "inserted": self.inserted,
            "updated": self.updated,
            "deleted": self.deleted,
            "restored": self.restored,
            "unchanged": self.unchanged,
            "orphaned": self.orphaned,
            "durationMs": self.duration_ms,
        }
        if self.error is not None:
            body["error"] = self.error
        if self.s3 is not None:
            body["s3"] = {"bucket": self.s3.bucket, "key": self.s3.key, "versionId": self.s3.version_id}
        return body
