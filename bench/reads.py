"""Read latency through the real handlers: warm, in-process, API Gateway proxy events."""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg

from devserver import lambdas
from devserver.apigateway import proxy_event

ROOT = Path(__file__).resolve().parent.parent
FUNCTIONS = ROOT / "functions"
CALLS = 300  # measured calls per case and size
ROUND = 50  # calls per case before the next database takes its turn
WARMUP_PER_ROUND = 5  # unmeasured calls after each switch (a new connection, cold caches)
DISTINCT_EVENTS = 50  # each case cycles through this many different requests
NARROW_ROWS = 25  # patients inside a "narrow" total range

Handler = Callable[[dict[str, Any], Any], dict[str, Any]]


def load_handler(function: str) -> Handler:
    """functions/<function>/app.py's lambda_handler, imported under a unique module name."""
    return lambdas.load_handler(FUNCTIONS / function / "app.py", f"bench_{function}_app")


def use_database(url: str) -> None:
    """Point the in-process handlers at `url` (a new shared connection on the next request)."""
    from paysync.config import get_settings
    from paysync.dal import db

    os.environ["DATABASE_URL"] = url
    get_settings.cache_clear()
    if db._shared is not None:
        db.close_quietly(db._shared)
        db._shared = None


Event = dict[str, Any]
# Case name -> (the function whose handler serves it, the distinct events it cycles through).
Cases = dict[str, tuple[str, list[Event]]]
# The groups of read cases, each with its own latency targets (see bench.report).
LISTS, HISTORY = "lists", "history and analytics"


def _get(path: str, query: dict[str, str] | None = None, resource: str | None = None, **path_params: str) -> Event:
    return proxy_event("GET", path, query=query, resource=resource, path_parameters=path_params or None)


