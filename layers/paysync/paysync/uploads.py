"""Snapshot delivery through S3: upload URLs for clients, and the S3-triggered sync."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from paysync.config import get_settings
from paysync.dal import storage
from paysync.dal.db import close_quietly, connect, transaction
from paysync.dal.sync_runs import insert_run
from paysync.errors import ForceNotAllowed, InvalidRequest, InvalidUploadMetadata, SnapshotRejected
from paysync.guard import FORCED_UPLOAD_ROUTE
from paysync.models import S3Object, SyncSummary
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
UPLOAD_FIELDS = ("entity", "compressed", "dryRun")

# How an upload asks for a forced or dry-run sync: user metadata on the object, signed into
# the presigned URL. paysync only ever writes the value "true".
FORCE_METADATA = "paysync-force"
DRY_RUN_METADATA = "paysync-dry-run"
METADATA_PREFIX = "paysync-"


def _upload_flag(request: dict[str, Any], name: str) -> bool:
    value = request.get(name, False)
    if not isinstance(value, bool):
        raise InvalidRequest(f"{name} must be true or false", [{"field": name, "message": "must be a boolean"}])
    return value


def create_upload(request: Any, forced: bool = False) -> dict[str, Any]:
    """POST /uploads (and POST /forced/uploads, `forced`): a presigned PUT URL for one snapshot
    of `entity`."""
    if not isinstance(request, dict):
        raise InvalidRequest('the body must be a JSON object like {"entity": "patients"}')
    if "force" in request and not forced:
        raise ForceNotAllowed(
            f"POST /uploads cannot force a sync; forcing is a separate permission: ask {FORCED_UPLOAD_ROUTE}"
            " for the upload URL instead"
        )
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
    metadata = {}
    if forced:
        metadata[FORCE_METADATA] = "true"
    if _upload_flag(request, "dryRun"):
        metadata[DRY_RUN_METADATA] = "true"
    settings = get_settings()
    if not settings.snapshot_bucket:
        raise RuntimeError("SNAPSHOT_BUCKET is not configured")
    key = snapshot_key(entity, compressed)
    expires = settings.upload_url_expires_seconds
    url = storage.presign_put(settings.snapshot_bucket, key, expires, metadata)
    logger.info("upload url issued", extra={"entity": entity, "key": key, "forced": forced})
    return {
        "entity": entity,
        "bucket": settings.snapshot_bucket,
        "key": key,
        "method": "PUT",
        "uploadUrl": url,
        "headers": {f"x-amz-meta-{name}": value for name, value in metadata.items()},
        "expiresIn": expires,
        "forced": forced,
        "dryRun": DRY_RUN_METADATA in metadata,
    }


def object_sync_options(metadata: dict[str, str]) -> tuple[bool, bool]:
    """(force, dry_run) asked by an S3 snapshot's metadata. Anything paysync did not issue
    (another value than "true", an unknown paysync-* name) rejects the object."""
    ours = {name: value for name, value in metadata.items() if name.startswith(METADATA_PREFIX)}
    unknown = sorted(set(ours) - {FORCE_METADATA, DRY_RUN_METADATA})
    bad = sorted(name for name in set(ours) - set(unknown) if ours[name] != "true")
    if unknown or bad:
        raise InvalidUploadMetadata(
            "the object carries paysync metadata that no upload URL issued; nothing was applied."
            " Upload the snapshot again through POST /uploads (or POST /forced/uploads)",
            [{"metadata": f"x-amz-meta-{name}", "message": "unknown name"} for name in unknown]
            + [{"metadata": f"x-amz-meta-{name}", "message": 'the only accepted value is "true"'} for name in bad],
        )
    return FORCE_METADATA in ours, DRY_RUN_METADATA in ours


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
    body, identity, metadata = storage.open_object(bucket, key, version_id)
    try:
        force, dry_run = object_sync_options(metadata)
        summary: SyncSummary = reconcile_snapshot(entity, body, source="s3", s3=identity, force=force, dry_run=dry_run)
    except InvalidUploadMetadata as rejected:
        rejected.sync_id = _record_rejection(entity, identity, rejected)
        add_outcome_metric("S3Objects", "rejected")
        return ObjectOutcome(key, "rejected", rejected.sync_id, rejected.code)
    except SnapshotRejected as rejected:
        add_outcome_metric("S3Objects", "rejected")
        return ObjectOutcome(key, "rejected", rejected.sync_id, rejected.code)
    finally:
        body.close()
    add_sync_metrics(summary)
    add_outcome_metric("S3Objects", summary.status)
    return ObjectOutcome(key, summary.status, summary.sync_id, (summary.error or {}).get("code"))


def _record_rejection(entity: Entity, identity: S3Object, rejected: SnapshotRejected) -> int:
    """Record an S3 snapshot refused before its sync began (nothing was read or applied)."""
    summary = SyncSummary(
        entity=entity, source="s3", started=datetime.now(UTC), status="rejected", s3=identity, error=rejected.to_json()
    )
    connection = connect()
    try:
        with transaction(connection):
            summary.sync_id = insert_run(connection, summary)
    finally:
        close_quietly(connection)
    logger.info(
        "sync finished",
        extra={
            "sync_id": summary.sync_id,
            "entity": entity,
            "source": "s3",
            "status": "rejected",
            "error_code": rejected.code,
        },
    )
    return summary.sync_id
