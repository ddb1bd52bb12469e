"""HTTP shaping shared by the API handlers: the resolver, the error map, JSON responses,
pagination links and snapshot bodies. Everything HTTP-specific lives here."""

from __future__ import annotations

import base64
import binascii
import io
import json
from typing import Any
from urllib.parse import urlencode

from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response
from aws_lambda_powertools.event_handler.exceptions import NotFoundError
from aws_lambda_powertools.utilities.data_classes import APIGatewayProxyEvent
from pg8000.exceptions import DatabaseError, InterfaceError

from paysync import guard, params, reads
from paysync.config import get_settings
from paysync.errors import (
    DatabaseUnavailable,
    DeletionGuardTriggered,
    ForceNotAllowed,
    InvalidRequest,
    InvalidSnapshot,
    MalformedSnapshot,
    NotFound,
    PayloadTooLarge,
    PaysyncError,
    SnapshotRejected,
    StaleSnapshot,
    UnsupportedMediaType,
)
from paysync.jsonio import to_json
from paysync.observability import add_outcome_metric, add_sync_metrics, logger
from paysync.reconcile import reconcile_snapshot
from paysync.records import Entity
from paysync.timestamps import parse_snapshot_time

JSON = "application/json"

# The one map from domain errors to HTTP statuses (most specific class wins).
STATUS_BY_ERROR: dict[type[PaysyncError], int] = {
    InvalidRequest: 400,
    MalformedSnapshot: 400,
    ForceNotAllowed: 403,
    NotFound: 404,
    DeletionGuardTriggered: 409,
    StaleSnapshot: 409,
    PayloadTooLarge: 413,
    UnsupportedMediaType: 415,
    InvalidSnapshot: 422,
    SnapshotRejected: 422,
    DatabaseUnavailable: 503,
    PaysyncError: 500,
}

SYNC_PARAMS = ("dry_run", "force", "snapshot_at")
FORCED_SYNC_PARAMS = ("dry_run", "snapshot_at")  # a forced route always forces
# Largest body of a small JSON request (POST /uploads); snapshots have their own limit.
MAX_REQUEST_BYTES = 4096
# SQLSTATE classes: 22 = a value PostgreSQL cannot take (out of range, bad encoding);
# 08 = connection exception, 57P = the server is shutting down or starting.
DATA_EXCEPTION = "22"
UNAVAILABLE = ("08", "57P")


def json_response(status: int, body: Any, headers: dict[str, str] | None = None) -> Response:
    """A JSON response whose money values stay exact."""
    return Response(status_code=status, content_type=JSON, body=to_json(body), headers=headers)


def error_response(error: PaysyncError) -> Response:
    """The error body {"error": {code, message, details}} with the status of STATUS_BY_ERROR."""
    status = next(STATUS_BY_ERROR[cls] for cls in type(error).__mro__ if cls in STATUS_BY_ERROR)
    return json_response(status, {"error": error.to_json()})


def create_resolver() -> APIGatewayRestResolver:
    """An API Gateway (REST, proxy) resolver with paysync's error handling."""
    app = APIGatewayRestResolver()

    @app.exception_handler(PaysyncError)
    def handle_domain_error(error: PaysyncError) -> Response:
        logger.info("request refused", extra={"error_code": error.code})
        return error_response(error)

    @app.exception_handler(InterfaceError)
    def handle_lost_connection(error: InterfaceError) -> Response:
        logger.warning("database connection lost", extra={"error_type": type(error).__name__})
        return error_response(DatabaseUnavailable("the database is unreachable; retry later"))

    @app.exception_handler(DatabaseError)
    def handle_database_error(error: DatabaseError) -> Response:
        sqlstate = sqlstate_of(error)
        if sqlstate.startswith(DATA_EXCEPTION) and app.current_event.http_method == "GET":
            # Read parameters are range-checked before any query; this is the net under that
            # check. A sync validates its data before it touches a table, so a data error
            # there is a bug: a 500, and the sync is recorded as failed.
            logger.warning("database refused a value", extra={"sqlstate": sqlstate})
            return error_response(InvalidRequest("a parameter is outside the range the database accepts"))
        if sqlstate.startswith(UNAVAILABLE):
            logger.warning("database unavailable", extra={"sqlstate": sqlstate})
            return error_response(DatabaseUnavailable("the database is unreachable; retry later"))
        return handle_unexpected(error)

    @app.exception_handler(NotFoundError)
    def handle_unknown_route(_: NotFoundError) -> Response:
        event = app.current_event
        return error_response(NotFound(f"no route for {event.http_method} {event.path}"))

    @app.exception_handler(Exception)
    def handle_unexpected(error: Exception) -> Response:
        logger.exception("unexpected error", extra={"error_type": type(error).__name__})
        return json_response(500, {"error": {"code": "internal_error", "message": "internal error", "details": []}})

    return app


def sqlstate_of(error: DatabaseError) -> str:
    """The SQLSTATE code of a pg8000 DatabaseError ("" when it carries none)."""
    fields = error.args[0] if error.args else None
    return str(fields.get("C", "")) if isinstance(fields, dict) else ""


def query_params(event: APIGatewayProxyEvent) -> dict[str, str]:
    """Query parameters as a plain dict; a parameter given twice is a 400."""
    multi = event.multi_value_query_string_parameters or {}
    repeated = sorted(name for name, values in multi.items() if len(values) > 1)
    if repeated:
        raise InvalidRequest(f"query parameter(s) given more than once: {', '.join(repeated)}")
    return dict(event.query_string_parameters or {})


