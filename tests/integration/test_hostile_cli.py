"""Hostile command lines for `paysync import` / `upload`: each gets its documented exit code, one
line of explanation on stderr (rejections may list records under it, indented), no traceback,
and leaves the replica as it was. Rejected snapshots are recorded as sync runs; usage and
database errors never reach a sync."""

from __future__ import annotations

import gzip
import io
import json
import os
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from paysync.cli import EXIT_FAILURE, EXIT_REJECTED, EXIT_USAGE, main
from paysync.config import get_settings
from paysync.dal import storage
from tests.conftest import SAMPLES, _with_database, table_state


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class Case:
    """argv with {file} for a file holding `content` (None: no file is created) and {tmp} for the
    test's directory; `stdin` replaces standard input; `env` sets (None: unsets) variables."""

    argv: list[str]
    code: int
    message: str  # a fragment of the first stderr line
    content: bytes | None = None
    stdin: Any = "unchanged"
    env: dict[str, str | None] = field(default_factory=dict)
    setup: Callable[[Path], None] | None = None


def _gz(data: bytes) -> bytes:
    return gzip.compress(data)


PATIENT = {"firstName": "A", "lastName": "B", "dateOfBirth": "2000-01-01", "externalId": "x1"}


class _Terminal(io.TextIOWrapper):
    def isatty(self) -> bool:
        return True


def _make_unreadable(tmp: Path) -> None:
    (tmp / "locked.json").write_text("[]")
    (tmp / "locked.json").chmod(0)


def _make_dangling_link(tmp: Path) -> None:
    (tmp / "link.json").symlink_to(tmp / "gone.json")


