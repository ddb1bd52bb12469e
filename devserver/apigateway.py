"""API Gateway (REST API, Lambda proxy integration) in front of the handlers: a stdlib HTTP
server that turns each request into a real v1 proxy event and the handler's result into the
HTTP response, for the routes template.yaml declares."""

from __future__ import annotations

import base64
import binascii
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from devserver import docs
from devserver.lambdas import ACCOUNT, FunctionError, Runtime
from devserver.template import HTTP_METHODS, Route, match_route

log = logging.getLogger("devserver")

STAGE = "local"
MAX_BODY_BYTES = 10 * 1024 * 1024  # API Gateway's request payload limit
# Framing headers are the HTTP server's business, not the function's.
FRAMING_HEADERS = frozenset({"connection", "content-length", "keep-alive", "transfer-encoding"})


class BadGateway(Exception):
    """The function failed or answered something API Gateway cannot turn into a response."""


class RequestTooLarge(Exception):
    pass


def build_event(
    *,
    method: str,
    target: str,
    headers: list[tuple[str, str]],
    body: bytes,
    route: Route,
    path_parameters: dict[str, str],
    source_ip: str,
    server_port: int,
) -> dict[str, Any]:
    """The REST API (payload v1) proxy event API Gateway sends for one request."""
    split = urlsplit(target)
    path = unquote(split.path) or "/"
    pairs = parse_qsl(split.query, keep_blank_values=True)
    multi_query: dict[str, list[str]] = {}
    for name, value in pairs:
        multi_query.setdefault(name, []).append(value)
    # API Gateway sets the X-Forwarded-* headers itself, replacing the client's.
    forwarded = {"X-Forwarded-For": source_ip, "X-Forwarded-Port": str(server_port), "X-Forwarded-Proto": "http"}
    headers = [(name, value) for name, value in headers if name.lower() not in {n.lower() for n in forwarded}]
    headers += list(forwarded.items())
    multi_headers: dict[str, list[str]] = {}
    for name, value in headers:
        multi_headers.setdefault(name, []).append(value)
    user_agent = next((value for name, value in headers if name.lower() == "user-agent"), None)
    host = next((value for name, value in headers if name.lower() == "host"), "localhost")
    request_id = str(uuid.uuid4())
    now = time.time()
    text, encoded = _event_body(body)
    return {
        "resource": route.path,
        "path": path,
        "httpMethod": method,
        "headers": {name: values[-1] for name, values in multi_headers.items()},
        "multiValueHeaders": multi_headers,
        "queryStringParameters": {name: values[-1] for name, values in multi_query.items()} or None,
        "multiValueQueryStringParameters": multi_query or None,
        "pathParameters": path_parameters or None,
        "stageVariables": None,
        "requestContext": {
            "accountId": ACCOUNT,
            "apiId": "local",
            "domainName": host,
            "extendedRequestId": request_id,
            "httpMethod": method,
            "identity": {
                "accessKey": None,
                "accountId": None,
                "caller": None,
                "sourceIp": source_ip,
                "user": None,
                "userAgent": user_agent,
                "userArn": None,
            },
            # Without a stage prefix: locally the API is served at the root, not at /Prod.
            "path": path,
            "protocol": "HTTP/1.1",
            "requestId": request_id,
            "requestTime": time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(now)),
            "requestTimeEpoch": int(now * 1000),
            "resourceId": "local",
            "resourcePath": route.path,
            "stage": STAGE,
        },
        "body": text,
        "isBase64Encoded": encoded,
    }