def page_response(event: APIGatewayProxyEvent, page: reads.Page) -> Response:
    """200 with the page's items as a JSON array and a `Link: <…>; rel="next"` header."""
    headers = {}
    if page.next_cursor is not None:
        headers["Link"] = f'<{_next_url(event, page.next_cursor)}>; rel="next"'
    return json_response(200, page.items, headers)


def _next_url(event: APIGatewayProxyEvent, cursor: str) -> str:
    query = dict(event.query_string_parameters or {})
    query["cursor"] = cursor
    headers = event.headers
    host = headers.get("Host")
    # requestContext.path carries the stage prefix (/Prod/patients) that event.path lacks.
    path = event.request_context.path or event.path
    if not host:
        return f"{event.path}?{urlencode(query)}"
    scheme = headers.get("X-Forwarded-Proto", "https")
    return f"{scheme}://{host}{path}?{urlencode(query)}"


def row_routes(entity: Entity) -> tuple[str, str]:
    """The resources of GET /{entity}/{externalId} and GET /{entity}/{externalId}/history."""
    return f"/{entity}/{{externalId}}", f"/{entity}/{{externalId}}/history"


def row_response(event: APIGatewayProxyEvent, entity: Entity) -> Response:
    """GET /{entity}/{externalId} (one row, or its version at a time) and …/history (its versions).

    API Gateway has matched the route and decoded the id (which may hold any character, "/"
    too): the resource says which route, pathParameters holds the id."""
    one, history = row_routes(entity)
    external_id = (event.path_parameters or {}).get("externalId")
    if event.resource == history:
        return page_response(event, reads.row_history(entity, external_id, query_params(event)))
    if event.resource == one:
        return json_response(200, reads.get_row(entity, external_id, query_params(event)))
    raise NotFound(f"no route for GET {event.path}")


def sync_snapshot(event: APIGatewayProxyEvent, entity: Entity, forced_route: bool = False) -> Response:
    """POST /patients, POST /payments (and their POST /forced/... twins, which always force):
    reconcile the body inline and answer with the summary."""
    query = query_params(event)
    params.check_query(query, FORCED_SYNC_PARAMS if forced_route else SYNC_PARAMS)
    dry_run = params.boolean(query, "dry_run")
    force = forced_route or params.boolean(query, "force")
    if not forced_route:
        guard.check_force_parameter(entity, force)
    raw_snapshot_at = query.get("snapshot_at")
    snapshot_at = None if raw_snapshot_at is None else parse_snapshot_time(raw_snapshot_at)
    body = snapshot_body(event)
    try:
        summary = reconcile_snapshot(
            entity, io.BytesIO(body), source="api", snapshot_at=snapshot_at, dry_run=dry_run, force=force
        )
    except SnapshotRejected:
        add_outcome_metric("ApiSyncs", "rejected")
        raise
    add_sync_metrics(summary)
    return json_response(200, summary.to_json())


def require_json(event: APIGatewayProxyEvent) -> None:
    """415 unless the body is declared JSON (application/json or a +json type; absent = JSON)."""
    content_type = (event.headers.get("Content-Type") or JSON).split(";", 1)[0].strip().lower()
    if content_type != JSON and not content_type.endswith("+json"):
        raise UnsupportedMediaType(f"Content-Type must be {JSON}, not {content_type[:100]}")


def _body_bytes(event: APIGatewayProxyEvent) -> bytes | None:
    """The raw body bytes; None when API Gateway's base64 encoding of it is broken."""
    raw = event.body or ""
    if not event.is_base64_encoded:
        return raw.encode("utf-8", "surrogatepass")
    try:
        return base64.b64decode(raw, validate=True)
    except binascii.Error:
        return None


def snapshot_body(event: APIGatewayProxyEvent) -> bytes:
    """The raw snapshot bytes of a POST, after the content-type and size checks."""
    require_json(event)
    data = _body_bytes(event)
    if data is None:
        raise MalformedSnapshot("the body is not valid base64")
    limit = get_settings().max_inline_snapshot_bytes
    if len(data) > limit:
        raise PayloadTooLarge(
            f"the snapshot is {len(data)} bytes; inline snapshots are limited to {limit} bytes."
            " Ask POST /uploads for an upload URL and PUT the file to S3 instead."
        )
    return data


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    names = [name for name, _ in pairs]
    if len(set(names)) != len(names):
        raise ValueError("a key appears twice in one object")
    return dict(pairs)


def json_request(event: APIGatewayProxyEvent, max_bytes: int = MAX_REQUEST_BYTES) -> Any:
    """The parsed JSON body of a small request: 415 if not JSON, 413 over `max_bytes`,
    400 when it is not strict JSON (bad UTF-8, NaN, repeated keys, nesting too deep)."""
    require_json(event)
    data = _body_bytes(event)
    if data is None:
        raise InvalidRequest("the body is not valid base64")
    if len(data) > max_bytes:
        raise PayloadTooLarge(f"the body is {len(data)} bytes; this request takes at most {max_bytes}")
    try:
        return json.loads(data.decode("utf-8"), parse_constant=_no_constants, object_pairs_hook=_unique_keys)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        message = "nested too deeply" if isinstance(exc, RecursionError) else str(exc).split("\n", 1)[0]
        raise InvalidRequest(f"the body is not valid JSON: {message}") from None
