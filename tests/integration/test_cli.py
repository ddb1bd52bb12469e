"""The `paysync` command line: migrate, import (summary, --json, --dry-run, --force), upload."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import shutil
import struct
import subprocess
import sys
import termios
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pg8000.native
import pytest

from paysync.cli import EXIT_FAILURE, EXIT_OK, EXIT_REJECTED, EXIT_USAGE, connect_checked, main
from paysync.dal.db import close_quietly, parse_database_url
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
    assert main(["import", "doctors", "x.json"]) == EXIT_USAGE
    assert capsys.readouterr().err.count("\n") == 1


def test_unreachable_database_exits_3(capsys):
    assert main(["--database-url", "postgresql://nobody@127.0.0.1:1/none", "migrate"]) == EXIT_FAILURE
    assert "unreachable" in capsys.readouterr().err


def test_the_file_is_checked_before_the_database(capsys):
    # An unreachable database would be exit 3: the missing file is found first.
    code = main(["--database-url", "postgresql://nobody@127.0.0.1:1/none", "import", "patients", "/no/such.json"])

    assert code == EXIT_USAGE
    assert "no such file" in capsys.readouterr().err


@pytest.fixture
def password_url(conn, database_url):
    """A role that must log in with the password "right-pass" (a scram-sha-256 rule in pg_hba.conf)."""
    hba = Path(conn.run("SHOW hba_file")[0][0])
    if not os.access(hba, os.W_OK):
        pytest.skip("this PostgreSQL's pg_hba.conf cannot be changed from here")
    original = hba.read_text()
    conn.run("DROP ROLE IF EXISTS paysync_cli_pw")
    conn.run("CREATE ROLE paysync_cli_pw LOGIN PASSWORD 'right-pass'")
    # The migrations let only paysync's own roles connect: this one may too.
    database = conn.run("SELECT current_database()")[0][0]
    conn.run(f'GRANT CONNECT ON DATABASE "{database}" TO paysync_cli_pw')
    rules = "local all paysync_cli_pw scram-sha-256\nhost all paysync_cli_pw all scram-sha-256\n"
    hba.write_text(rules + original)
    conn.run("SELECT pg_reload_conf()")
    parts = urlsplit(database_url)
    netloc = "paysync_cli_pw:{password}@" + parts.netloc.rpartition("@")[2]
    try:
        yield urlunsplit(parts._replace(netloc=netloc))
    finally:
        hba.write_text(original)
        conn.run("SELECT pg_reload_conf()")
        conn.run(f'REVOKE CONNECT ON DATABASE "{database}" FROM paysync_cli_pw')
        conn.run("DROP ROLE IF EXISTS paysync_cli_pw")


def test_wrong_password_exits_3_with_one_line(password_url, conn, capsys):
    main(["import", "patients", str(SAMPLES / "patients.json")])
    capsys.readouterr()
    before = table_state(conn)
    wrong = password_url.format(password="wrong-pass")

    code = main(["--database-url", wrong, "import", "patients", str(SAMPLES / "patients.json")])

    err = capsys.readouterr().err
    assert code == EXIT_FAILURE
    assert err.count("\n") == 1
    assert "password authentication failed" in err
    assert "wrong-pass" not in err
    assert table_state(conn) == before
    # The same role with its password gets in: the rule really asks for one.
    close_quietly(connect_checked(parse_database_url(password_url.format(password="right-pass"))))


def _cli(*args: str, env: dict[str, str] | None = None, **kwargs) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "paysync.cli", *args]
    return subprocess.run(command, env={**os.environ, **(env or {})}, timeout=120, **kwargs)


def test_json_output_is_only_json_and_stderr_stays_quiet_off_a_terminal(conn):
    done = _cli("import", "patients", str(SAMPLES / "patients.json"), "--json", capture_output=True, text=True)
    failed = _cli(
        "--database-url",
        "postgresql://u@127.0.0.1:1/x",
        "import",
        "patients",
        str(SAMPLES / "patients.json"),
        "--json",
        capture_output=True,
        text=True,
    )

    assert done.returncode == EXIT_OK, done.stderr
    assert json.loads(done.stdout)["inserted"] == 4
    assert done.stderr == ""  # no progress bar when stderr is not a terminal
    assert failed.returncode == EXIT_FAILURE
    assert json.loads(failed.stdout)["error"]["code"] == "database_unavailable"
    assert failed.stderr.count("\n") == 1
    assert "Traceback" not in failed.stderr


def test_progress_and_the_merge_phase_show_on_a_terminal(conn):
    # stderr is a pseudo-terminal, as in an interactive shell
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # 100 columns
    try:
        run = _cli(
            "import",
            "patients",
            str(SAMPLES / "patients.json"),
            "--json",
            stdout=subprocess.PIPE,
            stderr=follower,
            stdin=subprocess.DEVNULL,
        )
        os.close(follower)
        follower = -1
        shown = b""
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # EIO: the terminal's other side is closed
                break
            if not chunk:
                break
            shown += chunk
    finally:
        os.close(leader)
        if follower != -1:
            os.close(follower)

    text = shown.decode(errors="replace")
    assert run.returncode == EXIT_OK
    assert "parsing patients.json" in text
    assert "merging" in text
    assert text.index("parsing") < text.index("merging")
    assert json.loads(run.stdout)["inserted"] == 4  # stdout: still only the JSON


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


def test_upload_to_a_missing_bucket_is_a_configuration_error(s3, capsys):
    code = main(["upload", "payments", str(SAMPLES / "payments.json"), "--bucket", "paysync-no-such-bucket"])

    err = capsys.readouterr().err
    assert code == EXIT_USAGE
    assert err.count("\n") == 1
    assert "does not exist" in err
    assert "Contents" not in s3.list_objects_v2(Bucket=TEST_BUCKET)
