"""openapi.yaml: a valid document, the same routes as template.yaml, and the handlers' real
responses (status, body) match what it documents."""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate

from devserver.apigateway import proxy_event as api_event
from devserver.template import load_template
from tests.conftest import ROOT, sample_bytes

OPENAPI = yaml.safe_load((ROOT / "openapi.yaml").read_text())
HANDLER_BY_ROUTE = {
    ("get", "/patients"): "get_patients",
    ("post", "/patients"): "post_patients",
    ("get", "/payments"): "get_payments",
    ("post", "/payments"): "post_payments",
    ("post", "/uploads"): "create_upload",
    ("post", "/forced/patients"): "post_forced",
    ("post", "/forced/payments"): "post_forced",
    ("post", "/forced/uploads"): "create_forced_upload",
    ("get", "/syncs"): "get_syncs",
    ("get", "/syncs/{id}"): "get_syncs",
    ("get", "/patients/{externalId}"): "get_patients",
    ("get", "/patients/{externalId}/history"): "get_patients",
    ("get", "/payments/{externalId}"): "get_payments",
    ("get", "/payments/{externalId}/history"): "get_payments",
    ("get", "/syncs/{id}/changes"): "get_syncs",
    ("get", "/stats"): "get_stats",
    ("get", "/stats/histogram"): "get_stats",
    ("get", "/stats/history"): "get_stats",
}


def template_routes() -> set[tuple[str, str]]:
    return {(route.method.lower(), route.path) for route in load_template(ROOT / "template.yaml").routes}


def openapi_routes() -> set[tuple[str, str]]:
    return {(method, path) for path, item in OPENAPI["paths"].items() for method in item if method != "parameters"}


def check(response: dict[str, Any], method: str, path: str) -> Any:
    """Assert the response's status is documented for the route and its body fits the schema."""
    responses = OPENAPI["paths"][path][method]["responses"]
    status = str(response["statusCode"])
    assert status in responses, f"{method.upper()} {path} returned undocumented {status}"
    documented = responses[status]
    if "$ref" in documented:
        documented = OPENAPI["components"]["responses"][documented["$ref"].rsplit("/", 1)[1]]
    schema = documented["content"]["application/json"]["schema"]
    body = json.loads(response["body"])
    Draft202012Validator({**OPENAPI, **schema}).validate(body)
    return body


def test_document_is_valid_openapi():
    validate(OPENAPI)


def test_every_template_route_is_documented_and_vice_versa():
    assert template_routes() == openapi_routes() == set(HANDLER_BY_ROUTE)


@pytest.fixture
def loaded(conn, invoke):
    for entity in ("patients", "payments"):
        check(
            invoke(f"post_{entity}", api_event("POST", f"/{entity}", body=sample_bytes(entity).decode())),
            "post",
            f"/{entity}",
        )
    return conn


def test_read_responses_match_their_schemas(loaded, invoke):
    patients = check(invoke("get_patients", api_event("GET", "/patients", query={"limit": "2"})), "get", "/patients")
    payments = check(
        invoke("get_payments", api_event("GET", "/payments", query={"external_id": "5"})), "get", "/payments"
    )
    syncs = check(invoke("get_syncs", api_event("GET", "/syncs")), "get", "/syncs")
    one = check(
        invoke("get_syncs", api_event("GET", "/syncs/1", resource="/syncs/{id}", path_parameters={"id": "1"})),
        "get",
        "/syncs/{id}",
    )

    assert (len(patients), len(payments), len(syncs), one["id"]) == (2, 3, 2, 1)


def test_stats_responses_match_their_schemas(conn, invoke):
    empty = check(invoke("get_stats", api_event("GET", "/stats")), "get", "/stats")
    check(invoke("get_stats", api_event("GET", "/stats/histogram")), "get", "/stats/histogram")
    for entity in ("patients", "payments"):
        invoke(f"post_{entity}", api_event("POST", f"/{entity}", body=sample_bytes(entity).decode()))
    stats = check(invoke("get_stats", api_event("GET", "/stats")), "get", "/stats")
    histogram = check(invoke("get_stats", api_event("GET", "/stats/histogram")), "get", "/stats/histogram")
    history = check(invoke("get_stats", api_event("GET", "/stats/history")), "get", "/stats/history")
    bad = invoke("get_stats", api_event("GET", "/stats/histogram", query={"min": "2", "max": "1"}))
    assert bad["statusCode"] == 400
    check(bad, "get", "/stats/histogram")

    assert (empty["syncId"], stats["patients"]["live"], len(histogram["buckets"]), len(history)) == (None, 4, 10, 2)


def test_error_responses_match_their_schemas(loaded, invoke, settings_env):
    cases = [
        ("get_patients", api_event("GET", "/patients", query={"bogus": "1"}), "get", "/patients", 400),
        ("get_payments", api_event("GET", "/payments", query={"limit": "x"}), "get", "/payments", 400),
        ("post_patients", api_event("POST", "/patients", body="{"), "post", "/patients", 400),
        (
            "post_payments",
            api_event("POST", "/payments", body="[]", headers={"Content-Type": "text/plain"}),
            "post",
            "/payments",
            415,
        ),
        ("post_payments", api_event("POST", "/payments", body='[{"amount": 1}]'), "post", "/payments", 422),
        (
            "get_syncs",
            api_event("GET", "/syncs/42", resource="/syncs/{id}", path_parameters={"id": "42"}),
            "get",
            "/syncs/{id}",
            404,
        ),
    ]
    for handler, event, method, path, status in cases:
        response = invoke(handler, event)
        assert response["statusCode"] == status
        check(response, method, path)

    settings_env(MAX_INLINE_SNAPSHOT_BYTES="10")
    check(invoke("post_patients", api_event("POST", "/patients", body="[" + " " * 20 + "]")), "post", "/patients")


def test_guard_and_upload_responses_match_their_schemas(conn, invoke, s3):
    many = json.dumps(
        [{"firstName": "A", "lastName": "B", "dateOfBirth": "2000-01-01", "externalId": i} for i in range(100)]
    )
    invoke("post_patients", api_event("POST", "/patients", body=many))

    guard = invoke("post_patients", api_event("POST", "/patients", body="[]"))
    upload = invoke("create_upload", api_event("POST", "/uploads", body='{"entity": "patients", "compressed": true}'))

    assert guard["statusCode"] == 409
    check(guard, "post", "/patients")
    assert check(upload, "post", "/uploads")["key"].endswith(".json.gz")