def proxy_event(
    method: str,
    path: str,
    *,
    query: dict[str, str] | None = None,
    body: str | None = None,
    headers: dict[str, str] | None = None,
    resource: str | None = None,
    path_parameters: dict[str, str] | None = None,
    base64: bool = False,
    stage: str = "Prod",
) -> dict[str, Any]:
    """A REST (payload v1) proxy event as a deployed stage delivers it, for tests and benchmarks."""
    all_headers = {
        "Host": "abc123.execute-api.us-east-1.amazonaws.com",
        "X-Forwarded-Proto": "https",
        "User-Agent": "paysync-tests",
        **({"Content-Type": "application/json"} if body is not None else {}),
        **(headers or {}),
    }
    request_id = str(uuid.uuid4())
    return {
        "resource": resource or path,
        "path": path,
        "httpMethod": method,
        "headers": all_headers,
        "multiValueHeaders": {name: [value] for name, value in all_headers.items()},
        "queryStringParameters": query or None,
        "multiValueQueryStringParameters": {name: [value] for name, value in query.items()} if query else None,
        "pathParameters": path_parameters,
        "stageVariables": None,
        "requestContext": {
            "resourceId": "abc123",
            "resourcePath": resource or path,
            "httpMethod": method,
            "path": f"/{stage}{path}",
            "stage": stage,
            "accountId": ACCOUNT,
            "apiId": "abc123",
            "requestId": request_id,
            "extendedRequestId": request_id,
            "protocol": "HTTP/1.1",
            "requestTimeEpoch": int(time.time() * 1000),
            "identity": {"sourceIp": "203.0.113.7", "userAgent": "paysync-tests"},
        },
        "body": body,
        "isBase64Encoded": base64,
    }


def _event_body(body: bytes) -> tuple[str | None, bool]:
    if not body:
        return None, False
    try:
        return body.decode("utf-8"), False
    except UnicodeDecodeError:  # binary (e.g. gzip): API Gateway passes it base64-encoded
        return base64.b64encode(body).decode("ascii"), True


def response_from_result(result: Any) -> tuple[int, list[tuple[str, str]], bytes]:
    """Status, headers and body bytes from a proxy integration result (BadGateway when malformed)."""
    if not isinstance(result, dict) or not isinstance(result.get("statusCode"), int):
        raise BadGateway("malformed Lambda proxy response: no integer statusCode")
    body = result.get("body")
    if body is not None and not isinstance(body, str):
        raise BadGateway("malformed Lambda proxy response: body is not a string")
    headers: list[tuple[str, str]] = []
    for name, values in (result.get("multiValueHeaders") or {}).items():
        headers += [(name, str(value)) for value in values]
    # Like API Gateway: multiValueHeaders win over headers of the same name.
    seen = {name.lower() for name, _ in headers}
    headers += [(name, str(value)) for name, value in (result.get("headers") or {}).items() if name.lower() not in seen]
    headers = [(name, value) for name, value in headers if name.lower() not in FRAMING_HEADERS]
    if not any(name.lower() == "content-type" for name, _ in headers):
        headers.append(("Content-Type", "application/json"))
    if result.get("isBase64Encoded"):
        try:
            payload = base64.b64decode(body or "", validate=True)
        except binascii.Error:
            raise BadGateway("malformed Lambda proxy response: body is not valid base64") from None
    else:
        payload = (body or "").encode("utf-8")
    return result["statusCode"], headers, payload


def error_body(code: str, message: str) -> bytes:
    body = {"error": {"code": code, "message": message, "details": []}}
    return json.dumps(body, separators=(",", ":")).encode()


# A route the devserver serves itself, not a function: (method, target, headers, body) -> response.
LocalHandler = Callable[[str, str, list[tuple[str, str]], bytes], tuple[int, list[tuple[str, str]], bytes]]


