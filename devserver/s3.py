"""S3 locally: a moto server holding the snapshot bucket, and a poller that plays S3 event
notifications: every new object version reaches the notified function as an ObjectCreated event."""

from __future__ import annotations

import logging
import threading
import time
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote_plus

from devserver.lambdas import Runtime
from devserver.template import S3Notification

log = logging.getLogger("devserver")

POLL_SECONDS = 1.0


class LocalS3:
    """moto's S3 server on 127.0.0.1 (port 0: any free port).

    What moto's ThreadedMotoServer does, plus two things it cannot: binding happens here, so a
    port in use raises OSError (ThreadedMotoServer.start() would wait forever), and PUT bodies
    survive a form content type (see _keep_put_bodies).
    """

    def __init__(self, port: int) -> None:
        from moto.server import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
        from werkzeug.serving import make_server

        app = _keep_put_bodies(DomainDispatcherApplication(create_backend_app))
        self._server = make_server("127.0.0.1", port, app, threaded=True, request_handler=MotoRequestHandler)
        self._thread: threading.Thread | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self._server.server_port}"

    def start(self) -> None:
        self._thread = threading.Thread(target=self._server.serve_forever, name="devserver-s3", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join()
            self._thread = None
        self._server.server_close()


def _keep_put_bodies(app: Any) -> Any:
    # moto parses a body sent as application/x-www-form-urlencoded (or multipart/form-data) as
    # an HTML form and stores an empty object; S3 stores the bytes. `curl --data-binary` and
    # urllib send that content type unless told otherwise, e.g. to a presigned PUT URL.
    form_types = ("application/x-www-form-urlencoded", "multipart/form-data")

    def middleware(environ: dict[str, Any], start_response: Any) -> Any:
        content_type = environ.get("CONTENT_TYPE", "").split(";", 1)[0].strip().lower()
        if environ.get("REQUEST_METHOD") == "PUT" and content_type in form_types:
            environ["CONTENT_TYPE"] = "application/octet-stream"
        return app(environ, start_response)

    return middleware


def create_versioned_bucket(client: Any, bucket: str) -> None:
    """The snapshot bucket, versioned like the deployed one (the reconcile keys runs by version)."""
    client.create_bucket(Bucket=bucket)
    client.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})


def s3_event(
    *,
    bucket: str,
    region: str,
    key: str,
    size: int,
    etag: str,
    version_id: str | None,
    event_name: str,
    sequencer: str | None = None,
) -> dict[str, Any]:
    """An S3 event notification (one record) as Lambda receives it.

    `sequencer` orders the events of one key (a later write has a greater one,
    compared as hex after left-padding); by default a fresh one from the clock.
    """
    now = datetime.now(UTC)
    obj: dict[str, Any] = {
        # S3 URL-encodes keys in events (a space becomes +); '/' stays as it is.
        "key": quote_plus(key, safe="/"),
        "size": size,
        "eTag": etag.strip('"'),
        "sequencer": sequencer or new_sequencer(),
    }
    if version_id and version_id != "null":
        obj["versionId"] = version_id
    return {
        "Records": [
            {
                "eventVersion": "2.1",
                "eventSource": "aws:s3",
                "awsRegion": region,
                "eventTime": now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z",
                "eventName": event_name,
                "userIdentity": {"principalId": "AWS:LOCAL"},
                "requestParameters": {"sourceIPAddress": "127.0.0.1"},
                "responseElements": {"x-amz-request-id": "LOCAL", "x-amz-id-2": "LOCAL"},
                "s3": {
                    "s3SchemaVersion": "1.0",
                    "configurationId": "devserver",
                    "bucket": {
                        "name": bucket,
                        "ownerIdentity": {"principalId": "LOCAL"},
                        "arn": f"arn:aws:s3:::{bucket}",
                    },
                    "object": obj,
                },
            }
        ]
    }


_last_sequencer = 0
_sequencer_lock = threading.Lock()


def new_sequencer() -> str:
    """A sequencer like S3's (18 upper-case hex digits), greater than every one issued before."""
    global _last_sequencer
    with _sequencer_lock:
        _last_sequencer = max(time.time_ns(), _last_sequencer + 1)
        return f"{_last_sequencer:018X}"