USAGE_CASES = {
    # the file
    "missing file": Case(["import", "patients", "{tmp}/nope.json"], EXIT_USAGE, "no such file"),
    "directory instead of file": Case(["import", "patients", "{tmp}"], EXIT_USAGE, "is a directory"),
    "dangling symlink": Case(
        ["import", "patients", "{tmp}/link.json"], EXIT_USAGE, "no such file", setup=_make_dangling_link
    ),
    "path through a file": Case(["import", "patients", "{file}/x.json"], EXIT_USAGE, "no such file", content=b"[]"),
    "empty file name": Case(["import", "patients", ""], EXIT_USAGE, "file name is empty"),
    "newline in the file name": Case(["import", "patients", "{tmp}/a\nb.json"], EXIT_USAGE, "no such file"),
    "unreadable file": Case(
        ["import", "patients", "{tmp}/locked.json"], EXIT_USAGE, "permission denied", setup=_make_unreadable
    ),
    "stdin is a terminal": Case(
        ["import", "patients", "-"], EXIT_USAGE, "is a terminal", stdin=_Terminal(io.BytesIO(b"[]"))
    ),
    "stdin closed": Case(["import", "patients", "-"], EXIT_USAGE, "standard input is closed", stdin=None),
    # the command line
    "unknown entity": Case(["import", "doctors", "{file}"], EXIT_USAGE, "invalid choice", content=b"[]"),
    "entity in capitals": Case(["import", "PATIENTS", "{file}"], EXIT_USAGE, "invalid choice", content=b"[]"),
    "unknown flag": Case(["import", "patients", "{file}", "--bogus"], EXIT_USAGE, "unrecognized", content=b"[]"),
    "flag with a value it does not take": Case(
        ["import", "patients", "{file}", "--force=yes"], EXIT_USAGE, "ignored explicit argument", content=b"[]"
    ),
    "import flag before the command": Case(
        ["--json", "import", "patients", "{file}"], EXIT_USAGE, "unrecognized", content=b"[]"
    ),
    "no file argument": Case(["import", "patients"], EXIT_USAGE, "required"),
    "two file arguments": Case(["import", "patients", "{file}", "{file}"], EXIT_USAGE, "unrecognized", content=b"[]"),
    "no command": Case([], EXIT_USAGE, "required"),
    "unknown command": Case(["sync", "patients"], EXIT_USAGE, "invalid choice"),
    "--database-url without a value": Case(["--database-url"], EXIT_USAGE, "expected one argument"),
    # the database URL
    "empty --database-url": Case(
        ["--database-url", "", "import", "patients", "{file}"], EXIT_USAGE, "no database", content=b"[]"
    ),
    "blank DATABASE_URL": Case(
        ["import", "patients", "{file}"], EXIT_USAGE, "no database", content=b"[]", env={"DATABASE_URL": "   "}
    ),
    "no DATABASE_URL": Case(
        ["import", "patients", "{file}"], EXIT_USAGE, "no database", content=b"[]", env={"DATABASE_URL": None}
    ),
    "mysql URL": Case(
        ["--database-url", "mysql://u:p@localhost/db", "import", "patients", "{file}"],
        EXIT_USAGE,
        "invalid --database-url",
        content=b"[]",
    ),
    "not a URL": Case(
        ["import", "patients", "{file}"],
        EXIT_USAGE,
        "invalid DATABASE_URL",
        content=b"[]",
        env={"DATABASE_URL": "localhost:5432"},
    ),
    "port not a number": Case(
        ["--database-url", "postgresql://u@localhost:abc/db", "import", "patients", "{file}"],
        EXIT_USAGE,
        "invalid --database-url",
        content=b"[]",
    ),
    "port out of range": Case(
        ["--database-url", "postgresql://u@localhost:99999/db", "import", "patients", "{file}"],
        EXIT_USAGE,
        "invalid --database-url",
        content=b"[]",
    ),
    "broken IPv6 host": Case(
        ["--database-url", "postgresql://u@[::1/db", "import", "patients", "{file}"],
        EXIT_USAGE,
        "invalid --database-url",
        content=b"[]",
    ),
    "unknown sslmode": Case(
        ["--database-url", "postgresql://u@localhost/db?sslmode=maybe", "import", "patients", "{file}"],
        EXIT_USAGE,
        "sslmode",
        content=b"[]",
    ),
    "port query not a number": Case(
        ["--database-url", "postgresql://u@localhost/db?port=x", "import", "patients", "{file}"],
        EXIT_USAGE,
        "invalid --database-url",
        content=b"[]",
    ),
    # upload
    "upload from stdin": Case(["upload", "patients", "-", "--bucket", "b"], EXIT_USAGE, "needs a file"),
    "upload key under the other entity": Case(
        ["upload", "patients", "{file}", "--bucket", "b", "--key", "payments/x.json"],
        EXIT_USAGE,
        "must start with patients/",
        content=b"[]",
    ),
    "upload key not a snapshot name": Case(
        ["upload", "patients", "{file}", "--bucket", "b", "--key", "patients/x.csv"],
        EXIT_USAGE,
        "must end with .json",
        content=b"[]",
    ),
    "upload without a bucket": Case(
        ["upload", "patients", "{file}"], EXIT_USAGE, "no bucket", content=b"[]", env={"SNAPSHOT_BUCKET": None}
    ),
    "upload of a directory": Case(["upload", "patients", "{tmp}", "--bucket", "b"], EXIT_USAGE, "is a directory"),
    "upload without AWS credentials": Case(
        ["upload", "patients", "{file}", "--bucket", "paysync-nowhere"],
        EXIT_USAGE,
        "no AWS credentials",
        content=b"[]",
        env={
            "AWS_ACCESS_KEY_ID": None,
            "AWS_SECRET_ACCESS_KEY": None,
            "AWS_SESSION_TOKEN": None,
            "AWS_PROFILE": None,
            "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/credentials",
            "AWS_CONFIG_FILE": "/nonexistent/config",
            "AWS_EC2_METADATA_DISABLED": "true",
            "AWS_DEFAULT_REGION": "us-east-1",
            "S3_ENDPOINT_URL": f"http://127.0.0.1:{_closed_port()}",
        },
    ),
}