class ApiGateway:
    """The HTTP server. Binds in the constructor (OSError when the port is taken); serves after start().

    Each request runs on a thread of its own (ThreadingHTTPServer); the template's routes go
    to the functions, and `add_local_route` adds pages the devserver serves itself.
    """

    def __init__(self, host: str, port: int, routes: list[Route]) -> None:
        self.routes = routes
        self.local_routes: dict[tuple[str, str], LocalHandler] = {}
        self.runtime: Runtime | None = None
        self.server = ThreadingHTTPServer((host, port), _RequestHandler)
        self.server.gateway = self  # type: ignore[attr-defined]
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return self.server.server_address[1]

    def start(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self._thread = threading.Thread(target=self.server.serve_forever, name="devserver-http", daemon=True)
        self._thread.start()

    def add_local_route(self, method: str, path: str, handler: LocalHandler) -> None:
        """Serve `method path` (exact path) with `handler`; it wins over the template's routes."""
        self.local_routes[(method.upper(), path)] = handler

    def stop(self) -> None:
        if self._thread is not None:
            self.server.shutdown()
            self._thread.join()
        self.server.server_close()

    def handle(
        self, method: str, target: str, headers: list[tuple[str, str]], body: bytes, client: tuple[str, int]
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        """One request -> (status, headers, body)."""
        path = urlsplit(target).path or "/"
        local = self.local_routes.get((method, path))
        if local is not None:
            return local(method, target, headers, body)
        documentation = docs.serve(method, path)  # /docs, /openapi.yaml, /openapi.json
        if documentation is not None:
            return documentation
        route, path_parameters, allowed = match_route(self.routes, method, path)
        if not allowed:
            return 404, [], error_body("not_found", f"no route for {method} {unquote(path)}")
        if route is None:
            message = f"{method} is not allowed on {unquote(path)}; allowed: {', '.join(allowed)}"
            return 405, [("Allow", ", ".join(allowed))], error_body("method_not_allowed", message)
        event = build_event(
            method=method,
            target=target,
            headers=headers,
            body=body,
            route=route,
            path_parameters=path_parameters,
            source_ip=client[0],
            server_port=self.port,
        )
        assert self.runtime is not None
        try:
            return response_from_result(self.runtime.invoke(route.function.name, event))
        except BadGateway as exc:
            log.error("%s: %s", route.function.name, exc)
        except FunctionError:
            pass  # the runtime logged the function's traceback
        except Exception:
            # An unhandled exception in the function: API Gateway answers 502.
            log.exception("%s raised", route.function.name)
        return 502, [], error_body("bad_gateway", f"{route.function.name} failed; see the devserver log")


class _RequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "paysync-devserver"
    timeout = 60  # idle keep-alive connections are closed after this many seconds

    def _dispatch(self) -> None:
        started = time.perf_counter()
        gateway: ApiGateway = self.server.gateway  # type: ignore[attr-defined]
        method = self.command
        try:
            body = self._read_body()
        except RequestTooLarge:
            self.close_connection = True
            message = f"the request body exceeds {MAX_BODY_BYTES} bytes; ask POST /uploads for an upload URL"
            status, headers, payload = 413, [], error_body("payload_too_large", message)
        except ValueError:
            self.close_connection = True
            status, headers, payload = 400, [], error_body("bad_request", "invalid Content-Length or chunked body")
        else:
            headers = list(self.headers.items())
            status, headers, payload = gateway.handle(method, self.path, headers, body, self.client_address)
        try:
            self._respond(status, headers, payload, head=method == "HEAD")
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client hung up; nothing left to tell it
        elapsed_ms = (time.perf_counter() - started) * 1000
        log.info("%s %s %d %.0f ms", method, urlsplit(self.path).path, status, elapsed_ms)

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return self._read_chunked()
        length = int(self.headers.get("Content-Length") or 0)
        if length < 0:
            raise ValueError("negative Content-Length")
        if length > MAX_BODY_BYTES:
            raise RequestTooLarge
        return self.rfile.read(length)

    def _read_chunked(self) -> bytes:
        chunks, total = [], 0
        while True:
            size = int(self.rfile.readline().split(b";", 1)[0].strip() or b"0", 16)
            if size == 0:
                while self.rfile.readline() not in (b"\r\n", b"\n", b""):  # trailers
                    pass
                return b"".join(chunks)
            total += size
            if total > MAX_BODY_BYTES:
                raise RequestTooLarge
            chunks.append(self.rfile.read(size))
            self.rfile.readline()  # the CRLF after each chunk

    def _respond(self, status: int, headers: list[tuple[str, str]], payload: bytes, head: bool) -> None:
        self.send_response(status)
        if not any(name.lower() == "content-type" for name, _ in headers):
            headers = [*headers, ("Content-Type", "application/json")]
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if not head:
            self.wfile.write(payload)

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass  # _dispatch logs one line per request, with its duration

    def log_message(self, format: str, *args: Any) -> None:
        log.warning("http: " + format, *args)


for _method in HTTP_METHODS:
    setattr(_RequestHandler, f"do_{_method}", _RequestHandler._dispatch)
