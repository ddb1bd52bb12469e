"""Where a sync's time goes: every statement timed and grouped by a label drawn from its SQL.

`StatementTimer` wraps pg8000's `Connection.run` (the only way paysync sends SQL)
inside the benchmark's sync child: wall time, this process's CPU and the
PostgreSQL backend's CPU of each statement, summed per label. The label comes
from the statement's leading keywords and target table (plus a note for the few
statement shapes worth telling apart), so statements that change keep their
group, and anything unrecognised lands in "other".
"""

from __future__ import annotations

import re
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import wraps
from typing import Any

from bench.steps import process_cpu

OTHER = "other"
BETWEEN = "(Python between statements)"

_COMMENT = re.compile(r"--[^\n]*")
_SPACE = re.compile(r"\s+")
_NAME = r"([A-Za-z_][\w$]*(?:\.[A-Za-z_][\w$]*)?)"
_DML = re.compile(rf"\b(INSERT\s+INTO|UPDATE|DELETE\s+FROM)\s+(?:ONLY\s+)?{_NAME}", re.IGNORECASE)
_FROM = re.compile(rf"\bFROM\s+{_NAME}", re.IGNORECASE)
_CREATE_TABLE = re.compile(
    rf"^CREATE\s+(?:(?:GLOBAL|LOCAL)\s+)?(?:TEMP|TEMPORARY|UNLOGGED)?\s*TABLE\s+(?:IF\s+NOT\s+EXISTS\s+)?{_NAME}",
    re.IGNORECASE,
)
_CREATE_INDEX = re.compile(
    rf"^CREATE\s+(?:UNIQUE\s+)?INDEX\s+(?:CONCURRENTLY\s+)?(?:IF\s+NOT\s+EXISTS\s+)?\S+\s+ON\s+(?:ONLY\s+)?{_NAME}",
    re.IGNORECASE,
)
_TARGETED = re.compile(
    rf"^(COPY|ANALYZE|VACUUM|TRUNCATE|ALTER\s+TABLE|DROP\s+TABLE|LOCK\s+TABLE)\s+(?:ONLY\s+)?{_NAME}", re.IGNORECASE
)
_TRANSACTION = {"BEGIN", "START", "COMMIT", "END", "ROLLBACK", "SAVEPOINT", "RELEASE"}
# Notes for statement shapes that share a keyword and a table but do different work.
_NOTES = (
    (re.compile(r"\bHAVING\s+count\(\*\)\s*>\s*1", re.IGNORECASE), "duplicate check"),
    (re.compile(r"\bSET\s+payments_total\b", re.IGNORECASE), "totals"),
)


def _bare(name: str) -> str:
    """A table name without its schema (a first load builds its tables in a schema of their own)."""
    return name.rsplit(".", 1)[-1].lower()


def _with_note(label: str, sql: str) -> str:
    for pattern, note in _NOTES:
        if pattern.search(sql):
            return f"{label} ({note})"
    return label


def label(sql: str) -> str:
    """The group of one statement, e.g. "COPY stage_payments", "UPDATE patients (totals)",
    "INSERT payment_versions", "CREATE diff_payments", "COMMIT"; "other" when unrecognised."""
    text = _SPACE.sub(" ", _COMMENT.sub(" ", sql)).strip()
    if not text:
        return OTHER
    first = text.split(" ", 1)[0].upper().rstrip(";")
    if first in _TRANSACTION:
        return "COMMIT" if first in ("COMMIT", "END") else "transaction control"
    if first == "SET":
        return "SET"
    if first == "DO":
        return "DO block (swap)" if "DROP TABLE" in text.upper() else "DO block"
    if match := _TARGETED.match(text):
        verb = _SPACE.sub(" ", match.group(1).upper())
        return f"{verb} {_bare(match.group(2))}"
    if match := _CREATE_INDEX.match(text):
        return f"CREATE INDEX {_bare(match.group(1))}"
    if match := _CREATE_TABLE.match(text):
        return f"CREATE {_bare(match.group(1))}"
    # The first data-changing statement, also inside a WITH: what the statement writes.
    if first in ("INSERT", "UPDATE", "DELETE", "WITH") and (match := _DML.search(text)):
        verb = match.group(1).split()[0].upper()
        return _with_note(f"{verb} {_bare(match.group(2))}", text)
    if first in ("SELECT", "WITH", "VALUES", "TABLE"):
        if match := _FROM.search(text):
            table = _bare(match.group(1))
            if table.startswith("pg_"):
                return "SELECT catalog"
            return _with_note(f"SELECT {table}", text)
        return "SELECT (no table)"
    return OTHER


@dataclass
class Group:
    calls: int = 0
    wall_s: float = 0.0
    cpu_s: float = 0.0
    server_cpu_s: float = 0.0

    def as_json(self) -> dict[str, Any]:
        return {"calls": self.calls, "wall_s": self.wall_s, "cpu_s": self.cpu_s, "server_cpu_s": self.server_cpu_s}


def backend_pid(connection: Any) -> int | None:
    """The PostgreSQL backend pid of a pg8000 connection (from its BackendKeyData message)."""
    data = getattr(connection, "_backend_key_data", None)
    if isinstance(data, bytes | bytearray) and len(data) >= 4:
        return struct.unpack("!i", bytes(data[:4]))[0]
    return None


class StatementTimer:
    """`with StatementTimer(pg8000.native.Connection) as timer: <sync>`, then `timer.groups()`."""

    def __init__(self, connection_class: type) -> None:
        self.connection_class = connection_class
        self.by_label: dict[str, Group] = {}
        self._original: Callable[..., Any] | None = None

    def __enter__(self) -> StatementTimer:
        original = self._original = self.connection_class.run
        by_label = self.by_label

        @wraps(original)
        def run(connection: Any, sql: str, *args: Any, **kwargs: Any) -> Any:
            pid = backend_pid(connection)
            server_before = process_cpu(pid) if pid else None
            cpu_before, clock = time.process_time(), time.perf_counter()
            try:
                return original(connection, sql, *args, **kwargs)
            finally:
                wall, cpu = time.perf_counter() - clock, time.process_time() - cpu_before
                server_after = process_cpu(pid) if pid else None
                group = by_label.setdefault(label(sql), Group())
                group.calls += 1
                group.wall_s += wall
                group.cpu_s += cpu
                if server_before is not None and server_after is not None:
                    group.server_cpu_s += server_after - server_before

        self.connection_class.run = run
        return self

    def __exit__(self, *_: object) -> None:
        self.connection_class.run = self._original

    def groups(self, wall_s: float, cpu_s: float, server_cpu_s: float | None) -> dict[str, dict[str, Any]]:
        """Every label's totals, the slowest first, plus the time spent between statements."""
        ordered = sorted(self.by_label.items(), key=lambda item: -item[1].wall_s)
        result = {name: group.as_json() for name, group in ordered}
        between = Group(
            calls=0,
            wall_s=max(0.0, wall_s - sum(group.wall_s for group in self.by_label.values())),
            cpu_s=max(0.0, cpu_s - sum(group.cpu_s for group in self.by_label.values())),
            server_cpu_s=max(0.0, (server_cpu_s or 0.0) - sum(group.server_cpu_s for group in self.by_label.values())),
        )
        result[BETWEEN] = between.as_json()
        return result
