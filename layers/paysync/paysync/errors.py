"""Typed domain errors. The HTTP status of each lives in one map, in `paysync.web`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

MAX_LISTED_ERRORS = 100


@dataclass(frozen=True)
class RecordError:
    """One offending record of a snapshot."""

    index: int
    external_id: str | None
    field: str | None
    message: str

    def to_json(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "externalId": self.external_id,
            "field": self.field,
            "message": self.message,
        }


class PaysyncError(Exception):
    """Base of every error paysync raises on purpose; `code` is stable, `message` is for people."""

    code = "error"

    def __init__(self, message: str, details: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or []

    def to_json(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "details": self.details}


class InvalidRequest(PaysyncError):
    code = "invalid_request"


class NotFound(PaysyncError):
    code = "not_found"


class PayloadTooLarge(PaysyncError):
    code = "payload_too_large"


class UnsupportedMediaType(PaysyncError):
    code = "unsupported_media_type"


class DatabaseUnavailable(PaysyncError):
    """The database cannot be reached: transient, worth a retry."""

    code = "database_unavailable"


class SnapshotRejected(PaysyncError):
    """The snapshot was refused as a whole; nothing was applied. `sync_id` names its sync run."""

    code = "snapshot_rejected"

    def __init__(self, message: str, details: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message, details)
        self.sync_id: int | None = None
        self.total: int = len(self.details)

    def to_json(self) -> dict[str, Any]:
        body = super().to_json()
        body["total"] = self.total
        if self.sync_id is not None:
            body["syncId"] = self.sync_id
        return body


class MalformedSnapshot(SnapshotRejected):
    """The body is not a JSON array (bad JSON, wrong top-level type, bad compression)."""

    code = "malformed_snapshot"


class InvalidSnapshot(SnapshotRejected):
    """Some records are invalid or duplicated; `details` lists at most 100, `total` counts all."""

    code = "invalid_records"

    def __init__(self, errors: list[RecordError], total: int) -> None:
        listed = sorted(errors, key=lambda e: e.index)[:MAX_LISTED_ERRORS]
        super().__init__(
            f"{total} invalid record(s); the snapshot was not applied",
            [e.to_json() for e in listed],
        )
        self.total = total


class DeletionGuardTriggered(SnapshotRejected):
    """The snapshot would soft-delete too much of a table; retry with force to apply it."""

    code = "deletion_guard"


class StaleSnapshot(SnapshotRejected):
    """The client's snapshot is older than the newest applied one; retry with force to apply it."""

    code = "stale_snapshot"


class UnsupportedObject(SnapshotRejected):
    """An S3 object whose name does not say what it holds (.json / .json.gz)."""

    code = "unsupported_object"


class ForceNotAllowed(PaysyncError):
    """A plain route was asked to force a sync; forcing has its own routes (and IAM permission)."""

    code = "force_not_allowed"


class InvalidUploadMetadata(SnapshotRejected):
    """An S3 snapshot carries paysync metadata paysync did not issue (forged or altered)."""

    code = "invalid_upload_metadata"
