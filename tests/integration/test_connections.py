"""Connection failures answer clearly and heal: a rotated secret is fetched again, Secrets
Manager failures and refused logins are DatabaseUnavailable (503, retried on the S3 path),
and no error or log names the password, the DATABASE_URL, the host or the secret."""

from __future__ import annotations

import json
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pg8000.native
import pytest
from aws_lambda_powertools.utilities import parameters

from paysync.dal import db
from paysync.dal.db import connect, parse_database_url
from paysync.errors import DatabaseUnavailable
from tests.conftest import TEST_BUCKET, body_of, load_event, sample_bytes, table_state
from tests.integration.test_cli import password_url  # noqa: F401  (a role that must log in with a password)
from tests.integration.test_db_roles import secrets  # noqa: F401  (moto Secrets Manager)
from tests.integration.test_s3_sync import put, s3_event

ROLE = "paysync_cli_pw"  # the password_url fixture's role; its password is "right-pass"
MISSING_ARN = "arn:aws:secretsmanager:us-east-1:123456789012:secret:paysync/missing-AbCdEf"


@dataclass
class Seen:
    """What connect() did: each secret fetch (its force_fetch), each login's password, each log."""

    fetches: list[bool] = field(default_factory=list)
    logins: list[str | None] = field(default_factory=list)
    logs: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    def warning(self, message: str, extra: dict[str, Any] | None = None) -> None:
        self.logs.append((message, extra or {}))

    info = warning

    def log_text(self) -> str:
        return json.dumps(self.logs)


@pytest.fixture
def seen(monkeypatch, database_url) -> Iterator[Seen]:
    """Spies on the secret fetches, the logins and db's log; AWS-style settings without DATABASE_URL.

    The credentials come from the secret and the login is checked by the real server; only
    where the connection goes is changed: the test server's socket instead of the secret's
    RDS Proxy host over TLS.
    """
    record = Seen()
    server = parse_database_url(database_url)
    real_get_secret = parameters.get_secret

    def get_secret(name: str, **options: Any) -> Any:
        record.fetches.append(options.get("force_fetch", False))
        return real_get_secret(name, **options)

    def routed(**kwargs: Any) -> pg8000.native.Connection:
        record.logins.append(kwargs["password"])
        where = {"host": server.host, "port": server.port, "unix_sock": server.unix_sock, "ssl_context": None}
        return pg8000.native.Connection(**{**kwargs, **where})

    monkeypatch.setattr(parameters, "get_secret", get_secret)
    monkeypatch.setattr(db, "Connection", routed)
    monkeypatch.setattr(db, "logger", record)
    monkeypatch.setattr(db, "_shared", None)  # the read handlers' connection: opened afresh
    monkeypatch.delenv("DATABASE_URL")
    monkeypatch.setenv("DB_HOST", "proxy.paysync.internal")
    monkeypatch.setenv("DB_NAME", server.database)
    parameters.clear_caches()
    db.get_settings.cache_clear()
    yield record
    if db._shared is not None:
        db.close_quietly(db._shared)
    parameters.clear_caches()
    db.get_settings.cache_clear()


def use_secret(monkeypatch, arn: str) -> None:
    monkeypatch.setenv("DB_SECRET_ARN", arn)
    db.get_settings.cache_clear()


def store(secrets, password: str) -> str:  # noqa: F811
    value = json.dumps({"username": ROLE, "password": password, "host": "proxy.paysync.internal"})
    return secrets.create_secret(Name="paysync/db", SecretString=value)["ARN"]


def whole_error(error: BaseException) -> str:
    """The error as a client or a Lambda traceback could show it: message, body, chain."""
    return str(error) + json.dumps(getattr(error, "to_json", dict)()) + "".join(traceback.format_exception(error))


def test_a_rotated_password_is_picked_up_after_one_refetch(password_url, conn, secrets, seen, monkeypatch):  # noqa: F811
    arn = store(secrets, "right-pass")
    use_secret(monkeypatch, arn)
    db.close_quietly(connect())  # the secret is now cached with the old password
    conn.run(f"ALTER ROLE {ROLE} PASSWORD 'rotated-pass'")  # the rotation: database, then secret
    secrets.put_secret_value(SecretId=arn, SecretString=json.dumps({"username": ROLE, "password": "rotated-pass"}))

    rotated = connect()

    assert rotated.run("SELECT current_user") == [[ROLE]]
    rotated.close()
    assert seen.fetches == [False, False, True]  # cached, cached (old password refused), refetched
    assert seen.logins == ["right-pass", "right-pass", "rotated-pass"]
    # The refetch refreshed the cache: the next connection logs in first time.
    db.close_quietly(connect())
    assert seen.fetches[3:] == [False]
    assert seen.logins[3:] == ["rotated-pass"]


def test_a_wrong_secret_fails_once_without_retrying_the_same_password(password_url, conn, secrets, seen, monkeypatch):  # noqa: F811
    use_secret(monkeypatch, store(secrets, "wrong-pass-4711"))

    with pytest.raises(DatabaseUnavailable) as raised:
        connect()

    assert seen.fetches == [False, True]
    assert seen.logins == ["wrong-pass-4711"]  # the refetched secret is the same: not tried again
    assert "wrong-pass-4711" not in whole_error(raised.value) + seen.log_text()
    assert (
        "database refused the connection",
        {"host": "proxy.paysync.internal", "port": 5432, "sqlstate": "28P01"},
    ) in seen.logs


