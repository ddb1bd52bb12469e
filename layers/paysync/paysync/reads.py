"""The read API's logic: typed filters in, one page of JSON-ready rows out."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from paysync import params
from paysync.dal import queries, sync_runs
from paysync.dal.db import shared_connection
from paysync.errors import InvalidRequest, NotFound

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
