"""Snapshot delivery through S3: upload URLs for clients, and the S3-triggered sync."""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from paysync.config import get_settings
from paysync.dal import storage
from paysync.dal.db import close_quietly, connect, transaction
from paysync.dal.sync_runs import insert_run
from paysync.errors import ForceNotAllowed, InvalidRequest, InvalidUploadMetadata, SnapshotRejected, SnapshotTooLarge
from paysync.guard import FORCED_UPLOAD_ROUTE
from paysync.models import S3Object, SyncSummary
from paysync.observability import add_outcome_metric, add_sync_metrics, logger
from paysync.reconcile import reconcile_snapshot, record_skipped_object
from paysync.records import ENTITIES, Entity

SNAPSHOT_SUFFIXES = (".json", ".json.gz")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# Keys issued by POST /uploads: <entity>/YYYY/MM/DD/HHMMSS.mmm-<32 hex>.json[.gz] (UTC).
_ISSUED_KEY = re.compile(
    r"(?:patients|payments)/(?P<date>[0-9]{4}/[0-9]{2}/[0-9]{2})/(?P<time>[0-9]{6})\.(?P<ms>[0-9]{3})"
    r"-(?P<suffix>[0-9a-f]{32})\.json(?:\.gz)?"
)


def snapshot_key(entity: Entity, compressed: bool = False, now: datetime | None = None) -> str:
    """A fresh object key under the entity's prefix (the prefix selects the entity).

    It carries its issue time to the millisecond and a unique, time-ordered
    suffix (a UUIDv7 whose sub-millisecond bits hold the microseconds), so two
    snapshots stored in the same S3 second are ordered by when their keys were
    issued (see `key_order`).
    """
    now = (now or datetime.now(UTC)).astimezone(UTC)
    suffix = ".json.gz" if compressed else ".json"
    return f"{entity}/{now:%Y/%m/%d/%H%M%S}.{now.microsecond // 1000:03d}-{_uuid7(now)}{suffix}"


def _uuid7(now: datetime) -> str:
    micros = (now - _EPOCH) // timedelta(microseconds=1)
    millis, sub_ms = divmod(micros, 1000)
    value = (millis << 80) | (0x7 << 76) | ((sub_ms * 4096 // 1000) << 64) | (0b10 << 62) | secrets.randbits(62)
    return f"{value:032x}"


def key_order(key: str) -> str | None:
    """For a key issued by POST /uploads, "<13-digit Unix milliseconds>-<suffix>": byte order is
    issue order. None for any other key."""
    match = _ISSUED_KEY.fullmatch(key)
    if match is None:
        return None
    try:
        issued = datetime.strptime(f"{match['date']} {match['time']}", "%Y/%m/%d %H%M%S").replace(tzinfo=UTC)
    except ValueError:
        return None
    millis = (issued - _EPOCH) // timedelta(milliseconds=1) + int(match["ms"])
    return f"{millis:013d}-{match['suffix']}"


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
    """The entity a snapshot key's prefix names, when the key names a JSON snapshot.

    A snapshot key is `patients/…` or `payments/…` (case-sensitive, like S3 keys
    and the bucket's notification filters) ending in `.json` or `.json.gz`
    (lower case) after a non-empty name. Keys with empty, `.` or `..` segments,
    backslashes or control characters name no snapshot: they could be read as
    another path.
    """
    segments = key.split("/")
    prefix, name = segments[0], segments[-1]
    if prefix not in ENTITIES or len(segments) < 2:
        return None
    if any(segment in ("", ".", "..") for segment in segments) or _UNSAFE_CHARACTERS.search(key):
        return None
    if not name.endswith(SNAPSHOT_SUFFIXES) or name in SNAPSHOT_SUFFIXES:
        return None
    return prefix  # type: ignore[return-value]


_UNSAFE_CHARACTERS = re.compile(r"[\\\x00-\x1f\x7f]")


def sync_object(
    bucket: str,
    key: str,
    version_id: str | None = None,
    *,
    sequencer: str | None = None,
    etag: str | None = None,
) -> ObjectOutcome:
    """Apply one S3 snapshot named by an event (`sequencer` and `etag` are the event's).

    Every object leaves a sync run: keys that name no snapshot are recorded as
    skipped. Rejections are recorded and returned (retrying cannot help);
    transient failures raise so Lambda retries and finally hands the event to the DLQ.
    """
    sequencer = sequencer.upper() if sequencer and _HEX.fullmatch(sequencer) else None
    entity = entity_of_key(key)
    if entity is None:
        named = key.split("/", 1)[0]
        ignored = S3Object(bucket, key, version_id, etag, None, sequencer)
        summary = record_skipped_object(
            named if named in ENTITIES else None,  # type: ignore[arg-type]
            ignored,
            "not_a_snapshot_key",
            "the key names no snapshot: patients/… or payments/… ending in .json or .json.gz,"
            " without empty, . or .. segments",
        )
        logger.warning("object skipped: not a snapshot key", extra={"sync_id": summary.sync_id})
        add_outcome_metric("S3Objects", "skipped")
        return ObjectOutcome(key, "skipped", summary.sync_id, "not_a_snapshot_key")
    body, identity, metadata = storage.open_object(bucket, key, version_id)
    identity = replace(identity, sequencer=sequencer, key_order=key_order(key))
    try:
        force, dry_run = object_sync_options(metadata)
        _check_object_size(identity)
    except SnapshotRejected as rejected:  # refused before any sync began: nothing was read
        body.close()
        rejected.sync_id = _record_rejection(entity, identity, rejected)
        add_outcome_metric("S3Objects", "rejected")
        return ObjectOutcome(key, "rejected", rejected.sync_id, rejected.code)
    try:
        summary: SyncSummary = reconcile_snapshot(entity, body, source="s3", s3=identity, force=force, dry_run=dry_run)
    except SnapshotRejected as rejected:
        add_outcome_metric("S3Objects", "rejected")
        return ObjectOutcome(key, "rejected", rejected.sync_id, rejected.code)
    finally:
        body.close()
    add_sync_metrics(summary)
    add_outcome_metric("S3Objects", summary.status)
    return ObjectOutcome(key, summary.status, summary.sync_id, (summary.error or {}).get("code"))


def _check_object_size(identity: S3Object) -> None:
    # A snapshot is never smaller than its object (gzip only shrinks it), so an object over the
    # uncompressed bound is refused from its size alone, before a byte of it is read.
    limit = get_settings().max_snapshot_bytes
    if identity.size is not None and identity.size > limit:
        raise SnapshotTooLarge(
            f"the object is {identity.size} bytes; snapshots are limited to {limit} bytes (MAX_SNAPSHOT_BYTES)"
        )


_HEX = re.compile(r"[0-9A-Fa-f]{1,64}")


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