def test_a_secret_still_wrong_after_the_refetch_fails_after_two_logins(password_url, conn, secrets, seen, monkeypatch):  # noqa: F811
    arn = store(secrets, "wrong-one")
    use_secret(monkeypatch, arn)
    db.connection_params()  # cached
    secrets.put_secret_value(SecretId=arn, SecretString=json.dumps({"username": ROLE, "password": "wrong-two"}))

    with pytest.raises(DatabaseUnavailable) as raised:
        connect()

    assert seen.fetches == [False, False, True]
    assert seen.logins == ["wrong-one", "wrong-two"]
    assert raised.value.code == "database_unavailable"


def test_a_read_after_a_rotation_answers_200(password_url, conn, secrets, seen, monkeypatch, invoke):  # noqa: F811
    arn = store(secrets, "right-pass")
    use_secret(monkeypatch, arn)
    db.connection_params()  # cached with the old password
    conn.run(f"ALTER ROLE {ROLE} PASSWORD 'rotated-pass'")
    conn.run(f"GRANT paysync_read TO {ROLE}")
    secrets.put_secret_value(SecretId=arn, SecretString=json.dumps({"username": ROLE, "password": "rotated-pass"}))

    response = invoke("get_patients", load_event("get_patients.json"))

    assert response["statusCode"] == 200
    assert seen.logins == ["right-pass", "rotated-pass"]


def test_a_missing_secret_is_a_503_naming_neither_arn_nor_host(conn, secrets, seen, monkeypatch, invoke):  # noqa: F811
    use_secret(monkeypatch, MISSING_ARN)

    response = invoke("get_patients", load_event("get_patients.json"))

    assert response["statusCode"] == 503
    error = body_of(response)["error"]
    assert error["code"] == "database_unavailable"
    assert "credentials" in error["message"]
    for secret_detail in (MISSING_ARN, "paysync/missing", "proxy.paysync.internal", "secretsmanager"):
        assert secret_detail not in response["body"]
        assert secret_detail not in seen.log_text()
    assert seen.logs == [
        (
            "database credentials unavailable",
            {"error_type": "ResourceNotFoundException", "error_code": "ResourceNotFoundException"},
        )
    ]
    assert seen.logins == []


def test_a_missing_secret_on_the_s3_path_raises_so_lambda_retries(conn, s3, seen, monkeypatch, invoke):
    use_secret(monkeypatch, MISSING_ARN)
    runs_before = conn.run("SELECT count(*) FROM sync_runs")
    before = table_state(conn)
    version = put(s3, "patients/rotation.json", sample_bytes("patients"))

    with pytest.raises(DatabaseUnavailable) as raised:
        invoke("reconcile", s3_event("patients/rotation.json", version))

    assert MISSING_ARN not in whole_error(raised.value)
    assert table_state(conn) == before
    assert conn.run("SELECT count(*) FROM sync_runs") == runs_before
    assert s3.head_object(Bucket=TEST_BUCKET, Key="patients/rotation.json")["VersionId"] == version


def test_an_unreachable_secrets_manager_is_database_unavailable(conn, seen, monkeypatch):
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL_SECRETS_MANAGER": "http://127.0.0.1:9",  # nothing listens there
        "AWS_MAX_ATTEMPTS": "1",
    }.items():
        monkeypatch.setenv(name, value)
    use_secret(monkeypatch, MISSING_ARN)

    with pytest.raises(DatabaseUnavailable) as raised:
        connect()

    assert "127.0.0.1" not in whole_error(raised.value) + seen.log_text()
    assert MISSING_ARN not in whole_error(raised.value)
    assert seen.logs == [
        ("database credentials unavailable", {"error_type": "EndpointConnectionError", "error_code": None})
    ]
    assert seen.fetches == [False]


@pytest.mark.parametrize(
    ("secret_string", "error_type"),
    [
        ("not json", "TransformParameterError"),
        ('{"username": "paysync_cli_pw"}', "KeyError"),  # no password
        ('{"password": "pw"}', "KeyError"),  # no username
        ('["paysync_cli_pw", "pw"]', "TypeError"),
        ('"paysync_cli_pw"', "TypeError"),
    ],
)
def test_a_malformed_secret_is_database_unavailable(conn, secrets, seen, monkeypatch, secret_string, error_type):  # noqa: F811
    arn = secrets.create_secret(Name="paysync/db", SecretString=secret_string)["ARN"]
    use_secret(monkeypatch, arn)

    with pytest.raises(DatabaseUnavailable) as raised:
        connect()

    assert "credentials" in raised.value.message
    assert seen.logs == [("database credentials unavailable", {"error_type": error_type, "error_code": None})]
    assert seen.logins == []


def test_a_refused_login_names_neither_password_nor_url(password_url, conn, monkeypatch, invoke):  # noqa: F811
    wrong_url = password_url.format(password="Secret-Wrong-98765")
    monkeypatch.setenv("DATABASE_URL", wrong_url)
    monkeypatch.setattr(db, "_shared", None)
    db.get_settings.cache_clear()
    before = table_state(conn)

    with pytest.raises(DatabaseUnavailable) as raised:
        connect()
    response = invoke("get_patients", load_event("get_patients.json"))
    db.get_settings.cache_clear()

    shown = whole_error(raised.value) + response["body"]
    assert "Secret-Wrong-98765" not in shown
    assert wrong_url not in shown
    assert "postgresql://" not in shown
    assert raised.value.message == "the database refused the connection; retry later"
    assert response["statusCode"] == 503
    assert body_of(response)["error"]["code"] == "database_unavailable"
    assert table_state(conn) == before
    # The URL path never consults Secrets Manager and does not retry.
    assert db._shared is None