DATABASE_CASES = {
    "closed port": Case(
        ["--database-url", f"postgresql://u@127.0.0.1:{_closed_port()}/db", "import", "patients", "{file}"],
        EXIT_FAILURE,
        "unreachable",
        content=json.dumps([PATIENT]).encode(),
    ),
    "missing database": Case(
        ["import", "patients", "{file}"],
        EXIT_FAILURE,
        "does not exist",
        content=json.dumps([PATIENT]).encode(),
        env={"DATABASE_URL": "{missing_database}"},
    ),
    "closed port, dry run, JSON": Case(
        ["--database-url", f"postgresql://u@127.0.0.1:{_closed_port()}/db", "import", "payments", "{file}", "--json"],
        EXIT_FAILURE,
        "unreachable",
        content=b"[]",
    ),
}

REJECTED_CASES = {
    "empty file": Case(["import", "patients", "{file}"], EXIT_REJECTED, "rejected", content=b""),
    "whitespace only": Case(["import", "patients", "{file}"], EXIT_REJECTED, "rejected", content=b" \n\t "),
    "bad gzip": Case(["import", "patients", "{file}"], EXIT_REJECTED, "rejected", content=b"\x1f\x8b\x08garbage"),
    "truncated gzip": Case(
        ["import", "patients", "{file}"], EXIT_REJECTED, "rejected", content=_gz(json.dumps([PATIENT]).encode())[:-12]
    ),
    "gzip of a JSON object": Case(["import", "patients", "{file}"], EXIT_REJECTED, "rejected", content=_gz(b"{}")),
    "JSON object instead of array": Case(
        ["import", "patients", "{file}"], EXIT_REJECTED, "rejected", content=json.dumps(PATIENT).encode()
    ),
    "array then garbage": Case(
        ["import", "patients", "{file}"], EXIT_REJECTED, "rejected", content=json.dumps([PATIENT]).encode() + b"]]"
    ),
    "binary garbage": Case(["import", "patients", "{file}"], EXIT_REJECTED, "rejected", content=bytes(range(256))),
    "UTF-16 text": Case(
        ["import", "patients", "{file}"], EXIT_REJECTED, "rejected", content=json.dumps([PATIENT]).encode("utf-16")
    ),
    "deeply nested arrays": Case(["import", "patients", "{file}"], EXIT_REJECTED, "rejected", content=b"[" * 1000),
    "payments imported as patients": Case(
        ["import", "patients", str(SAMPLES / "payments.json")], EXIT_REJECTED, "invalid record"
    ),
    "patients imported as payments": Case(
        ["import", "payments", str(SAMPLES / "patients.json")], EXIT_REJECTED, "invalid record"
    ),
    "invalid date": Case(
        ["import", "patients", "{file}"],
        EXIT_REJECTED,
        "invalid record",
        content=json.dumps([{**PATIENT, "dateOfBirth": "2000-02-30"}]).encode(),
    ),
    "duplicate externalId": Case(
        ["import", "patients", "{file}"],
        EXIT_REJECTED,
        "invalid record",
        content=json.dumps([PATIENT, PATIENT]).encode(),
    ),
    "NaN amount": Case(
        ["import", "payments", "{file}"],
        EXIT_REJECTED,
        "rejected: invalid JSON",
        content=b'[{"amount": NaN, "patientId": "4", "externalId": "p1"}]',
    ),
    "three-decimal amount, dry run": Case(
        ["import", "payments", "{file}", "--dry-run"],
        EXIT_REJECTED,
        "invalid record",
        content=b'[{"amount": 1.005, "patientId": "4", "externalId": "p1"}]',
    ),
    "garbage on stdin": Case(
        ["import", "patients", "-"], EXIT_REJECTED, "rejected", stdin=io.TextIOWrapper(io.BytesIO(b"not json"))
    ),
    "empty stdin": Case(["import", "payments", "-"], EXIT_REJECTED, "rejected", stdin=io.TextIOWrapper(io.BytesIO())),
    "gzip garbage on stdin, JSON": Case(
        ["import", "patients", "-", "--json"],
        EXIT_REJECTED,
        "rejected",
        stdin=io.TextIOWrapper(io.BytesIO(b"\x1f\x8b\x08\x00junk")),
    ),
}


