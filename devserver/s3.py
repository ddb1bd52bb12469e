"""S3 locally: a moto server holding the snapshot bucket, and a notifier that plays S3 event
notifications: every new object version reaches the notified function as an ObjectCreated event,
delivered on worker threads of its own (S3 invokes Lambda asynchronously)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote_plus

from devserver.lambdas import Runtime
from devserver.template import S3Notification

log = logging.getLogger("devserver")

POLL_SECONDS = 1.0  # how often the bucket is looked at when no write woke the notifier
DELIVERY_WORKERS = 4  # S3 events processed at the same time


class LocalS3:
    """moto's S3 server on 127.0.0.1 (port 0: any free port).

    What moto's ThreadedMotoServer does, plus two things it cannot: binding happens here, so a
    port in use raises OSError (ThreadedMotoServer.start() would wait forever), and PUT bodies
    survive a form content type (see _keep_put_bodies).
    """

    def __init__(self, port: int) -> None:
        from moto.server import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
        from werkzeug.serving import make_server

        self.on_write: Callable[[], None] | None = None  # called after each PUT/POST (a possible new object)
        app = self._after_writes(_keep_put_bodies(DomainDispatcherApplication(create_backend_app)))
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

    def _after_writes(self, app: Any) -> Any:
        def middleware(environ: dict[str, Any], start_response: Any) -> Any:
            response = app(environ, start_response)
            if environ.get("REQUEST_METHOD") in ("PUT", "POST") and self.on_write is not None:
                self.on_write()
            return response

        return middleware


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


@dataclass(frozen=True)
class ObjectVersion:
    key: str
    version_id: str
    etag: str  # quoted, as S3 lists it
    size: int
    last_modified: datetime


def bucket_versions(bucket: str) -> list[ObjectVersion]:
    """Every object version in `bucket` of this process's moto server, read in place.

    Not through ListObjectVersions: moto answers that call by deep-copying every version with
    its content (a temporary file each above 5 MB), and a poller calling it every second grew by
    megabytes and file descriptors per second.
    """
    from moto.s3.models import FakeKey, s3_backends

    location = s3_backends.bucket_accounts.get(bucket)
    if location is None:
        return []
    partition, account_id = location
    keys = s3_backends[account_id][partition].buckets[bucket].keys
    versions = []
    for name in list(dict.keys(keys)):  # a copy: moto's request threads may add keys meanwhile
        for version in list(keys.getlist(name) or []):
            if isinstance(version, FakeKey):  # not a delete marker
                versions.append(
                    ObjectVersion(name, version.version_id, version.etag, version.size, version.last_modified)
                )
    return versions


class NotificationPoller:
    """Delivers each new object version of the bucket to the functions notified for it.

    The bucket is looked at after every write to the S3 server (`notify`) and every
    `poll_seconds`. Deliveries run on DELIVERY_WORKERS threads, so a long sync holds up nothing
    else. S3 invokes Lambda asynchronously: a delivery whose function raises is retried on the
    next polls as often as the function's EventInvokeConfig allows, then dropped (in AWS: its
    on-failure destination).
    """

    def __init__(
        self,
        bucket: str,
        region: str,
        notifications: list[S3Notification],
        runtime: Runtime,
        list_versions: Callable[[str], list[ObjectVersion]] = bucket_versions,
        poll_seconds: float = POLL_SECONDS,
    ) -> None:
        self._poll_seconds = poll_seconds
        self._bucket = bucket
        self._region = region
        self._notifications = notifications
        self._runtime = runtime
        self._list_versions = list_versions
        self._lock = threading.Lock()
        self._done: set[tuple[str, str, str]] = set()  # (key, version, function)
        self._running: set[tuple[str, str, str]] = set()
        self._attempts: dict[tuple[str, str, str], int] = {}
        # S3 gives each write one sequencer, shared by every delivery (and retry) of its events.
        self._sequencers: dict[tuple[str, str], str] = {}
        self._stopping = threading.Event()
        self._wake = threading.Event()
        self._workers = ThreadPoolExecutor(DELIVERY_WORKERS, thread_name_prefix="devserver-s3-event")
        self._thread = threading.Thread(target=self._run, name="devserver-s3-events", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def notify(self) -> None:
        """Something was written to the S3 server: look at the bucket now."""
        self._wake.set()

    def request_stop(self) -> None:
        self._stopping.set()
        self._wake.set()

    def stop(self) -> None:
        self.request_stop()
        if self._thread.is_alive():
            self._thread.join()
        self._workers.shutdown(wait=True, cancel_futures=True)

    def _run(self) -> None:
        while not self._stopping.is_set():
            self._wake.wait(self._poll_seconds)
            self._wake.clear()
            if self._stopping.is_set():
                return
            try:
                self.poll()
            except Exception as exc:  # a transient hiccup: try again on the next poll
                log.warning("s3 poll failed: %s", type(exc).__name__)

    def poll(self) -> None:
        """Start the delivery of every object version not delivered (or being delivered) yet, oldest first."""
        # Sorted by write time (stable: the versions of one key are listed in write order).
        versions = sorted(self._list_versions(self._bucket), key=lambda version: version.last_modified)
        for version in versions:  # one sequencer per write, growing in write order
            self._sequencers.setdefault((version.key, version.version_id or "null"), new_sequencer())
        for version in versions:
            if self._stopping.is_set():
                return
            self._schedule(version)

    def _schedule(self, version: ObjectVersion) -> None:
        key, version_id, etag = version.key, version.version_id or "null", version.etag
        # A multipart upload (boto3's upload_file of a big file) has an ETag like "…-3".
        event_name = "ObjectCreated:CompleteMultipartUpload" if "-" in etag else "ObjectCreated:Put"
        functions = {n.function.name: n.function for n in self._notifications if n.wants(event_name, key)}
        for name, function in sorted(functions.items()):
            delivery = (key, version_id, name)
            with self._lock:
                if delivery in self._done or delivery in self._running:
                    continue
                self._running.add(delivery)
            event = s3_event(
                bucket=self._bucket,
                region=self._region,
                key=key,
                size=version.size,
                etag=etag,
                version_id=version_id,
                event_name=event_name,
                sequencer=self._sequencers[(key, version_id)],
            )
            self._workers.submit(self._deliver, delivery, function.async_retries, event, event_name)
        with self._lock:
            unmatched = not functions and (key, version_id, "") not in self._done
            if unmatched:
                self._done.add((key, version_id, ""))
        if unmatched:
            log.info("s3 %s %s: no notification matches this key; not delivered", event_name, key)

    def _deliver(self, delivery: tuple[str, str, str], retries: int, event: dict[str, Any], event_name: str) -> None:
        key, _, name = delivery
        started = time.perf_counter()
        try:
            result = self._runtime.invoke(name, event)
        except Exception:
            with self._lock:
                attempts = self._attempts[delivery] = self._attempts.get(delivery, 0) + 1
                if attempts > retries or self._stopping.is_set():
                    self._done.add(delivery)
            allowed = 1 + retries
            log.error("s3 %s %s -> %s failed (attempt %d of %d)", event_name, key, name, attempts, allowed)
            if attempts >= allowed:
                log.error("s3 %s -> %s: giving up (AWS: to the on-failure destination)", key, name)
            return
        else:
            with self._lock:
                self._done.add(delivery)
            elapsed_ms = (time.perf_counter() - started) * 1000
            log.info("s3 %s %s -> %s %s %.0f ms", event_name, key, name, _outcome(result), elapsed_ms)
        finally:
            with self._lock:
                self._running.discard(delivery)


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
