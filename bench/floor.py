"""The strict floor: what this machine ingests at best, with no paysync code on the path.

Two timed stages, run one after the other:

1. parse + encode: the snapshot is read in blocks of whole lines of about 2 MB
   (the generator writes one record per line), each block wrapped in [ ] and
   parsed by the standard library's C JSON parser, and every record written as a
   line of COPY text to a temporary file. Memory holds one block, at any size.
2. COPY: the file is sent with psycopg 3 (libpq, like psql's \\copy) into an
   UNLOGGED table without indexes.

The floor is the sum of the two stages' wall times.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

BLOCK_BYTES = 2 << 20
COPY_BLOCK_BYTES = 1 << 20
NULL = "\\N"
FIELDS = {
    "patients": ("externalId", "firstName", "lastName", "middleName", "dateOfBirth"),
    "payments": ("externalId", "amount", "patientId"),
}
COLUMNS = {
    "patients": ("idx", "external_id", "first_name", "last_name", "middle_name", "date_of_birth"),
    "payments": ("idx", "external_id", "amount", "patient_external_id"),
}
DDL = {
    "patients": """CREATE UNLOGGED TABLE {table} (
        idx bigint, external_id text, first_name text, last_name text, middle_name text, date_of_birth date)""",
    "payments": """CREATE UNLOGGED TABLE {table} (
        idx bigint, external_id text, amount numeric(12,2), patient_external_id text)""",
}


def copy_field(value: Any) -> str:
    """One field of COPY text: \\N for null, numbers as JSON wrote them, text escaped."""
    if value is None:
        return NULL
    text = str(value)
    # Backslash first, then the characters that would end a field or a row.
    return text.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


def copy_line(entity: str, index: int, record: dict[str, Any]) -> str:
    """One COPY text row (without its newline): idx, then the entity's fields; a missing key is null."""
    return "\t".join([str(index), *(copy_field(record.get(name)) for name in FIELDS[entity])])


# Lines without a backslash (no escapes to write) take an f-string: one without null checks for
# blocks holding no null, one with them otherwise.
def _plain_patient(index: int, record: dict[str, Any]) -> str:
    get = record.get
    return (
        f"{index}\t{get('externalId', NULL)}\t{get('firstName', NULL)}\t{get('lastName', NULL)}"
        f"\t{get('middleName', NULL)}\t{get('dateOfBirth', NULL)}"
    )


def _plain_payment(index: int, record: dict[str, Any]) -> str:
    get = record.get
    return f"{index}\t{get('externalId', NULL)}\t{get('amount', NULL)}\t{get('patientId', NULL)}"


def _null(value: Any) -> Any:
    return NULL if value is None else value


def _nullable_patient(index: int, record: dict[str, Any]) -> str:
    get = record.get
    return (
        f"{index}\t{_null(get('externalId'))}\t{_null(get('firstName'))}\t{_null(get('lastName'))}"
        f"\t{_null(get('middleName'))}\t{_null(get('dateOfBirth'))}"
    )


def _nullable_payment(index: int, record: dict[str, Any]) -> str:
    get = record.get
    return f"{index}\t{_null(get('externalId'))}\t{_null(get('amount'))}\t{_null(get('patientId'))}"


_PLAIN = {"patients": _plain_patient, "payments": _plain_payment}
_NULLABLE = {"patients": _nullable_patient, "payments": _nullable_payment}


def copy_block(entity: str, first_index: int, body: bytes) -> tuple[str, int]:
    """COPY text for a block of JSON records, one per line (each but the last ending in a comma),
    numbered from `first_index`; returns the text and the number of records.

    Numbers keep the digits JSON wrote (parse_float=str). Only a line holding a backslash (an
    escape: quotes, tabs, newlines, backslashes, \\u…) can need COPY escapes: it takes the
    general path, every other record one f-string.
    """
    records = json.loads(b"[" + body + b"]", parse_float=str)
    if b"\\" not in body:
        plain = (_NULLABLE if b"null" in body else _PLAIN)[entity]
        rows = [plain(index, record) for index, record in enumerate(records, first_index)]
    else:
        plain = _NULLABLE[entity]
        lines = [line for line in body.split(b"\n") if line.strip()]
        rows = [
            copy_line(entity, index, record) if b"\\" in line else plain(index, record)
            for index, (line, record) in enumerate(zip(lines, records, strict=True), first_index)
        ]
    return ("\n".join(rows) + "\n" if rows else ""), len(records)


