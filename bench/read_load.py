"""Read latency while a sync runs: a thread calls the read handlers, on its own connection,
for as long as the sync step lasts."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import psycopg

from bench.generate import external_id
from bench.reads import _percentile, load_handler, use_database
from devserver import lambdas
from devserver.apigateway import proxy_event

P99_LIMIT_MS = 50.0  # reads must stay this fast during any sync, first loads included
PAUSE_SECONDS = 0.02  # between two calls: steady API traffic, not a load test of its own
PATIENT_IDS = 20  # GET /payments?external_id= cycles through this many patients
# Whether another session holds a lock that every read of the API's tables would wait for.
_EXCLUSIVE_LOCK_SQL = """
    SELECT EXISTS (SELECT 1 FROM pg_locks
                   WHERE locktype = 'relation' AND granted AND mode = 'AccessExclusiveLock'
                     AND pid <> pg_backend_pid()
                     AND relation IN (CAST('public.patients' AS regclass), CAST('public.payments' AS regclass),
                                      CAST('public.sync_runs' AS regclass)))"""


class ReadsDuringSync:
    """`with ReadsDuringSync(url, patients): <run a sync>`, then `summary()`.

    One thread cycles through GET /patients (first page and a total range), GET
    /payments (first page and one patient's) and GET /syncs, through the real
    handlers with API Gateway events, one call every PAUSE_SECONDS, and times each.
    A call that takes longer also stands for the calls that steady traffic would
    have sent meanwhile and that would have waited as long, less the time already
    passed (so one read stalled 10 s counts as ~500 slow reads, not as one).

    A second thread checks pg_locks every PAUSE_SECONDS for an ACCESS EXCLUSIVE
    lock on those tables (every read would wait for it): that tells a read
    stalled by a sync's lock from one slowed by a CPU shared with the sync.
    """

    def __init__(self, url: str, patients: int, ids: str = "uuid") -> None:
        self.url = url
        handlers = {path: load_handler(f"get_{path[1:]}") for path in ("/patients", "/payments", "/syncs")}
        step = max(1, patients // PATIENT_IDS)
        requests = [
            ("/patients", {}),
            ("/patients", {"payment_min": "100", "payment_max": "5000"}),
            ("/payments", {}),
            *(("/payments", {"external_id": external_id(1 + i * step, ids)}) for i in range(PATIENT_IDS)),
            ("/syncs", {}),
        ]
        self.calls = [(handlers[path], proxy_event("GET", path, query=query)) for path, query in requests]
        self.names = [
            path + ("?" + "&".join(f"{k}={v}" for k, v in query.items()) if query else "") for path, query in requests
        ]
        self.context = lambdas.LambdaContext(
            "paysync-bench", memory_limit_in_mb=512, timeout_seconds=30, region="us-east-1"
        )
        self.samples: list[float] = []
        self.errors = 0
        self.lock_checks = 0
        self.locked = 0
        self.slowest: tuple[float, str, float] = (0.0, "", 0.0)  # ms, request, seconds into the step
        self.locked_at: list[float] = []  # seconds into the step
        self._start = time.perf_counter()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=work, daemon=True) for work in (self._read, self._check_locks)]

    def __enter__(self) -> ReadsDuringSync:
        use_database(self.url)
        for handler, event in self.calls:  # untimed: opens the connection, loads lazy imports
            handler(event, self.context)
        self._monitor = psycopg.connect(self.url, autocommit=True)
        self._start = time.perf_counter()
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()
        self._monitor.close()

    def _read(self) -> None:
        call = 0
        while not self._stop.is_set():
            handler, event = self.calls[call % len(self.calls)]
            call += 1
            clock = time.perf_counter()
            try:
                response = handler(event, self.context)
            except Exception:
                response = {"statusCode": 0}
            elapsed = (time.perf_counter() - clock) * 1000
            self.samples.append(elapsed)
            if elapsed > self.slowest[0]:
                self.slowest = (elapsed, self.names[(call - 1) % len(self.calls)], clock - self._start)
            for waited in range(int(elapsed - PAUSE_SECONDS * 1000), 0, -int(PAUSE_SECONDS * 1000)):
                self.samples.append(float(waited))
            if response["statusCode"] != 200:
                self.errors += 1
            self._stop.wait(PAUSE_SECONDS)

    def _check_locks(self) -> None:
        while not self._stop.is_set():
            self.lock_checks += 1
            if self._monitor.execute(_EXCLUSIVE_LOCK_SQL).fetchone()[0]:
                self.locked += 1
                self.locked_at.append(time.perf_counter() - self._start)
            self._stop.wait(PAUSE_SECONDS)

    def summary(self) -> dict[str, Any]:
        """calls, errors, p50 / p99 / max milliseconds, whether p99 met the limit, and in how
        many of the lock checks the tables were locked against reads."""
        return {**self._latencies(), "cpu_pressure_pct": cpu_pressure()}

    def _latencies(self) -> dict[str, Any]:
        if not self.samples:
            return {"calls": 0, "errors": 0, "p50_ms": None, "p99_ms": None, "max_ms": None, "passed": None}
        p99 = _percentile(self.samples, 0.99)
        return {
            "calls": len(self.samples),  # the calls that steady traffic would have sent
            "errors": self.errors,
            "lock_checks": self.lock_checks,
            "exclusively_locked": self.locked,
            "locked_between_s": [min(self.locked_at), max(self.locked_at)] if self.locked_at else None,
            "slowest": {"ms": self.slowest[0], "request": self.slowest[1], "at_s": self.slowest[2]},
            "p50_ms": _percentile(self.samples, 0.50),
            "p99_ms": p99,
            "max_ms": max(self.samples),
            "passed": p99 <= P99_LIMIT_MS and self.errors == 0,
        }


def cpu_pressure() -> float | None:
    """Share of the last 10 s in which some runnable task waited for a CPU (Linux PSI), in %."""
    try:
        line = Path("/proc/pressure/cpu").read_text().splitlines()[0]
    except (OSError, IndexError):
        return None
    return float(line.split()[1].split("=")[1])


def verdict(summary: dict[str, Any]) -> str:
    """One line: 'p99 3.1 ms, max 7.0 ms, 80 calls: PASS'."""
    if not summary["calls"]:
        return "no read completed during the step: n/a"
    errors = f", {summary['errors']} failed" if summary["errors"] else ""
    result = "PASS" if summary["passed"] else "FAIL"
    return (
        f"p99 {summary['p99_ms']:.1f} ms, max {summary['max_ms']:.1f} ms, {summary['calls']} calls{errors};"
        f" tables locked against reads in {summary['exclusively_locked']} of {summary['lock_checks']} checks;"
        f" CPU pressure {summary['cpu_pressure_pct']}% (limit p99 {P99_LIMIT_MS:g} ms): {result}"
    )
