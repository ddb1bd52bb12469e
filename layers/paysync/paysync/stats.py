"""Analytics: the figures each sync stores, and GET /stats, /stats/histogram, /stats/history.

Figures are computed by the sync, inside its transaction, so they always
describe a committed state of the replica and a request never aggregates.
Money is exact: whole cents, Decimal end to end.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Mapping
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from typing import Any

from paysync import params
from paysync.dal import stats as dal
from paysync.dal.db import Connection, shared_connection
from paysync.errors import InvalidRequest
from paysync.models import SyncSummary
from paysync.reads import Page

STATS_PARAMS = ("top",)
HISTOGRAM_PARAMS = ("buckets", "min", "max")
HISTORY_PARAMS = ("limit", "cursor")
DEFAULT_TOP, MAX_TOP = 10, 100
DEFAULT_BUCKETS, MAX_BUCKETS = 10, 100
_DIGITS = re.compile(r"[0-9]{1,20}")
_CENT = Decimal("0.01")
_ZERO = Decimal("0.00")
_COUNTS = (
    "live_patients",
    "patients_without_payments",
    "live_payments",
    "orphan_payments",
    "deleted_patient_payments",
)
_SUMS = ("live_payments_sum", "orphan_payments_sum", "deleted_patient_payments_sum", "live_patients_total")
_PERCENTILES = ("min", "p10", "p25", "p50", "p75", "p90", "p99", "max")


def record_sync(connection: Connection, summary: SyncSummary, changed: int) -> None:
    """Store the figures of the sync being applied (call inside its transaction, after the totals).

    `changed` counts the rows the sync wrote (0: the figures are the previous sync's).
    A dry run stores nothing; a sync that is rolled back leaves nothing either.
    """
    if summary.dry_run:
        return
    if changed == 0 and dal.has_figures(connection):
        dal.copy_previous(connection)
        return
    # The sync's ranks are a generation of their own, named by its reserved id.
    generation = summary.reserved_id
    if generation is None:
        raise ValueError("the figures of a sync need its reserved id")
    dal.rebuild_ranks(connection, generation)
    dal.insert_figures(connection, generation)


def get_stats(query: Mapping[str, str], connection: Connection | None = None) -> dict[str, Any]:
    """GET /stats: the newest sync's figures and the `top` live patients by total
    (on `connection`, default the container's shared one)."""
    params.check_query(query, STATS_PARAMS)
    top = _bounded_int(query, "top", DEFAULT_TOP, MAX_TOP)
    connection = connection or shared_connection()
    with dal.one_snapshot(connection):
        row = dal.newest(connection)
        payers = dal.top_payers(connection, top)
    return _figures_json(row) | {"topPayers": [_payer_json(payer) for payer in payers]}


def get_histogram(query: Mapping[str, str], connection: Connection | None = None) -> dict[str, Any]:
    """GET /stats/histogram: live patients counted in `buckets` equal-width ranges of their totals.

    The range is [min, max] (default: the smallest and largest total). Totals are
    whole cents, so min rounds up and max rounds down to the cent; bucket i
    covers min + i*w <= total < min + (i+1)*w, the last one includes max.
    """
    params.check_query(query, HISTOGRAM_PARAMS)
    buckets = _bounded_int(query, "buckets", DEFAULT_BUCKETS, MAX_BUCKETS)
    low, high = params.decimal(query, "min"), params.decimal(query, "max")
    if low is not None and high is not None and low > high:
        raise InvalidRequest("min must not be greater than max", [{"parameter": "min", "message": "greater than max"}])
    connection = connection or shared_connection()
    with dal.one_snapshot(connection):
        row = dal.newest(connection)
        live = row["live_patients"] if row else 0
        low = _default(low, row and row["total_min"], high, min)
        high = _default(high, row and row["total_max"], low, max)
        body: dict[str, Any] = {"syncId": row and row["sync_id"], "patients": live, "bucketCount": buckets}
        if low is None or high is None:  # nothing stored and no range given
            return body | {"min": None, "max": None, "below": 0, "above": 0, "buckets": []}
        low_cents = int((low / _CENT).to_integral_value(ROUND_CEILING))
        high_cents = int((high / _CENT).to_integral_value(ROUND_FLOOR))
        body |= {"min": _cents(low_cents), "max": _cents(high_cents)}
        if low_cents > high_cents:  # min and max lie between the same two cents: no total fits
            [below] = dal.counts_below(connection, row["ranks_generation"], [_cents(low_cents)]) if row else [0]
            return body | {"below": below, "above": live - below, "buckets": []}
        # Edges min + i*(max-min)/N, rounded up to the cent: over whole-cent totals, splitting
        # at an edge or at that edge rounded up counts the same patients.
        width = high_cents - low_cents
        edges = [low_cents - (-width * i // buckets) for i in range(buckets)]
        bounds = [_cents(edge) for edge in [*edges, high_cents + 1]]
        # No stored figures: no sync has built the ranks yet, so nothing is counted.
        counts = dal.counts_below(connection, row["ranks_generation"], bounds) if row else [0] * len(bounds)
    ranges = [
        {"from": _cents(edge), "to": _cents(edges[i + 1] if i + 1 < buckets else high_cents), "count": count}
        for i, (edge, count) in enumerate(zip(edges, _differences(counts), strict=True))
    ]
    return body | {"below": counts[0], "above": live - counts[-1], "buckets": ranges}


def list_history(query: Mapping[str, str]) -> Page:
    """GET /stats/history: the figures of every applied sync, newest first."""
    params.check_query(query, HISTORY_PARAMS)
    limit = params.limit(query)
    values = params.decode_cursor(query, "stats", 1)
    before_id = params.cursor_id(values[0]) if values is not None else None
    rows = dal.history(shared_connection(), limit + 1, before_id)
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        next_cursor = params.encode_cursor("stats", rows[-1]["sync_id"])
    items = [{"entity": row["entity"], "snapshotAt": row["snapshot_at"]} | _figures_json(row) for row in rows]
    return Page(items, next_cursor)


def _bounded_int(query: Mapping[str, str], name: str, default: int, high: int) -> int:
    raw = query.get(name)
    if raw is None:
        return default
    # ASCII digits only (str.isdigit also takes other scripts' digits); the length bound keeps int() cheap.
    if not (_DIGITS.fullmatch(raw) and 1 <= int(raw) <= high):
        raise InvalidRequest(
            f"{name} must be an integer from 1 to {high}", [{"parameter": name, "message": f"not in 1..{high}"}]
        )
    return int(raw)


def _default(given: Decimal | None, stored: Decimal | None, other: Decimal | None, pick: Any) -> Decimal | None:
    """A bound not given is the stored extreme, moved to the other bound when they would cross."""
    if given is not None:
        return given
    if stored is None:
        return other
    return stored if other is None else pick(stored, other)


def _cents(cents: int) -> Decimal:
    return Decimal(cents).scaleb(-2)


def _differences(below: list[int]) -> list[int]:
    return [high - low for low, high in itertools.pairwise(below)]


def _figures_json(row: dict[str, Any] | None) -> dict[str, Any]:
    """The stored figures as the API shows them; zeros and nulls before the first sync."""
    row = row or {}
    count = {name: row.get(name, 0) for name in _COUNTS}
    money = {name: row.get(name, _ZERO) for name in _SUMS}
    return {
        "syncId": row.get("sync_id"),
        "computed": row.get("computed"),
        "patients": {"live": count["live_patients"], "withoutPayments": count["patients_without_payments"]},
        "payments": {
            "live": count["live_payments"],
            "sum": money["live_payments_sum"],
            "orphans": {"count": count["orphan_payments"], "sum": money["orphan_payments_sum"]},
            "ofDeletedPatients": {
                "count": count["deleted_patient_payments"],
                "sum": money["deleted_patient_payments_sum"],
            },
        },
        "totals": {
            "sum": money["live_patients_total"],
            **{name: row.get(f"total_{name}") for name in _PERCENTILES},
            "mean": row.get("total_mean"),
        },
    }


def _payer_json(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": row["id"],
        "externalId": row["external_id"],
        "firstName": row["first_name"],
        "lastName": row["last_name"],
        "middleName": row["middle_name"],
        "paymentsTotal": row["payments_total"],
        "paymentsCount": row["payments_count"],
    }
