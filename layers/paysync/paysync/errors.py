"""Typed domain errors. The HTTP status of each lives in one map, in `paysync.web`."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

MAX_LISTED_ERRORS = 100
MAX_SHOWN_CHARS = 255

# Characters shown as \uXXXX escapes in errors: controls (PostgreSQL's jsonb refuses NUL),
# surrogates (not storable either) and the noncharacters U+FFFE / U+FFFF.
_UNSHOWABLE = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff\ufffe\uffff]")


def shown(value: str | None) -> str | None:
    """`value` made safe to show, log and store in jsonb: unshowable characters escaped as
    \\uXXXX, cut to 255 characters."""
    if value is None:
        return None
    if len(value) > MAX_SHOWN_CHARS:
        value = value[:MAX_SHOWN_CHARS] + "…"
    return _UNSHOWABLE.sub(lambda m: f"\\u{ord(m.group()):04x}", value)


@dataclass(frozen=True)
class RecordError:
    """One offending record of a snapshot. The externalId and field name come from the
    input and are kept in their `shown` form."""

    index: int
    external_id: str | None
    field: str | None
    message: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "external_id", shown(self.external_id))
        object.__setattr__(self, "field", shown(self.field))

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


class SnapshotTooLarge(PayloadTooLarge, SnapshotRejected):
    """The snapshot exceeds the size, record-count or compression-ratio bound (HTTP 413);
    refused and recorded like any rejected snapshot."""

    code = "snapshot_too_large"


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
