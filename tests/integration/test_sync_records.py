"""Every sync attempt leaves a run: sync requests refused before their body is read too."""

from __future__ import annotations

import json

import pytest

from devserver.apigateway import proxy_event as api_event
from tests.conftest import body_of, sample_bytes, table_state

REFUSED = {
    "unknown parameter": ({"query": {"dryrun": "true"}}, 400, "invalid_request"),
    "bad flag": ({"query": {"force": "maybe"}}, 400, "invalid_request"),
    "bad snapshot_at": ({"query": {"snapshot_at": "yesterday"}}, 400, "invalid_request"),
    "wrong content type": ({"headers": {"Content-Type": "text/csv"}}, 415, "unsupported_media_type"),
}


@pytest.mark.parametrize("case", REFUSED)
def test_refused_sync_request_is_recorded_as_rejected(conn, invoke, case):
    options, status, code = REFUSED[case]
    assert (
        invoke("post_patients", api_event("POST", "/patients", body=sample_bytes("patients").decode()))["statusCode"]
        == 200
    )
    before = table_state(conn)

    response = invoke("post_payments", api_event("POST", "/payments", body=json.dumps([]), **options))

    assert response["statusCode"] == status
    assert body_of(response)["error"]["code"] == code
    assert table_state(conn) == before
    assert conn.run("SELECT entity, source, status, error->>'code' FROM sync_runs ORDER BY id DESC LIMIT 1") == [
        ["payments", "api", "rejected", code]
    ]


def test_too_large_body_is_recorded_as_rejected(conn, invoke, settings_env):
    settings_env(MAX_INLINE_SNAPSHOT_BYTES="10")

    response = invoke("post_patients", api_event("POST", "/patients", body=sample_bytes("patients").decode()))

    assert response["statusCode"] == 413
    assert conn.run("SELECT count(*) FROM patients") == [[0]]
    assert conn.run("SELECT status, error->>'code' FROM sync_runs") == [["rejected", "payload_too_large"]]


def test_refused_request_is_still_answered_when_the_database_is_down(conn, invoke, settings_env):
    settings_env(DATABASE_URL="postgresql://nobody@127.0.0.1:1/none")

    response = invoke("post_patients", api_event("POST", "/patients", body="[]", query={"snapshot_at": "x"}))

    assert response["statusCode"] == 400
    assert body_of(response)["error"]["code"] == "invalid_request"