def json_blocks(stream: BinaryIO, block_bytes: int = BLOCK_BYTES) -> Iterator[bytes]:
    """The records of a one-record-per-line JSON array, in blocks of whole lines of about
    `block_bytes`, without the array's brackets and the block's last comma. (Each record
    line starts with { and ends with } or },: a [ or ] at a block's edge is the array's.)"""
    rest = b""
    while True:
        data = stream.read(block_bytes)
        chunk = rest + data
        if data:
            cut = chunk.rfind(b"\n") + 1
            if cut == 0:
                rest = chunk
                continue
            chunk, rest = chunk[:cut], chunk[cut:]
        body = chunk.strip().removeprefix(b"[").removesuffix(b"]").strip().rstrip(b",")
        if body:
            yield body
        if not data:
            return


def encode_snapshot(entity: str, source: Path, target: Path) -> int:
    """Parse `source` and write its COPY text to `target`; returns the number of records."""
    rows = 0
    with source.open("rb") as stream, target.open("w", encoding="utf-8", newline="") as out:
        for body in json_blocks(stream):
            text, count = copy_block(entity, rows, body)
            out.write(text)
            rows += count
    return rows


def measure(url: str, entity: str, path: str) -> dict[str, Any]:
    """Both stages for one snapshot: rows, wall and CPU seconds of each, and their sum."""
    import psycopg

    from bench.steps import own_cpu, process_cpu

    table = f"strict_floor_{entity}"
    handle, name = tempfile.mkstemp(prefix=f"paysync-floor-{entity}-", suffix=".copy")
    os.close(handle)
    spool = Path(name)
    try:
        cpu_before, clock = own_cpu(), time.perf_counter()
        rows = encode_snapshot(entity, Path(path), spool)
        parse_wall, parse_cpu = time.perf_counter() - clock, own_cpu() - cpu_before
        with psycopg.connect(url, autocommit=True) as connection:
            connection.execute(f"DROP TABLE IF EXISTS {table}")
            connection.execute(DDL[entity].format(table=table))
            pid = connection.execute("SELECT pg_backend_pid()").fetchone()[0]
            server_before, cpu_before, clock = process_cpu(pid), own_cpu(), time.perf_counter()
            statement = f"COPY {table} ({', '.join(COLUMNS[entity])}) FROM STDIN"
            with (
                spool.open("rb") as stream,
                connection.transaction(),
                connection.cursor() as cursor,
                cursor.copy(statement) as copy,
            ):
                while block := stream.read(COPY_BLOCK_BYTES):
                    copy.write(block)
            copy_wall, copy_cpu = time.perf_counter() - clock, own_cpu() - cpu_before
            server_after = process_cpu(pid)
            [[copied]] = connection.execute(f"SELECT count(*) FROM {table}").fetchall()
            connection.execute(f"DROP TABLE {table}")
        if copied != rows:
            raise RuntimeError(f"strict floor {entity}: {rows} records parsed, {copied} copied")
        return {
            "rows": rows,
            "parse_wall_s": parse_wall,
            "parse_cpu_s": parse_cpu,
            "copy_wall_s": copy_wall,
            "copy_cpu_s": copy_cpu,
            "server_cpu_s": None if server_before is None or server_after is None else server_after - server_before,
            "copy_text_bytes": spool.stat().st_size,
            "wall_s": parse_wall + copy_wall,
        }
    finally:
        spool.unlink(missing_ok=True)
