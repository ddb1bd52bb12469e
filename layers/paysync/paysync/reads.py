"""The read API's logic: typed filters in, one page of JSON-ready rows out."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from paysync import params
from paysync.dal import history, queries, sync_runs
from paysync.dal.db import Connection, shared_connection
from paysync.errors import InvalidRequest, NotFound
from paysync.records import Entity
from paysync.timestamps import parse_snapshot_time

PATIENT_PARAMS = ("payment_min", "payment_max", "payments_max", "limit", "cursor")
PAYMENT_PARAMS = ("external_id", "limit", "cursor")
SYNC_PARAMS = ("limit", "cursor")


@dataclass(frozen=True)
class Page:
    """One page of a listing; `next_cursor` is None on the last page."""

    items: list[dict[str, Any]]
    next_cursor: str | None


def list_patients(query: Mapping[str, str]) -> Page:
    """GET /patients: live patients whose payments total lies in [payment_min, payment_max]."""
    params.check_query(query, PATIENT_PARAMS)
    total_min = params.decimal(query, "payment_min")
    total_max = _upper_bound(query)
    if total_min is not None and total_max is not None and total_min > total_max:
        raise InvalidRequest(
            "payment_min must not be greater than payment_max",
            [{"parameter": "payment_min", "message": "greater than payment_max"}],
        )
    limit = params.limit(query)
    after = _patient_cursor(query)
    rows = queries.list_patients(
        shared_connection(), total_min=total_min, total_max=total_max, after=after, limit=limit + 1
    )
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        last = rows[-1]
        next_cursor = params.encode_cursor("patients", str(last["payments_total"]), last["id"])
    return Page([_patient_json(row) for row in rows], next_cursor)


def _upper_bound(query: Mapping[str, str]) -> Decimal | None:
    # The brief's example spells it payments_max; both spellings mean the same bound.
    singular = params.decimal(query, "payment_max")
    plural = params.decimal(query, "payments_max")
    if singular is not None and plural is not None and singular != plural:
        raise InvalidRequest(
            "payment_max and payments_max are the same bound and disagree",
            [{"parameter": "payments_max", "message": "differs from payment_max"}],
        )
    return singular if singular is not None else plural


def _patient_cursor(query: Mapping[str, str]) -> tuple[Decimal, int] | None:
    values = params.decode_cursor(query, "patients", 2)
    if values is None:
        return None
    return params.cursor_bound(values[0]), params.cursor_id(values[1])


def list_payments(query: Mapping[str, str]) -> Page:
    """GET /payments: live payments, optionally of the patient with external id `external_id`."""
    params.check_query(query, PAYMENT_PARAMS)
    patient_external_id = params.text(query, "external_id")
    limit = params.limit(query)
    after_id = _id_cursor(query, "payments")
    rows = queries.list_payments(
        shared_connection(), patient_external_id=patient_external_id, after_id=after_id, limit=limit + 1
    )
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        next_cursor = params.encode_cursor("payments", rows[-1]["id"])
    return Page([_payment_json(row) for row in rows], next_cursor)


def list_syncs(query: Mapping[str, str]) -> Page:
    """GET /syncs: sync runs, newest first."""
    params.check_query(query, SYNC_PARAMS)
    limit = params.limit(query)
    before_id = _id_cursor(query, "syncs")
    rows = sync_runs.list_runs(shared_connection(), limit + 1, before_id)
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        next_cursor = params.encode_cursor("syncs", rows[-1]["id"])
    return Page([sync_run_json(row) for row in rows], next_cursor)


def get_sync(sync_id: str, query: Mapping[str, str] | None = None) -> dict[str, Any]:
    """GET /syncs/{id}: one sync run (it takes no query parameters)."""
    params.check_query(query or {}, ())
    run_id = params.positive_int(sync_id, "id")
    row = sync_runs.get_run(shared_connection(), run_id)
    if row is None:
        raise NotFound(f"sync run {run_id} does not exist")
    return sync_run_json(row)


def _id_cursor(query: Mapping[str, str], kind: str) -> int | None:
    values = params.decode_cursor(query, kind, 1)
    if values is None:
        return None
    return params.cursor_id(values[0])


def _patient_json(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": row["id"],
        "externalId": row["external_id"],
        "firstName": row["first_name"],
        "lastName": row["last_name"],
        "middleName": row["middle_name"],
        "dateOfBirth": row["date_of_birth"],
        "paymentsTotal": row["payments_total"],
        "paymentsCount": row["payments_count"],
        "created": row["created"],
        "updated": row["updated"],
    }


def _payment_json(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": row["id"],
        "externalId": row["external_id"],
        "amount": row["amount"],
        "patientId": row["patient_external_id"],
        "created": row["created"],
        "updated": row["updated"],
    }


def sync_run_json(row: dict[str, Any]) -> dict[str, Any]:
    """A sync_runs row as the API shows it."""
    s3 = None
    if row["s3_key"] is not None:
        s3 = {
            "bucket": row["s3_bucket"],
            "key": row["s3_key"],
            "versionId": row["s3_version_id"],
            "etag": row["s3_etag"],
        }
    return {
        "id": row["id"],
        "entity": row["entity"],
        "source": row["source"],
        "status": row["status"],
        "dryRun": row["dry_run"],
        "forced": row["forced"],
        "s3": s3,
        "snapshotAt": row["snapshot_at"],
        "received": row["received"],
        "inserted": row["inserted"],
        "updated": row["updated"],
        "deleted": row["deleted"],
        "restored": row["restored"],
        "unchanged": row["unchanged"],
        "orphaned": row["orphaned"],
        "durationMs": row["duration_ms"],
        "error": row["error"],
        "started": row["started"],
        "finished": row["finished"],
    }


# ---------------------------------------------------------------- single rows and their history

ROW_PARAMS = ("include_deleted", "as_of")
HISTORY_PARAMS = ("limit", "cursor")
CHANGES_PARAMS = ("entity", "action", "limit", "cursor")
ENTITIES: tuple[Entity, ...] = ("patients", "payments")
ACTIONS = ("inserted", "updated", "deleted", "restored")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# A history cursor holds a time as microseconds since 1970, up to the year 9999.
_MAX_CURSOR_MICROS = (datetime(9999, 12, 31, tzinfo=UTC) - _EPOCH) // timedelta(microseconds=1)
_SINGULAR = {"patients": "patient", "payments": "payment"}


def get_row(entity: Entity, external_id: str | None, query: Mapping[str, str]) -> dict[str, Any]:
    """GET /patients/{externalId}, GET /payments/{externalId}: one row by its external id.

    A deleted row is a 404 unless include_deleted=true; with as_of, the version
    current at that time (404 when the row did not exist or was deleted then)."""
    params.check_query(query, ROW_PARAMS)
    eid = path_id(external_id)
    include_deleted = params.boolean(query, "include_deleted")
    raw_as_of = query.get("as_of")
    if raw_as_of is not None:
        at = parse_snapshot_time(raw_as_of, "as_of")
        version = history.version_at(shared_connection(), entity, eid, at)
        if version is None or (version["action"] == "deleted" and not include_deleted):
            raise NotFound(f"no {_SINGULAR[entity]} with this externalId existed at {at.isoformat()}")
        return version_json(entity, version)
    row = history.get_row(shared_connection(), entity, eid)
    if row is None or (row["deleted"] is not None and not include_deleted):
        raise NotFound(f"no {_SINGULAR[entity]} with this externalId")
    shown = _patient_json(row) if entity == "patients" else _payment_json(row)
    shown["deleted"] = row["deleted"]
    return shown


def row_history(
    entity: Entity, external_id: str | None, query: Mapping[str, str], connection: Connection | None = None
) -> Page:
    """GET /patients/{externalId}/history, GET /payments/{externalId}/history: every version of
    the row, newest (the current one) first (on `connection`, default the container's shared one)."""
    params.check_query(query, HISTORY_PARAMS)
    eid = path_id(external_id)
    limit = params.limit(query)
    before = _history_cursor(query, entity)
    connection = connection or shared_connection()
    row = history.get_row(connection, entity, eid)
    if row is None:
        raise NotFound(f"no {_SINGULAR[entity]} with this externalId")
    rows = history.versions(connection, entity, row["id"], before, limit + 1)
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        last = rows[-1]
        if last["valid_to"] is None:  # the page ends on the current version: every past one follows
            key = (_MAX_CURSOR_MICROS, params.MAX_ID)
        else:
            key = ((last["valid_to"] - _EPOCH) // timedelta(microseconds=1), last["version_id"])
        next_cursor = params.encode_cursor(f"{entity}_history", *key)
    return Page([version_json(entity, row) for row in rows], next_cursor)


def _history_cursor(query: Mapping[str, str], entity: Entity) -> tuple[datetime, int] | None:
    values = params.decode_cursor(query, f"{entity}_history", 2)
    if values is None:
        return None
    micros = values[0]
    if type(micros) is not int or not 0 <= micros <= _MAX_CURSOR_MICROS:
        raise InvalidRequest("cursor is not a cursor this API returned", [{"parameter": "cursor"}])
    return _EPOCH + timedelta(microseconds=micros), params.cursor_id(values[1])


def sync_changes(sync_id: str, query: Mapping[str, str], connection: Connection | None = None) -> Page:
    """GET /syncs/{id}/changes: the rows the sync inserted, updated, deleted or restored, by row id,
    each with its fields before and after (on `connection`, default the container's shared one)."""
    params.check_query(query, CHANGES_PARAMS)
    run_id = params.positive_int(sync_id, "id")
    entity = _choice(query, "entity", ENTITIES)
    action = _choice(query, "action", ACTIONS)
    limit = params.limit(query)
    after_id = _id_cursor(query, "changes")
    connection = connection or shared_connection()
    run = sync_runs.get_run(connection, run_id)
    if run is None:
        raise NotFound(f"sync run {run_id} does not exist")
    # A sync changes rows of its own entity only (the other table's derived links and totals aside).
    if run["entity"] is None or (entity is not None and entity != run["entity"]):
        return Page([], None)
    rows = history.sync_changes(connection, run["entity"], run_id, action, after_id, limit + 1)
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        next_cursor = params.encode_cursor("changes", rows[-1]["id"])
    return Page([_change_json(run["entity"], row) for row in rows], next_cursor)


def _choice(query: Mapping[str, str], name: str, accepted: tuple[str, ...]) -> str | None:
    raw = query.get(name)
    if raw is None or raw in accepted:
        return raw
    message = f"must be one of {', '.join(accepted)}"
    raise InvalidRequest(f"{name} {message}", [{"parameter": name, "message": message}])


def path_id(raw: str | None, name: str = "externalId") -> str:
    """An external id taken from the path: non-blank, at most 255 characters, storable text."""
    if raw is None:
        raise NotFound(f"{name} is missing from the path")
    value = params.text({name: raw}, name)
    assert value is not None
    return value


def _fields_json(entity: Entity, row: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    if entity == "patients":
        return {
            "externalId": row[f"{prefix}external_id"],
            "firstName": row[f"{prefix}first_name"],
            "lastName": row[f"{prefix}last_name"],
            "middleName": row[f"{prefix}middle_name"],
            "dateOfBirth": row[f"{prefix}date_of_birth"],
        }
    return {
        "externalId": row[f"{prefix}external_id"],
        "amount": row[f"{prefix}amount"],
        "patientId": row[f"{prefix}patient_external_id"],
    }


def version_json(entity: Entity, row: dict[str, Any]) -> dict[str, Any]:
    """One version of a row as the API shows it (validTo null: the current version)."""
    return {
        "id": row["id"],
        **_fields_json(entity, row),
        "validFrom": row["valid_from"],
        "validTo": row["valid_to"],
        "syncStarted": row["sync_started"],
        "syncEnded": row["sync_ended"],
        "action": row["action"],
    }


def _change_json(entity: Entity, row: dict[str, Any]) -> dict[str, Any]:
    after = {**_fields_json(entity, row), "deleted": row["action"] == "deleted"}
    before = None
    if row["before_action"] is not None:
        before = {**_fields_json(entity, row, "before_"), "deleted": row["before_action"] == "deleted"}
    return {
        "entity": entity,
        "id": row["id"],
        "externalId": row["external_id"],
        "action": row["action"],
        "changed": [name for name in after if before is not None and before[name] != after[name]],
        "before": before,
        "after": after,
    }
