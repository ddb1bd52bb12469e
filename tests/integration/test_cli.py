"""The `paysync` command line: migrate, import (summary, --json, --dry-run, --force), upload."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pg8000.native
import pytest

from paysync.cli import EXIT_FAILURE, EXIT_OK, EXIT_REJECTED, EXIT_USAGE, main
from paysync.dal.db import parse_database_url
from tests.conftest import ROOT, SAMPLES, TEST_BUCKET, _with_database, table_state


def test_import_prints_a_human_summary(conn, capsys):
    code = main(["import", "patients", str(SAMPLES / "patients.json")])

    out = capsys.readouterr().out
    assert code == EXIT_OK
    assert "patients snapshot applied" in out
    assert "inserted" in out
    assert conn.run("SELECT count(*) FROM patients") == [[4]]


def test_import_json_summary(conn, capsys):
    main(["import", "patients", str(SAMPLES / "patients.json")])
    capsys.readouterr()

    code = main(["import", "payments", str(SAMPLES / "payments.json"), "--json"])

    summary = json.loads(capsys.readouterr().out)
    assert code == EXIT_OK
    assert (summary["inserted"], summary["orphaned"], summary["source"]) == (6, 2, "cli")


def test_dry_run_applies_nothing(conn, capsys):
    code = main(["import", "patients", str(SAMPLES / "patients.json"), "--dry-run"])

    assert code == EXIT_OK
    assert "dry run" in capsys.readouterr().out
    assert conn.run("SELECT count(*) FROM patients") == [[0]]


def test_rejected_snapshot_exits_non_zero_with_the_errors(conn, capsys, tmp_path):
    main(["import", "patients", str(SAMPLES / "patients.json")])
    before = table_state(conn)
    bad = tmp_path / "bad.json"
    bad.write_text('[{"firstName": "A", "lastName": "B", "dateOfBirth": "tomorrow", "externalId": "1"}]')

    code = main(["import", "patients", str(bad)])

    err = capsys.readouterr().err
    assert code == EXIT_REJECTED
    assert "record 0" in err
    assert "dateOfBirth" in err
    assert table_state(conn) == before


def test_guard_needs_force(conn, capsys, tmp_path):
    many = tmp_path / "many.json"
    many.write_text(
        json.dumps(
            [{"firstName": "A", "lastName": "B", "dateOfBirth": "2000-01-01", "externalId": i} for i in range(120)]
        )
    )
    empty = tmp_path / "empty.json"
    empty.write_text("[]")
    main(["import", "patients", str(many)])

    assert main(["import", "patients", str(empty), "--json"]) == EXIT_REJECTED
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["error"]["code"] == "deletion_guard"
    assert main(["import", "patients", str(empty), "--force"]) == EXIT_OK
    assert conn.run("SELECT count(*) FROM patients WHERE deleted IS NULL") == [[0]]


def test_import_reads_standard_input(conn, monkeypatch, capsys):
    import io

    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO((SAMPLES / "patients.json").read_bytes())))

    assert main(["import", "patients", "-"]) == EXIT_OK
    assert conn.run("SELECT count(*) FROM patients") == [[4]]


def test_usage_errors(conn, capsys, monkeypatch):
    assert main(["import", "patients", "/no/such/file.json"]) == EXIT_USAGE
    monkeypatch.delenv("DATABASE_URL")
    from paysync.config import get_settings

    get_settings.cache_clear()
    assert main(["migrate"]) == EXIT_USAGE
    assert "DATABASE_URL" in capsys.readouterr().err
    with pytest.raises(SystemExit) as caught:
        main(["import", "doctors", "x.json"])
    assert caught.value.code == 2


def test_unreachable_database_exits_3(capsys):
    assert main(["--database-url", "postgresql://nobody@127.0.0.1:1/none", "migrate"]) == EXIT_FAILURE
    assert "unreachable" in capsys.readouterr().err


def test_console_script_imports_into_a_fresh_database(database_url):
    """The installed `paysync` command against a database that has never been migrated."""
    script = shutil.which("paysync", path=str(ROOT / ".venv" / "bin")) or shutil.which("paysync")
    if script is None:
        pytest.skip("the paysync console script is not installed (make install)")
    admin = pg8000.native.Connection(**parse_database_url(database_url).as_kwargs())
    admin.run("DROP DATABASE IF EXISTS paysync_cli_fresh WITH (FORCE)")
    admin.run("CREATE DATABASE paysync_cli_fresh")
    try:
        url = _with_database(database_url, "paysync_cli_fresh")
        run = subprocess.run(
            [script, "--database-url", url, "import", "patients", str(SAMPLES / "patients.json"), "--json"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert run.returncode == 0, run.stderr
        assert json.loads(run.stdout)["inserted"] == 4
    finally:
        admin.run("DROP DATABASE IF EXISTS paysync_cli_fresh WITH (FORCE)")
        admin.close()


def test_upload_puts_the_file_under_the_entity_prefix(s3, capsys):
    code = main(["upload", "payments", str(SAMPLES / "payments.json"), "--bucket", TEST_BUCKET])

    assert code == EXIT_OK
    [obj] = s3.list_objects_v2(Bucket=TEST_BUCKET)["Contents"]
    assert obj["Key"].startswith("payments/")
    assert obj["Key"].endswith(".json")
    assert main(["upload", "payments", str(SAMPLES / "payments.json"), "--key", "patients/x.json"]) == EXIT_USAGE
