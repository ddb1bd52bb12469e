"""HTTP shaping shared by the API handlers: the resolver, the error map, JSON responses,
pagination links and snapshot bodies. Everything HTTP-specific lives here."""

from __future__ import annotations

import base64
import binascii
import io
from typing import Any
from urllib.parse import urlencode

from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response
from aws_lambda_powertools.event_handler.exceptions import NotFoundError
from aws_lambda_powertools.utilities.data_classes import APIGatewayProxyEvent
from pg8000.exceptions import InterfaceError

from paysync import params
from paysync.config import get_settings
from paysync.errors import (
    DatabaseUnavailable,
    DeletionGuardTriggered,
    InvalidRequest,
    InvalidSnapshot,
    MalformedSnapshot,
    NotFound,
    PayloadTooLarge,
    PaysyncError,
    SnapshotRejected,
    UnsupportedMediaType,
)
from paysync.jsonio import to_json
from paysync.observability import add_outcome_metric, add_sync_metrics, logger
from paysync.reads import Page
from paysync.reconcile import reconcile_snapshot
from paysync.records import Entity

JSON = "application/json"

# The one map from domain errors to HTTP statuses (most specific class wins).
STATUS_BY_ERROR: dict[type[PaysyncError], int] = {
    InvalidRequest: 400,
    MalformedSnapshot: 400,
    NotFound: 404,
    DeletionGuardTriggered: 409,
    PayloadTooLarge: 413,
    UnsupportedMediaType: 415,
    InvalidSnapshot: 422,
    SnapshotRejected: 422,
    DatabaseUnavailable: 503,
    PaysyncError: 500,
}

SYNC_PARAMS = ("dry_run", "force")


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

    @app.exception_handler(NotFoundError)
    def handle_unknown_route(_: NotFoundError) -> Response:
        event = app.current_event
        return error_response(NotFound(f"no route for {event.http_method} {event.path}"))

    @app.exception_handler(Exception)
    def handle_unexpected(error: Exception) -> Response:
        logger.exception("unexpected error", extra={"error_type": type(error).__name__})
        return json_response(500, {"error": {"code": "internal_error", "message": "internal error", "details": []}})

    return app


def query_params(event: APIGatewayProxyEvent) -> dict[str, str]:
    """Query parameters as a plain dict; a parameter given twice is a 400."""
    multi = event.multi_value_query_string_parameters or {}
    repeated = sorted(name for name, values in multi.items() if len(values) > 1)
    if repeated:
        raise InvalidRequest(f"query parameter(s) given more than once: {', '.join(repeated)}")
    return dict(event.query_string_parameters or {})


def page_response(event: APIGatewayProxyEvent, page: Page) -> Response:
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


def sync_snapshot(event: APIGatewayProxyEvent, entity: Entity) -> Response:
    """POST /patients, POST /payments: reconcile the body inline and answer with the summary."""
    query = query_params(event)
    params.reject_unknown(query, SYNC_PARAMS)
    dry_run, force = params.boolean(query, "dry_run"), params.boolean(query, "force")
    body = snapshot_body(event)
    try:
        summary = reconcile_snapshot(entity, io.BytesIO(body), source="api", dry_run=dry_run, force=force)
    except SnapshotRejected:
        add_outcome_metric("ApiSyncs", "rejected")
        raise
    add_sync_metrics(summary)
    return json_response(200, summary.to_json())


def snapshot_body(event: APIGatewayProxyEvent) -> bytes:
    """The raw snapshot bytes of a POST, after the content-type and size checks."""
    content_type = (event.headers.get("Content-Type") or JSON).split(";", 1)[0].strip().lower()
    if content_type != JSON and not content_type.endswith("+json"):
        raise UnsupportedMediaType(f"Content-Type must be {JSON}, not {content_type}")
    raw = event.body or ""
    if event.is_base64_encoded:
        try:
            data = base64.b64decode(raw, validate=True)
        except binascii.Error:
            raise MalformedSnapshot("the body is not valid base64") from None
    else:
        data = raw.encode("utf-8", "surrogatepass")  # a lone surrogate reaches the record checks
    limit = get_settings().max_inline_snapshot_bytes
    if len(data) > limit:
        raise PayloadTooLarge(
            f"the snapshot is {len(data)} bytes; inline snapshots are limited to {limit} bytes."
            " Ask POST /uploads for an upload URL and PUT the file to S3 instead."
        )
    return data
