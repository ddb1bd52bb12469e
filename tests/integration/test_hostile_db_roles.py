"""Hostile inputs against the database roles: each refused with the privilege error (or a clear
ValueError), nothing changed."""

# The fixtures come from test_db_roles (imported below); tests naming them as arguments "redefine" them.
# ruff: noqa: F811

from __future__ import annotations

import io
import json
import uuid

import pytest

from paysync.dal.db import parse_database_url
from paysync.migrate import LoginUser, ensure_login_users
from paysync.reconcile import reconcile_snapshot
from tests.conftest import sample_bytes, table_state
from tests.integration.test_db_roles import (  # noqa: F401  (fixtures)
    INSUFFICIENT_PRIVILEGE,
    cloudformation,
    migrate_event,
    reader,
    refused,
    secrets,
    syncer,
    users,
)


@pytest.mark.parametrize(
    "name", ["paysync_read", "paysync_owner", "Upper", "has-dash", "x; DROP TABLE patients", "", "a" * 64]
)
def test_ensure_login_users_refuses_unsafe_names(conn, database_url, name):
    before = conn.run("SELECT count(*) FROM pg_roles")
    with pytest.raises(ValueError, match="not a valid login user name"):
        ensure_login_users([LoginUser(name, "pw", "paysync_read")], parse_database_url(database_url))
    assert conn.run("SELECT count(*) FROM pg_roles") == before


@pytest.mark.parametrize(
    "statement",
    [
        "INSERT INTO patients (external_id, first_name, last_name, date_of_birth) VALUES ('x', 'a', 'b', '2000-01-01')",
        "UPDATE patients SET first_name = 'x'",
        "DELETE FROM patients",
        "TRUNCATE patients",
        "INSERT INTO sync_runs (entity, source, status, snapshot_at, started, finished)"
        " VALUES ('patients', 'cli', 'applied', now(), now(), now())",
        "UPDATE payments SET amount = 0",
        "DELETE FROM sync_runs",
        "DROP TABLE payments",
        "ALTER TABLE patients ADD COLUMN x int",
        "DROP INDEX patients_live_total_idx",
        "CREATE TABLE stolen (x text)",
        "CREATE TEMP TABLE scratch (x text)",
        "SELECT * FROM alembic_version",
        "CREATE ROLE intruder LOGIN",
        "GRANT paysync_sync TO CURRENT_USER",
        "SET ROLE paysync_owner",
    ],
)
def test_the_read_role_cannot_write(conn, reader, statement):
    reconcile_snapshot("patients", io.BytesIO(sample_bytes("patients")), source="cli")
    before = table_state(conn)
    assert refused(reader, statement) == INSUFFICIENT_PRIVILEGE
    assert table_state(conn) == before


@pytest.mark.parametrize(
    "statement",
    [
        "SELECT * FROM alembic_version",
        "UPDATE alembic_version SET version_num = '0001'",
        "CREATE ROLE intruder LOGIN",
        "GRANT paysync_read TO CURRENT_USER",
    ],
)
def test_the_sync_role_cannot_leave_the_replica(conn, syncer, statement):
    reconcile_snapshot("patients", io.BytesIO(sample_bytes("patients")), source="cli")
    before = table_state(conn), conn.run("SELECT rolname FROM pg_roles ORDER BY 1")
    assert refused(syncer, statement) == INSUFFICIENT_PRIVILEGE
    assert (table_state(conn), conn.run("SELECT rolname FROM pg_roles ORDER BY 1")) == before


@pytest.mark.parametrize(
    ("secret", "group"),
    [
        ({"username": "paysync_owner", "password": "pw"}, "paysync_read"),  # a group role as a login
        ({"username": "x; DROP TABLE patients", "password": "pw"}, "paysync_read"),
        ({"username": "test_cfn_bad", "password": "pw"}, "paysync_owner"),  # the owner is no login group
        ({"username": "test_cfn_bad", "password": "pw"}, "pg_read_all_data"),
        ({"password": "pw"}, "paysync_read"),  # no username in the secret
    ],
)
def test_the_migrate_function_refuses_unsafe_login_users(conn, invoke, secrets, cloudformation, secret, group):
    arn = secrets.create_secret(Name=f"bad-{uuid.uuid4().hex[:8]}", SecretString=json.dumps(secret))["ARN"]
    roles_before = conn.run("SELECT rolname FROM pg_roles ORDER BY 1")

    result = invoke("migrate", migrate_event([{"SecretArn": arn, "Group": group}]))

    assert result["Status"] == "FAILED"
    [answer] = cloudformation
    assert answer["Status"] == "FAILED"
    assert "pw" not in answer["Reason"]
    assert conn.run("SELECT rolname FROM pg_roles ORDER BY 1") == roles_before
