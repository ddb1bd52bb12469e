"""Snapshot delivery through S3: upload URLs for clients, and the S3-triggered sync."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from paysync.config import get_settings
from paysync.dal import storage
from paysync.errors import InvalidRequest, SnapshotRejected
from paysync.models import SyncSummary
from paysync.observability import add_outcome_metric, add_sync_metrics, logger
from paysync.reconcile import reconcile_snapshot
from paysync.records import ENTITIES, Entity

SNAPSHOT_SUFFIXES = (".json", ".json.gz")


def snapshot_key(entity: Entity, compressed: bool = False, now: datetime | None = None) -> str:
    """A fresh, sortable object key under the entity's prefix (the prefix selects the entity)."""
    now = now or datetime.now(UTC)
    suffix = ".json.gz" if compressed else ".json"
    return f"{entity}/{now:%Y/%m/%d/%H%M%S}-{uuid.uuid4().hex}{suffix}"


# Fields of a POST /uploads body: `entity`, then optional flags (false when absent).
UPLOAD_FIELDS = ("entity", "compressed")


def _upload_flag(request: dict[str, Any], name: str) -> bool:
    value = request.get(name, False)
    if not isinstance(value, bool):
        raise InvalidRequest(f"{name} must be true or false", [{"field": name, "message": "must be a boolean"}])
    return value


def create_upload(request: Any) -> dict[str, Any]:
    """POST /uploads: a presigned PUT URL for one snapshot of `entity`."""
    if not isinstance(request, dict):
        raise InvalidRequest('the body must be a JSON object like {"entity": "patients"}')
    unknown = sorted(set(request) - set(UPLOAD_FIELDS))
    if unknown:
        raise InvalidRequest(
            f"unknown field(s): {', '.join(unknown)}; accepted: {', '.join(UPLOAD_FIELDS)}",
            [{"field": name, "message": "unknown field"} for name in unknown],
        )
    entity = request.get("entity")
    if not isinstance(entity, str) or entity not in ENTITIES:
        raise InvalidRequest(
            "entity must be one of: patients, payments",
            [{"field": "entity", "message": "must be patients or payments"}],
        )
    compressed = _upload_flag(request, "compressed")
    settings = get_settings()
    if not settings.snapshot_bucket:
        raise RuntimeError("SNAPSHOT_BUCKET is not configured")
    key = snapshot_key(entity, compressed)
    expires = settings.upload_url_expires_seconds
    url = storage.presign_put(settings.snapshot_bucket, key, expires)
    logger.info("upload url issued", extra={"entity": entity, "key": key})
    return {
        "entity": entity,
        "bucket": settings.snapshot_bucket,
        "key": key,
        "method": "PUT",
        "uploadUrl": url,
        "expiresIn": expires,
    }


@dataclass(frozen=True)
class ObjectOutcome:
    """What happened to one S3 object named by an event."""

    key: str
    status: str
    sync_id: int | None = None
    code: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"key": self.key, "status": self.status, "syncId": self.sync_id, "code": self.code}


def entity_of_key(key: str) -> Entity | None:
    """The entity a snapshot key's prefix names, when the key names a JSON snapshot."""
    prefix = key.split("/", 1)[0]
    if prefix in ENTITIES and key.endswith(SNAPSHOT_SUFFIXES):
        return prefix  # type: ignore[return-value]
    return None


def sync_object(bucket: str, key: str, version_id: str | None = None) -> ObjectOutcome:
    """Apply one S3 snapshot. Rejections are recorded and returned (retrying cannot help);
    transient failures raise so Lambda retries and finally hands the event to the DLQ."""
    entity = entity_of_key(key)
    if entity is None:
        logger.warning("object ignored: not a snapshot key", extra={"key": key})
        add_outcome_metric("S3Objects", "ignored")
        return ObjectOutcome(key, "ignored", code="not_a_snapshot_key")
    body, identity = storage.open_object(bucket, key, version_id)
    try:
        summary: SyncSummary = reconcile_snapshot(entity, body, source="s3", s3=identity)
    except SnapshotRejected as rejected:
        add_outcome_metric("S3Objects", "rejected")
        return ObjectOutcome(key, "rejected", rejected.sync_id, rejected.code)
    finally:
        body.close()
    add_sync_metrics(summary)
    add_outcome_metric("S3Objects", summary.status)
    return ObjectOutcome(key, summary.status, summary.sync_id, (summary.error or {}).get("code"))