@pytest.fixture
def seeded(conn: Any, capsys: pytest.CaptureFixture[str]) -> Any:
    """The replica holding the samples."""
    assert main(["import", "patients", str(SAMPLES / "patients.json")]) == 0
    assert main(["import", "payments", str(SAMPLES / "payments.json")]) == 0
    capsys.readouterr()
    return conn


def _run(case: Case, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, database_url: str) -> int:
    target = tmp_path / "snapshot.json"
    if case.content is not None:
        target.write_bytes(case.content)
    if case.setup is not None:
        case.setup(tmp_path)
    values = {"missing_database": _with_database(database_url, "paysync_no_such_db")}
    for name, value in case.env.items():
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value.format(**values))
    get_settings.cache_clear()
    storage.s3_client.cache_clear()
    if case.stdin != "unchanged":
        monkeypatch.setattr(sys, "stdin", case.stdin)
    argv = [arg.replace("{file}", str(target)).replace("{tmp}", str(tmp_path)) for arg in case.argv]
    try:
        return main(argv)
    finally:
        get_settings.cache_clear()
        storage.s3_client.cache_clear()


def _runs(conn: Any) -> list[list[Any]]:
    return conn.run("SELECT id, entity, source, status FROM sync_runs ORDER BY id")


def _check_output(err: str, message: str) -> None:
    assert "Traceback" not in err
    lines = err.splitlines()
    assert lines, "nothing on stderr"
    assert message in lines[0], lines[0]
    # One line of explanation; a rejection may list records under it, indented.
    assert all(line.startswith("  ") for line in lines[1:]), err


@pytest.mark.parametrize("case", USAGE_CASES.values(), ids=USAGE_CASES.keys())
def test_usage_errors(case, seeded, tmp_path, monkeypatch, capsys, database_url) -> None:
    if case.setup is _make_unreadable and os.geteuid() == 0:
        pytest.skip("root reads any file")
    before, runs = table_state(seeded), _runs(seeded)

    code = _run(case, tmp_path, monkeypatch, database_url)

    out, err = capsys.readouterr()
    assert code == case.code, err
    _check_output(err, case.message)
    assert out == ""
    assert table_state(seeded) == before
    assert _runs(seeded) == runs


@pytest.mark.parametrize("case", DATABASE_CASES.values(), ids=DATABASE_CASES.keys())
def test_database_errors(case, seeded, tmp_path, monkeypatch, capsys, database_url) -> None:
    before, runs = table_state(seeded), _runs(seeded)

    code = _run(case, tmp_path, monkeypatch, database_url)

    out, err = capsys.readouterr()
    assert code == case.code, err
    _check_output(err, case.message)
    if "--json" in case.argv:
        assert json.loads(out)["error"]["code"] == "database_unavailable"
    else:
        assert out == ""
    assert table_state(seeded) == before
    assert _runs(seeded) == runs


@pytest.mark.parametrize("case", REJECTED_CASES.values(), ids=REJECTED_CASES.keys())
def test_rejected_snapshots(case, seeded, tmp_path, monkeypatch, capsys, database_url) -> None:
    before, runs = table_state(seeded), _runs(seeded)

    code = _run(case, tmp_path, monkeypatch, database_url)

    out, err = capsys.readouterr()
    assert code == case.code, err
    _check_output(err, case.message)
    if "--json" in case.argv:
        assert json.loads(out)["status"] == "rejected"
    else:
        assert out == ""
    assert table_state(seeded) == before
    [*same, new] = _runs(seeded)
    assert same == runs
    assert (new[2], new[3]) == ("cli", "rejected")
