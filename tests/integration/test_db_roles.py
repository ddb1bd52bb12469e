"""The database roles against a real PostgreSQL: each login can do its job and no more."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import urllib.request
import uuid
from collections.abc import Iterator
from typing import Any

import boto3
import pg8000.dbapi
import pg8000.native
import pytest
from alembic.script import ScriptDirectory
from pg8000.exceptions import DatabaseError

from paysync.dal import merge
from paysync.dal.db import parse_database_url
from paysync.migrate import MIGRATIONS_DIR, LoginUser, ensure_login_users
from paysync.reconcile import reconcile_snapshot
from tests.conftest import load_event, sample_bytes, table_state

INSUFFICIENT_PRIVILEGE = "42501"
TABLES = ("patients", "payments", "sync_runs")


def login(database_url: str, user: str, password: str) -> pg8000.native.Connection:
    params = dataclasses.replace(parse_database_url(database_url), user=user, password=password)
    return pg8000.native.Connection(**params.as_kwargs())


def refused(connection: pg8000.native.Connection, statement: str) -> str:
    """Run `statement` in a transaction that is rolled back; the SQLSTATE it failed with."""
    connection.run("BEGIN")
    try:
        connection.run(statement)
    except DatabaseError as error:
        return error.args[0]["C"]
    finally:
        connection.run("ROLLBACK")
    return "succeeded"


def indexes_and_constraints(connection: pg8000.native.Connection) -> set[tuple[str, str]]:
    rows = connection.run(
        """
        SELECT indexrelid::regclass::text, pg_get_indexdef(indexrelid) FROM pg_index
        WHERE indrelid IN ('patients'::regclass, 'payments'::regclass)
        UNION ALL
        SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint
        WHERE conrelid IN ('patients'::regclass, 'payments'::regclass)"""
    )
    return {(name, definition) for name, definition in rows}


@pytest.fixture(scope="module")
def users(database_url: str) -> Iterator[dict[str, tuple[str, str]]]:
    """One login user per group role, created the way the deploy-time migration creates them."""
    suffix = uuid.uuid4().hex[:8]
    logins = [
        LoginUser(f"test_reader_{suffix}", f"pw'\\{uuid.uuid4().hex}", "paysync_read"),
        LoginUser(f"test_syncer_{suffix}", f"pw'\\{uuid.uuid4().hex}", "paysync_sync"),
    ]
    ensure_login_users(logins, parse_database_url(database_url))
    yield {login.group: (login.username, login.password) for login in logins}
    admin = pg8000.native.Connection(**parse_database_url(database_url).as_kwargs())
    for user in logins:
        admin.run(f"DROP ROLE IF EXISTS {user.username}")
    admin.close()


@pytest.fixture
def reader(conn, database_url, users) -> Iterator[pg8000.native.Connection]:
    connection = login(database_url, *users["paysync_read"])
    yield connection
    connection.close()


@pytest.fixture
def syncer(conn, database_url, users) -> Iterator[pg8000.native.Connection]:
    connection = login(database_url, *users["paysync_sync"])
    yield connection
    connection.close()


def test_login_users_belong_to_their_group_only(conn, users):
    for group, (user, _) in users.items():
        groups = conn.run(
            "SELECT b.rolname FROM pg_auth_members m JOIN pg_roles b ON b.oid = m.roleid"
            " JOIN pg_roles u ON u.oid = m.member WHERE u.rolname = :user",
            user=user,
        )
        assert groups == [[group]]
        [[login, superuser, createrole, createdb]] = conn.run(
            "SELECT rolcanlogin, rolsuper, rolcreaterole, rolcreatedb FROM pg_roles WHERE rolname = :user", user=user
        )
        assert (login, superuser, createrole, createdb) == (True, False, False, False)
    for group in ("paysync_read", "paysync_sync", "paysync_owner"):
        [[can_login]] = conn.run("SELECT rolcanlogin FROM pg_roles WHERE rolname = :group", group=group)
        assert can_login is False, group


def test_ensure_login_users_moves_a_user_to_its_new_group(conn, database_url):
    user = f"test_mover_{uuid.uuid4().hex[:8]}"
    params = parse_database_url(database_url)
    try:
        ensure_login_users([LoginUser(user, "first", "paysync_sync")], params)
        ensure_login_users([LoginUser(user, "second", "paysync_read")], params)
        groups = conn.run(
            "SELECT pg_has_role(:user, 'paysync_read', 'member'), pg_has_role(:user, 'paysync_sync', 'member')",
            user=user,
        )
        assert groups == [[True, False]]
    finally:
        conn.run(f"DROP ROLE IF EXISTS {user}")


def test_ensure_login_users_refuses_unknown_groups(conn, database_url):
    with pytest.raises(ValueError, match="unknown group role"):
        ensure_login_users([LoginUser("test_someone", "pw", "paysync_owner")], parse_database_url(database_url))
    assert conn.run("SELECT count(*) FROM pg_roles WHERE rolname = 'test_someone'") == [[0]]


def test_the_replica_tables_belong_to_the_owner_role(conn):
    owners = conn.run("SELECT relname, pg_get_userbyid(relowner) FROM pg_class WHERE relname = ANY(:t)", t=list(TABLES))
    assert dict(owners) == dict.fromkeys(TABLES, "paysync_owner")


def test_the_read_role_reads_every_table(conn, reader):
    reconcile_snapshot("patients", io.BytesIO(sample_bytes("patients")), source="cli")
    assert reader.run("SELECT count(*) FROM patients") == [[4]]
    for table in TABLES:
        reader.run(f"SELECT * FROM {table} LIMIT 1")


def test_the_sync_role_has_what_the_bulk_first_load_needs(conn, syncer):
    # ANALYZE without ownership is skipped with a warning, not an error: check the notices.
    syncer.notices.clear()
    for table in TABLES:
        syncer.run(f"ANALYZE {table}")
    assert not [n for n in syncer.notices if n.get("S") == "WARNING"], list(syncer.notices)
    syncer.run("BEGIN")
    syncer.run("CREATE TEMP TABLE scratch (x int) ON COMMIT DROP")
    syncer.run("DROP INDEX patients_live_total_idx")
    syncer.run("ALTER TABLE payments DROP CONSTRAINT payments_external_id_key")
    syncer.run("CREATE INDEX patients_live_total_idx ON patients (payments_total, id) WHERE deleted IS NULL")
    syncer.run("ALTER TABLE payments ADD CONSTRAINT payments_external_id_key UNIQUE (external_id)")
    syncer.run("ROLLBACK")


def test_the_sync_role_runs_full_syncs_including_a_bulk_first_load(conn, syncer, monkeypatch):
    monkeypatch.setattr(merge, "BULK_LOAD_MIN_ROWS", 1)  # the samples take the bulk path
    schema_before = indexes_and_constraints(conn)
    bulk_loads = []
    original = merge._built_beside

    def spy(connection, table, bulk):
        bulk_loads.append((table, bulk))
        return original(connection, table, bulk)

    monkeypatch.setattr(merge, "_built_beside", spy)

    patients = reconcile_snapshot("patients", io.BytesIO(sample_bytes("patients")), source="s3", connection=syncer)
    payments = reconcile_snapshot("payments", io.BytesIO(sample_bytes("payments")), source="s3", connection=syncer)

    # The payments load rebuilds patients beside too, with their new totals.
    assert bulk_loads == [("patients", True), ("payments", True), ("patients", True)]
    assert (patients.status, patients.inserted, payments.status, payments.inserted) == ("applied", 4, "applied", 6)
    assert indexes_and_constraints(conn) == schema_before  # rebuilt exactly as the migrations made them
    # The swapped-in tables (and their identity sequences) keep the owner and the grants.
    assert conn.run(
        """SELECT c.relname, pg_get_userbyid(c.relowner) FROM pg_class c
           WHERE c.relnamespace = CAST('public' AS regnamespace) AND c.relname IN ('patients', 'payments',
                 'patients_id_seq', 'payments_id_seq') ORDER BY 1"""
    ) == [[name, "paysync_owner"] for name in ("patients", "patients_id_seq", "payments", "payments_id_seq")]
    assert conn.run(
        """SELECT has_table_privilege('paysync_read', 'payments', 'SELECT'),
                  has_table_privilege('paysync_read', 'payments', 'INSERT'),
                  has_table_privilege('paysync_sync', 'patients', 'UPDATE')"""
    ) == [[True, False, True]]
    assert conn.run("SELECT count(*) FROM sync_runs WHERE status = 'applied'") == [[2]]

    # A later sync (updates and soft deletes, the ordinary path) works too.
    again = reconcile_snapshot("patients", io.BytesIO(b"[]"), source="cli", force=True, connection=syncer)
    assert (again.status, again.deleted) == ("applied", 4)
    assert conn.run("SELECT count(*) FROM patients WHERE deleted IS NULL") == [[0]]


def test_the_read_role_cannot_run_a_sync(conn, reader, database_url):
    before = table_state(conn)
    with pytest.raises(DatabaseError) as error:
        reconcile_snapshot("patients", io.BytesIO(sample_bytes("patients")), source="cli", connection=reader)
    assert error.value.args[0]["C"] == INSUFFICIENT_PRIVILEGE
    assert table_state(conn) == before


@pytest.fixture
def secrets(monkeypatch) -> Iterator[Any]:
    """moto Secrets Manager (the login users' secrets)."""
    from moto import mock_aws

    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    with mock_aws():
        yield boto3.client("secretsmanager", region_name="us-east-1")


@pytest.fixture
def cloudformation(monkeypatch) -> list[dict[str, Any]]:
    """The migrate function's answers to CloudFormation (its PUT to the ResponseURL)."""
    answers: list[dict[str, Any]] = []

    @contextlib.contextmanager
    def urlopen(request: urllib.request.Request, timeout: float | None = None) -> Iterator[None]:
        answers.append(json.loads(request.data))
        yield

    monkeypatch.setattr(urllib.request, "urlopen", urlopen)
    return answers


def migrate_event(login_users: list[dict[str, str]]) -> dict[str, Any]:
    event = load_event("migrate_create.json")
    event["ResourceProperties"]["LoginUsers"] = login_users
    return event


def test_the_migrate_function_creates_the_login_users_of_its_secrets(conn, invoke, secrets, cloudformation):
    suffix = uuid.uuid4().hex[:8]
    users = {"paysync_sync": f"test_cfn_sync_{suffix}", "paysync_read": f"test_cfn_read_{suffix}"}
    arns = {
        group: secrets.create_secret(
            Name=f"{group}-{suffix}", SecretString=json.dumps({"username": user, "password": f"pw-{suffix}"})
        )["ARN"]
        for group, user in users.items()
    }
    try:
        result = invoke("migrate", migrate_event([{"SecretArn": arn, "Group": group} for group, arn in arns.items()]))

        assert result["Status"] == "SUCCESS"
        [answer] = cloudformation
        assert answer["Status"] == "SUCCESS"
        for group, user in users.items():
            assert conn.run("SELECT pg_has_role(:u, :g, 'member')", u=user, g=group) == [[True]]
    finally:
        for user in users.values():
            conn.run(f"DROP ROLE IF EXISTS {user}")


def test_the_roles_migration_downgrades_and_upgrades_again(conn, database_url):
    # A second database on the same server: roles are server-wide, so the downgrade of one database
    # must leave the roles the other still uses.
    from alembic import command
    from sqlalchemy import create_engine
    from sqlalchemy.pool import NullPool

    from paysync.migrate import _alembic_config, upgrade

    name = f"paysync_roles_{uuid.uuid4().hex[:8]}"
    conn.run(f"CREATE DATABASE {name}")
    try:
        head, _, query = database_url.partition("?")
        params = parse_database_url(f"{head.rsplit('/', 1)[0]}/{name}" + (f"?{query}" if query else ""))
        upgrade(params)
        engine = create_engine(
            "postgresql+pg8000://", creator=lambda: pg8000.dbapi.connect(**params.as_kwargs()), poolclass=NullPool
        )
        with engine.begin() as connection:
            command.downgrade(_alembic_config(connection), "0002")
        engine.dispose()
        other = pg8000.native.Connection(**params.as_kwargs())
        owners = other.run("SELECT DISTINCT pg_get_userbyid(relowner) FROM pg_class WHERE relname = 'patients'")
        other.close()
        assert owners == [[params.user]]
        # The session's database still uses the roles: they stay.
        assert conn.run("SELECT count(*) FROM pg_roles WHERE rolname LIKE 'paysync\\_%'") == [[3]]
        assert upgrade(params) == ScriptDirectory(str(MIGRATIONS_DIR)).get_current_head()
    finally:
        conn.run(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