def read_cases(url: str) -> Cases:
    """The list reads: case name -> (function, the distinct requests it cycles through), drawn from the data."""
    from paysync.params import encode_cursor

    with psycopg.connect(url) as connection:
        [live] = connection.execute("SELECT count(*) FROM patients WHERE deleted IS NULL").fetchone()
        step = max(1, live // (4 * DISTINCT_EVENTS))
        # Evenly spaced rows of the (payments_total, id) order the API pages through.
        marks = connection.execute(
            """SELECT payments_total, id FROM (
                   SELECT payments_total, id, row_number() OVER (ORDER BY payments_total, id) AS n
                   FROM patients WHERE deleted IS NULL) ranked
               WHERE n %% %s = 0 ORDER BY n""",
            (step,),
        ).fetchall()
        narrow = []
        for total, patient_id in marks[:: max(1, len(marks) // DISTINCT_EVENTS)][:DISTINCT_EVENTS]:
            upper = connection.execute(
                """SELECT payments_total FROM patients WHERE deleted IS NULL AND (payments_total, id) >= (%s, %s)
                   ORDER BY payments_total, id OFFSET %s LIMIT 1""",
                (total, patient_id, NARROW_ROWS - 1),
            ).fetchone()
            narrow.append({"payment_min": str(total), "payment_max": str(upper[0] if upper else total)})
        low, high = marks[len(marks) // 20][0], marks[-len(marks) // 20][0]
        deep = [encode_cursor("patients", str(total), patient_id) for total, patient_id in marks[len(marks) // 2 :]]
        external_ids = [
            row[0]
            for row in connection.execute(
                """(SELECT external_id FROM patients WHERE deleted IS NULL ORDER BY payments_count DESC LIMIT 3)
                   UNION ALL
                   (SELECT external_id FROM patients WHERE deleted IS NULL ORDER BY md5(external_id) LIMIT %s)""",
                (DISTINCT_EVENTS - 3,),
            )
        ]
    wide = {"payment_min": str(low), "payment_max": str(high)}
    return {
        "GET /patients (first page)": ("get_patients", [_get("/patients")]),
        "GET /patients narrow range": ("get_patients", [_get("/patients", query) for query in narrow]),
        "GET /patients wide range": ("get_patients", [_get("/patients", wide)]),
        "GET /patients deep page (cursor)": (
            "get_patients",
            [_get("/patients", {"cursor": cursor}) for cursor in deep[:DISTINCT_EVENTS]],
        ),
        "GET /payments?external_id=": (
            "get_payments",
            [_get("/payments", {"external_id": value}) for value in external_ids],
        ),
    }


def history_cases(url: str) -> Cases:
    """The history and analytics reads, on rows the next day really changed (a replica that
    holds the base day and the next day): case name -> (function, distinct requests)."""
    from paysync.params import encode_cursor

    with psycopg.connect(url) as connection:
        patients = [
            row[0]
            for row in connection.execute(
                """SELECT p.external_id FROM patients p
                   WHERE p.deleted IS NULL AND EXISTS (SELECT 1 FROM patient_versions v WHERE v.patient_id = p.id)
                   ORDER BY md5(p.external_id) LIMIT %s""",
                (DISTINCT_EVENTS,),
            )
        ]
        payments = [
            row[0]
            for row in connection.execute(
                """SELECT pay.external_id FROM payments pay
                   WHERE EXISTS (SELECT 1 FROM payment_versions v WHERE v.payment_id = pay.id)
                   ORDER BY md5(pay.external_id) LIMIT %s""",
                (DISTINCT_EVENTS,),
            )
        ]
        # The first load's and the next day's patients syncs: as_of falls between them.
        [[first_done, next_started]] = connection.execute(
            """SELECT min(finished), max(started) FROM sync_runs WHERE entity = 'patients' AND status = 'applied'"""
        ).fetchall()
        [[payments_sync]] = connection.execute(
            """SELECT max(id) FROM sync_runs WHERE entity = 'payments' AND status = 'applied' AND updated > 0"""
        ).fetchall()
        changed_ids = [
            row[0]
            for row in connection.execute(
                "SELECT row_id FROM sync_row_changes WHERE sync_id = %s ORDER BY md5(row_id::text) LIMIT %s",
                (payments_sync, DISTINCT_EVENTS),
            )
        ]
    if not patients or not payments or payments_sync is None:
        raise RuntimeError("the read replica holds no history: load the next day first")
    as_of = (first_done + (next_started - first_done) / 2).isoformat()
    sync = str(payments_sync)
    changes = "/syncs/{id}/changes"
    return {
        "GET /stats": ("get_stats", [_get("/stats")]),
        "GET /stats?top=100": ("get_stats", [_get("/stats", {"top": "100"})]),
        "GET /stats/histogram?buckets=20": ("get_stats", [_get("/stats/histogram", {"buckets": "20"})]),
        "GET /stats/history": ("get_stats", [_get("/stats/history")]),
        "GET /patients/{id}": (
            "get_patients",
            [_get(f"/patients/{value}", None, "/patients/{externalId}", externalId=value) for value in patients],
        ),
        "GET /patients/{id}?as_of=": (
            "get_patients",
            [
                _get(f"/patients/{value}", {"as_of": as_of}, "/patients/{externalId}", externalId=value)
                for value in patients
            ],
        ),
        "GET /patients/{id}/history": (
            "get_patients",
            [
                _get(f"/patients/{value}/history", None, "/patients/{externalId}/history", externalId=value)
                for value in patients
            ],
        ),
        "GET /payments/{id}/history": (
            "get_payments",
            [
                _get(f"/payments/{value}/history", None, "/payments/{externalId}/history", externalId=value)
                for value in payments
            ],
        ),
        "GET /syncs/{id}/changes (first page)": ("get_syncs", [_get(f"/syncs/{sync}/changes", None, changes, id=sync)]),
        "GET /syncs/{id}/changes?entity=payments&action=updated": (
            "get_syncs",
            [_get(f"/syncs/{sync}/changes", {"entity": "payments", "action": "updated"}, changes, id=sync)],
        ),
        "GET /syncs/{id}/changes (cursor page)": (
            "get_syncs",
            [
                _get(f"/syncs/{sync}/changes", {"cursor": encode_cursor("changes", row_id)}, changes, id=sync)
                for row_id in changed_ids
            ],
        ),
    }


def _rows(body: Any) -> int:
    return len(body) if isinstance(body, list) else 1


def _percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, math.ceil(fraction * len(ordered)) - 1)]


def measure_reads(urls: dict[str, str], handlers: dict[str, Handler]) -> dict[str, dict[str, dict[str, Any]]]:
    """p50 / p99 milliseconds of every read case on each database (size name -> URL).

    The databases take turns in rounds of ROUND calls per case, so that drift in
    this machine's speed hits every size alike and the sizes compare fairly.
    """
    cases: dict[str, Cases] = {}
    groups: dict[str, str] = {}
    for size, url in urls.items():
        lists, history = read_cases(url), history_cases(url)
        cases[size] = {**lists, **history}
        groups.update(dict.fromkeys(lists, LISTS) | dict.fromkeys(history, HISTORY))
    context = lambdas.LambdaContext("paysync-bench", memory_limit_in_mb=512, timeout_seconds=30, region="us-east-1")
    samples: dict[str, dict[str, list[float]]] = {size: {} for size in urls}
    rows: dict[str, dict[str, int]] = {size: {} for size in urls}
    for start in range(0, CALLS, ROUND):
        for size, url in urls.items():
            use_database(url)
            for name, (function, events) in cases[size].items():
                handler = handlers[function]
                timed = samples[size].setdefault(name, [])
                for call in range(start - WARMUP_PER_ROUND, min(start + ROUND, CALLS)):
                    event = events[call % len(events)]
                    clock = time.perf_counter()
                    response = handler(event, context)
                    elapsed = time.perf_counter() - clock
                    if response["statusCode"] != 200:
                        raise RuntimeError(f"{name}: HTTP {response['statusCode']}: {response['body'][:300]}")
                    if call >= start:
                        timed.append(elapsed * 1000)
                        rows[size][name] = rows[size].get(name, 0) + _rows(json.loads(response["body"]))
    return {
        size: {
            name: {
                "group": groups[name],
                "p50_ms": _percentile(timed, 0.50),
                "p99_ms": _percentile(timed, 0.99),
                "calls": len(timed),
                "rows_per_call": rows[size][name] / len(timed),
            }
            for name, timed in by_case.items()
        }
        for size, by_case in samples.items()
    }
