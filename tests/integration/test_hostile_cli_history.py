"""Hostile command lines for `paysync history` / `paysync changes`: each gets its documented exit
code (1 for a row or sync run that does not exist, 2 for bad arguments, 3 for an unreachable
database), one line on stderr, no traceback, nothing or only the error JSON on stdout, and leaves
the replica, its history and the sync runs as they were."""

from __future__ import annotations

import json
import socket

import pytest

from paysync.cli import EXIT_FAILURE, EXIT_REJECTED, EXIT_USAGE, main
from tests.integration.test_cli_history import patient, sync


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


UNREACHABLE = f"postgresql://nobody@127.0.0.1:{_closed_port()}/none"

CASES = [
    # (argv, exit code, fragment of the stderr line)
    (["history", "patients", "NOPE"], EXIT_REJECTED, "no patient with this externalId"),
    (["history", "payments", "NOPE"], EXIT_REJECTED, "no payment with this externalId"),
    (["history", "payments", "P1"], EXIT_REJECTED, "no payment with this externalId"),  # a patient's id
    (["history", "patients", "p1"], EXIT_REJECTED, "no patient"),  # ids are case-sensitive
    (["history", "patients", " P1"], EXIT_REJECTED, "no patient"),
    (["history", "patients", "P1' OR '1'='1"], EXIT_REJECTED, "no patient"),
    (["history", "patients", ""], EXIT_USAGE, "externalId"),
    (["history", "patients", "   "], EXIT_USAGE, "externalId"),
    (["history", "patients", "x" * 256], EXIT_USAGE, "externalId"),
    (["history", "patients", "a\x00b"], EXIT_USAGE, "externalId"),
    (["history", "doctors", "P1"], EXIT_USAGE, "invalid choice"),
    (["history", "patients"], EXIT_USAGE, "required"),
    (["history"], EXIT_USAGE, "required"),
    (["history", "patients", "P1", "--limit", "0"], EXIT_USAGE, "limit must be an integer from 1 to 1000"),
    (["history", "patients", "P1", "--limit", "1001"], EXIT_USAGE, "limit"),
    (["history", "patients", "P1", "--limit", "-1"], EXIT_USAGE, "limit"),
    (["history", "patients", "P1", "--limit", "abc"], EXIT_USAGE, "limit"),
    (["history", "patients", "P1", "--limit", "1.5"], EXIT_USAGE, "limit"),
    (["history", "patients", "P1", "--limit", "\uff11"], EXIT_USAGE, "limit"),  # a full-width digit one
    (["history", "patients", "P1", "--limit", ""], EXIT_USAGE, "limit"),
    (["history", "patients", "P1", "--cursor", "x"], EXIT_USAGE, "unrecognized arguments"),
    (["changes", "999999"], EXIT_REJECTED, "sync run 999999 does not exist"),
    (["changes", "0"], EXIT_USAGE, "id must be a positive integer"),
    (["changes", "-1"], EXIT_USAGE, "id"),
    (["changes", "abc"], EXIT_USAGE, "id"),
    (["changes", "1.0"], EXIT_USAGE, "id"),
    (["changes", "1e3"], EXIT_USAGE, "id"),
    (["changes", "٣"], EXIT_USAGE, "id"),  # an Arabic-Indic digit
    (["changes", "9223372036854775808"], EXIT_USAGE, "id"),  # 2^63
    (["changes", " 1"], EXIT_USAGE, "id"),
    (["changes", ""], EXIT_USAGE, "id"),
    (["changes"], EXIT_USAGE, "required"),
    (["changes", "1", "--entity", "doctors"], EXIT_USAGE, "invalid choice"),
    (["changes", "1", "--entity", "Patients"], EXIT_USAGE, "invalid choice"),
    (["changes", "1", "--action", "purged"], EXIT_USAGE, "invalid choice"),
    (["changes", "1", "--action", ""], EXIT_USAGE, "invalid choice"),
    (["changes", "1", "--limit", "0"], EXIT_USAGE, "limit"),
    (["changes", "1", "--limit", "99999999999999999999"], EXIT_USAGE, "limit"),
    (["--database-url", "mysql://x@h/d", "changes", "1"], EXIT_USAGE, "invalid --database-url"),
    (["--database-url", "", "history", "patients", "P1"], EXIT_USAGE, "no database"),
    (["--database-url", UNREACHABLE, "changes", "1"], EXIT_FAILURE, "unreachable"),
    (["--database-url", UNREACHABLE, "history", "patients", "P1"], EXIT_FAILURE, "unreachable"),
]


# Found while parsing the command line, before --json is known: stderr only.
ARGPARSE_ERRORS = ("invalid choice", "required", "unrecognized arguments")


def _state(conn) -> dict[str, list]:
    tables = ("patients", "payments", "patient_versions", "payment_versions", "sync_runs")
    return {table: conn.run(f"SELECT * FROM {table} ORDER BY id") for table in tables}


@pytest.fixture
def replica(conn):
    sync("patients", [patient("P1", "Ann"), patient("P2", "Bob")])
    sync("patients", [patient("P1", "Anna")])
    return conn


@pytest.mark.parametrize("as_json", [False, True], ids=["text", "json"])
@pytest.mark.parametrize(("argv", "code", "message"), CASES, ids=[" ".join(case[0])[:60] for case in CASES])
def test_hostile_history_command_lines(replica, capsys, argv, code, message, as_json):
    before = _state(replica)

    assert main([*argv, "--json"] if as_json else argv) == code

    out, err = capsys.readouterr()
    assert err.startswith("paysync: ")
    assert message in err
    assert err.count("\n") == 1
    assert "Traceback" not in err
    if as_json and message not in ARGPARSE_ERRORS:
        document = json.loads(out)
        assert document["status"] == "error"
        assert message in document["error"]["message"]
    else:
        assert out == ""
    assert _state(replica) == before
