"""Read latency through the real handlers: warm, in-process, API Gateway proxy events."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

ROOT = Path(__file__).resolve().parent.parent
FUNCTIONS = ROOT / "functions"
CALLS = 300
WARMUP = 20
DISTINCT_EVENTS = 50  # each case cycles through this many different requests
NARROW_ROWS = 25  # patients inside a "narrow" total range

Handler = Callable[[dict[str, Any], Any], dict[str, Any]]


@dataclass
class LambdaContext:
    function_name: str = "paysync-bench"
    memory_limit_in_mb: int = 512
    invoked_function_arn: str = "arn:aws:lambda:us-east-1:123456789012:function:paysync-bench"
    aws_request_id: str = "00000000-0000-4000-8000-000000000000"
    log_group_name: str = "/aws/lambda/paysync-bench"
    log_stream_name: str = "bench"

    def get_remaining_time_in_millis(self) -> int:
        return 30_000


def proxy_event(path: str, query: dict[str, str] | None = None) -> dict[str, Any]:
    """An API Gateway REST (v1) proxy event for GET `path`, as the Prod stage delivers it."""
    headers = {"Host": "bench.execute-api.us-east-1.amazonaws.com", "X-Forwarded-Proto": "https", "Accept": "*/*"}
    return {
        "resource": path,
        "path": path,
        "httpMethod": "GET",
        "headers": headers,
        "multiValueHeaders": {name: [value] for name, value in headers.items()},
        "queryStringParameters": query or None,
        "multiValueQueryStringParameters": {name: [value] for name, value in query.items()} if query else None,
        "pathParameters": None,
        "stageVariables": None,
        "requestContext": {
            "resourcePath": path,
            "httpMethod": "GET",
            "path": f"/Prod{path}",
            "stage": "Prod",
            "accountId": "123456789012",
            "apiId": "bench",
            "requestId": "bench-request",
            "protocol": "HTTP/1.1",
            "identity": {"sourceIp": "127.0.0.1", "userAgent": "paysync-bench"},
            "requestTimeEpoch": 0,
        },
        "body": None,
        "isBase64Encoded": False,
    }


def load_handler(function: str) -> Handler:
    """functions/<function>/app.py's lambda_handler, imported under a unique module name."""
    spec = importlib.util.spec_from_file_location(f"bench_{function}_app", FUNCTIONS / function / "app.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.lambda_handler


def use_database(url: str) -> None:
    """Point the in-process handlers at `url` (a new shared connection on the next request)."""
    from paysync.config import get_settings
    from paysync.dal import db

    os.environ["DATABASE_URL"] = url
    get_settings.cache_clear()
    if db._shared is not None:
        db.close_quietly(db._shared)
        db._shared = None


def read_cases(url: str) -> dict[str, tuple[str, list[dict[str, str]]]]:
    """Case name -> (path, the distinct query strings it cycles through), drawn from the data."""
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
    return {
        "GET /patients (first page)": ("/patients", [{}]),
        "GET /patients narrow range": ("/patients", narrow),
        "GET /patients wide range": ("/patients", [{"payment_min": str(low), "payment_max": str(high)}]),
        "GET /patients deep page (cursor)": ("/patients", [{"cursor": cursor} for cursor in deep[:DISTINCT_EVENTS]]),
        "GET /payments?external_id=": ("/payments", [{"external_id": value} for value in external_ids]),
    }


def _percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, math.ceil(fraction * len(ordered)) - 1)]


def measure_reads(url: str, handlers: dict[str, Handler]) -> dict[str, dict[str, float]]:
    """p50 / p99 milliseconds of every read case against the database at `url`."""
    use_database(url)
    context = LambdaContext()
    results = {}
    for name, (path, queries) in read_cases(url).items():
        handler = handlers[path]
        events = [proxy_event(path, query) for query in queries]
        rows = 0
        samples = []
        for call in range(WARMUP + CALLS):
            event = events[call % len(events)]
            clock = time.perf_counter()
            response = handler(event, context)
            elapsed = time.perf_counter() - clock
            if response["statusCode"] != 200:
                raise RuntimeError(f"{name}: HTTP {response['statusCode']}: {response['body'][:300]}")
            if call >= WARMUP:
                samples.append(elapsed * 1000)
                rows += len(json.loads(response["body"]))
        results[name] = {
            "p50_ms": _percentile(samples, 0.50),
            "p99_ms": _percentile(samples, 0.99),
            "calls": len(samples),
            "rows_per_call": rows / len(samples),
        }
    return results