class NotificationPoller:
    """Lists the bucket's object versions every POLL_SECONDS and delivers each new one.

    S3 invokes Lambda asynchronously: a delivery whose function raises is retried on the next
    polls as often as the function's EventInvokeConfig allows, then dropped (in AWS: its
    on-failure destination).
    """

    def __init__(
        self, client: Any, bucket: str, region: str, notifications: list[S3Notification], runtime: Runtime
    ) -> None:
        self._client = client
        self._bucket = bucket
        self._region = region
        self._notifications = notifications
        self._runtime = runtime
        self._done: set[tuple[str, str, str]] = set()  # (key, version, function)
        self._attempts: dict[tuple[str, str, str], int] = {}
        # S3 gives each write one sequencer, shared by every delivery (and retry) of its events.
        self._sequencers: dict[tuple[str, str], str] = {}
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="devserver-s3-events", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def request_stop(self) -> None:
        self._stopping.set()

    def stop(self) -> None:
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        while not self._stopping.wait(POLL_SECONDS):
            try:
                self.poll()
            except Exception as exc:  # moto going away at shutdown, a transient hiccup: try again
                if not self._stopping.is_set():
                    log.warning("s3 poll failed: %s", type(exc).__name__)

    def poll(self) -> None:
        """Deliver every object version not delivered yet, oldest first."""
        versions = []
        for page in self._client.get_paginator("list_object_versions").paginate(Bucket=self._bucket):
            versions += page.get("Versions", [])
        # Listed newest first per key; a stable sort on LastModified of the reversed list keeps
        # the versions of one key in write order even within one second.
        versions.reverse()
        versions.sort(key=lambda version: version["LastModified"])
        for version in versions:
            self._sequencers.setdefault((version["Key"], version.get("VersionId") or "null"), new_sequencer())
        for version in versions:
            if self._stopping.is_set():
                return
            self._deliver(version)

    def _deliver(self, version: dict[str, Any]) -> None:
        key, version_id, etag = version["Key"], version.get("VersionId") or "null", version["ETag"]
        # A multipart upload (boto3's upload_file of a big file) has an ETag like "…-3".
        event_name = "ObjectCreated:CompleteMultipartUpload" if "-" in etag else "ObjectCreated:Put"
        functions = {n.function.name: n.function for n in self._notifications if n.wants(event_name, key)}
        for name, function in sorted(functions.items()):
            delivery = (key, version_id, name)
            if delivery in self._done:
                continue
            event = s3_event(
                bucket=self._bucket,
                region=self._region,
                key=key,
                size=version["Size"],
                etag=etag,
                version_id=version_id,
                event_name=event_name,
                sequencer=self._sequencers[(key, version_id)],
            )
            started = time.perf_counter()
            try:
                result = self._runtime.invoke(name, event)
            except Exception:
                attempts = self._attempts[delivery] = self._attempts.get(delivery, 0) + 1
                allowed = 1 + function.async_retries
                log.exception("s3 %s %s -> %s raised (attempt %d of %d)", event_name, key, name, attempts, allowed)
                if attempts >= allowed:
                    log.error("s3 %s -> %s: giving up (AWS: to the on-failure destination)", key, name)
                    self._done.add(delivery)
                continue
            self._done.add(delivery)
            elapsed_ms = (time.perf_counter() - started) * 1000
            log.info("s3 %s %s -> %s %s %.0f ms", event_name, key, name, _outcome(result), elapsed_ms)
        if not functions and (key, version_id, "") not in self._done:
            self._done.add((key, version_id, ""))
            log.info("s3 %s %s: no notification matches this key; not delivered", event_name, key)


def _outcome(result: Any) -> str:
    # The reconcile handler answers {"objects": [{"status": …, "syncId": …, "code": …}]}.
    objects = result.get("objects") if isinstance(result, dict) else None
    if not objects:
        return "done"
    described = []
    for outcome in objects:
        text = str(outcome.get("status"))
        if outcome.get("syncId"):
            text += f" (sync {outcome['syncId']})"
        if outcome.get("code"):
            text += f" [{outcome['code']}]"
        described.append(text)
    return ", ".join(described)
