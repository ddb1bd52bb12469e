"""SQL of the read API. Every query is served by a partial index on live rows and
paginated by keyset (no OFFSET, no COUNT, no aggregate over payments)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from paysync.dal.db import Connection, rows_as_dicts


def list_patients(
    connection: Connection,
    *,
    total_min: Decimal | None,
    total_max: Decimal | None,
    after: tuple[Decimal, int] | None,
    limit: int,
) -> list[dict[str, Any]]:
    """Live patients ordered by (payments_total, id), within the optional bounds, after the cursor."""
    # patients_live_total_idx serves the range, the order and the keyset at once.
    conditions = ["deleted IS NULL"]
    params: dict[str, Any] = {"limit": limit}
    if total_min is not None:
        conditions.append("payments_total >= CAST(:total_min AS numeric)")
        params["total_min"] = str(total_min)
    if total_max is not None:
        conditions.append("payments_total <= CAST(:total_max AS numeric)")
        params["total_max"] = str(total_max)
    if after is not None:
        conditions.append("(payments_total, id) > (CAST(:after_total AS numeric), :after_id)")
        params["after_total"], params["after_id"] = str(after[0]), after[1]
    rows = connection.run(
        f"""SELECT id, external_id, first_name, last_name, middle_name, date_of_birth,
                   payments_total, payments_count, created, updated
            FROM patients WHERE {" AND ".join(conditions)}
            ORDER BY payments_total, id LIMIT :limit""",
        **params,
    )
    return rows_as_dicts(connection, rows)


def list_payments(
    connection: Connection, *, patient_external_id: str | None, after_id: int | None, limit: int
) -> list[dict[str, Any]]:
    """Live payments ordered by id, optionally of one patient (by the patient's external id)."""
    # payments_patient_external_idx serves the filtered case, the primary key the rest (both walk
    # past the deleted payments they hold).
    conditions = ["deleted IS NULL"]
    params: dict[str, Any] = {"limit": limit}
    if patient_external_id is not None:
        conditions.append("patient_external_id = :patient_external_id")
        params["patient_external_id"] = patient_external_id
    if after_id is not None:
        conditions.append("id > :after_id")
        params["after_id"] = after_id
    rows = connection.run(
        f"""SELECT id, external_id, amount, patient_external_id, created, updated
            FROM payments WHERE {" AND ".join(conditions)}
            ORDER BY id LIMIT :limit""",
        **params,
    )
    return rows_as_dicts(connection, rows)
