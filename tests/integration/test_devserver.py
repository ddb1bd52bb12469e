"""`make run` end to end: `python -m devserver` as a subprocess on free ports, driven over real
HTTP (urllib) and real S3 calls (boto3 at its moto endpoint), against the test database."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import Message
from pathlib import Path
from typing import Any

import pg8000.native
import pytest

from devserver.s3 import s3_event
from devserver.template import Function, Route, load_template, match_route
from paysync.dal.db import parse_database_url
from paysync.dal.merge import LOCK_KEYS
from tests.conftest import ROOT, sample_bytes

pytestmark = pytest.mark.slow

BUCKET = "paysync-local-snapshots"
START_TIMEOUT = 60


@dataclass
class Response:
    status: int
    headers: Message
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def call(method: str, url: str, body: bytes | None = None, headers: dict[str, str] | None = None) -> Response:
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return Response(response.status, response.headers, response.read())
    except urllib.error.HTTPError as error:
        return Response(error.code, error.headers, error.read())


def post_snapshot(base: str, entity: str) -> Response:
    return call("POST", f"{base}/{entity}", sample_bytes(entity), {"Content-Type": "application/json"})


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class Devserver:
    process: subprocess.Popen
    base: str
    s3_endpoint: str
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]


def start_devserver(log: Path, *args: str, env: dict[str, str]) -> Devserver:
    """Start `python -m devserver` and wait until its API answers."""
    api_port, s3_port = free_port(), free_port()
    command = [sys.executable, "-m", "devserver", "--port", str(api_port), "--s3-port", str(s3_port), *args]
    with log.open("wb") as sink:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=sink, stderr=subprocess.STDOUT)
    server = Devserver(process, f"http://127.0.0.1:{api_port}", f"http://127.0.0.1:{s3_port}", log)
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"the devserver exited with {process.returncode}:\n{server.output()}")
        try:
            call("GET", f"{server.base}/")
            if "local stack is up" in server.output():
                return server
        except OSError:
            pass
        time.sleep(0.1)
    process.kill()
    pytest.fail(f"the devserver did not start in {START_TIMEOUT} s:\n{server.output()}")


def stop_devserver(server: Devserver, sig: signal.Signals = signal.SIGTERM) -> int:
    server.process.send_signal(sig)
    try:
        return server.process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        server.process.kill()
        pytest.fail(f"the devserver did not stop on {sig.name}:\n{server.output()}")


def subprocess_env(**extra: str) -> dict[str, str]:
    env = {name: value for name, value in os.environ.items() if name != "DATABASE_URL"}
    return {**env, "PYTHONUNBUFFERED": "1", **extra}


@pytest.fixture(scope="module")
def devserver(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Devserver]:
    """One devserver for the module, on the test database (so it starts no PostgreSQL of its own)."""
    log = tmp_path_factory.mktemp("devserver") / "devserver.log"
    server = start_devserver(log, "--no-samples", env=subprocess_env(DATABASE_URL=database_url))
    yield server
    assert stop_devserver(server) == 0, server.output()


def s3_client(server: Devserver) -> Any:
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=server.s3_endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


def wait_for_s3_sync(server: Devserver, key: str, timeout: float = 10) -> dict[str, Any]:
    """The sync run of the S3 object `key`, once the poller has delivered it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for run in call("GET", f"{server.base}/syncs").json():
            if run["source"] == "s3" and (run.get("s3") or {}).get("key") == key:
                return run
        time.sleep(0.2)
    pytest.fail(f"no sync run for s3://{BUCKET}/{key} after {timeout} s:\n{server.output()}")


def test_post_snapshots_then_filter_patients_by_total(devserver: Devserver, conn: Any) -> None:
    # Given the samples posted through the API
    patients = post_snapshot(devserver.base, "patients")
    payments = post_snapshot(devserver.base, "payments")
    assert patients.status == 200, patients.body
    assert patients.json()["inserted"] == 4
    assert patients.json()["source"] == "api"
    assert payments.status == 200, payments.body
    assert (payments.json()["inserted"], payments.json()["orphaned"]) == (6, 2)

    # When filtering on the total of payments (the brief spells the upper bound payments_max)
    response = call("GET", f"{devserver.base}/patients?payment_min=10&payments_max=20")

    # Then only patient 5 (4.46 + 5.66 + 7.10) matches, its total a JSON number
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("application/json")
    assert [patient["externalId"] for patient in response.json()] == ["5"]
    assert b'"paymentsTotal":17.22' in response.body


def test_link_header_pages_through_patients(devserver: Devserver, conn: Any) -> None:
    post_snapshot(devserver.base, "patients")

    first = call("GET", f"{devserver.base}/patients?limit=2")
    link = first.headers["Link"]
    assert first.status == 200
    assert len(first.json()) == 2
    assert link.endswith('>; rel="next"')
    next_url = link[1 : link.index(">")]
    # Built by the handler from Host, X-Forwarded-Proto and requestContext.path: the devserver itself.
    assert next_url.startswith(f"{devserver.base}/patients?")

    rest = call("GET", next_url)
    assert rest.status == 200
    assert "Link" not in rest.headers
    ids = [patient["externalId"] for patient in first.json() + rest.json()]
    assert sorted(ids) == ["15", "4", "5", "8"]


def test_unknown_path_is_404_and_wrong_method_405(devserver: Devserver) -> None:
    missing = call("GET", f"{devserver.base}/nothing/here")
    assert missing.status == 404
    assert missing.headers["Content-Type"] == "application/json"
    assert missing.json()["error"]["code"] == "not_found"
    assert missing.json()["error"]["details"] == []

    wrong = call("DELETE", f"{devserver.base}/patients")
    assert wrong.status == 405
    assert wrong.headers["Allow"] == "GET, POST"
    assert wrong.json()["error"]["code"] == "method_not_allowed"


def test_path_parameters_reach_the_handler(devserver: Devserver, conn: Any) -> None:
    run = post_snapshot(devserver.base, "patients").json()

    found = call("GET", f"{devserver.base}/syncs/{run['syncId']}")
    unknown = call("GET", f"{devserver.base}/syncs/999999")

    assert found.status == 200
    assert found.json()["id"] == run["syncId"]
    assert unknown.status == 404


def test_object_put_into_the_bucket_reaches_the_reconcile_function(devserver: Devserver, conn: Any) -> None:
    # Given a snapshot put straight into the local bucket (a key with a space: S3 events encode it as +)
    key = "patients/from boto3.json"
    s3_client(devserver).put_object(Bucket=BUCKET, Key=key, Body=sample_bytes("patients"))

    # Then the poller delivers it as an S3 event and the reconcile function applies it
    run = wait_for_s3_sync(devserver, key)
    assert run["status"] == "applied", run
    assert run["inserted"] == 4
    assert run["s3"]["versionId"]
    assert len(call("GET", f"{devserver.base}/patients").json()) == 4


def test_presigned_upload_url_takes_a_plain_put(devserver: Devserver, conn: Any) -> None:
    post_snapshot(devserver.base, "patients")
    upload = call("POST", f"{devserver.base}/uploads", b'{"entity": "payments"}', {"Content-Type": "application/json"})
    assert upload.status == 201, upload.body
    ticket = upload.json()
    assert ticket["uploadUrl"].startswith(f"{devserver.s3_endpoint}/{BUCKET}/payments/")

    # A plain PUT, as any HTTP client would send it (urllib adds a form Content-Type)
    put = call("PUT", ticket["uploadUrl"], sample_bytes("payments"))
    assert put.status == 200, put.body

    run = wait_for_s3_sync(devserver, ticket["key"])
    assert run["status"] == "applied", run
    assert (run["inserted"], run["orphaned"]) == (6, 2)
    assert len(call("GET", f"{devserver.base}/payments").json()) == 6


def _sync_waiting_for_lock(conn: Any) -> bool:
    """Whether a backend waits for a sync's advisory lock (a sync is in progress, paused)."""
    rows = conn.run(
        "SELECT count(*) FROM pg_stat_activity"
        " WHERE wait_event_type = 'Lock' AND wait_event = 'advisory' AND pid <> pg_backend_pid()"
    )
    return rows[0][0] > 0


def test_reads_answer_while_an_s3_sync_runs(devserver: Devserver, conn: Any, database_url: str) -> None:
    # Given an S3-triggered sync held mid-way: this test holds the lock every sync takes first
    holder = pg8000.native.Connection(**parse_database_url(database_url).as_kwargs())
    holder.run("BEGIN")
    holder.run("SELECT pg_advisory_xact_lock(:key)", key=min(LOCK_KEYS.values()))
    key = "patients/slow.json"
    try:
        s3_client(devserver).put_object(Bucket=BUCKET, Key=key, Body=sample_bytes("patients"))
        deadline = time.monotonic() + 30
        while not _sync_waiting_for_lock(conn):
            assert time.monotonic() < deadline, f"the S3 sync never started:\n{devserver.output()}"
            time.sleep(0.1)

        # When the API is read meanwhile
        patients = call("GET", f"{devserver.base}/patients")
        syncs = call("GET", f"{devserver.base}/syncs")
        payments = call("GET", f"{devserver.base}/payments")

        # Then every read answered while the sync was still running
        assert _sync_waiting_for_lock(conn)
        assert (patients.status, syncs.status, payments.status) == (200, 200, 200)
        assert patients.json() == []
        assert syncs.json() == []
    finally:
        holder.run("ROLLBACK")
        holder.close()
    # And the sync completes once it may
    run = wait_for_s3_sync(devserver, key, timeout=30)
    assert (run["status"], run["inserted"]) == ("applied", 4), devserver.output()


def _process_tree(pid: int) -> list[int]:
    pids, index = [pid], 0
    while index < len(pids):
        task_dir = Path(f"/proc/{pids[index]}/task")
        for task in task_dir.iterdir() if task_dir.exists() else []:
            with contextlib.suppress(OSError):
                pids += [int(child) for child in (task / "children").read_text().split()]
        index += 1
    return pids


def _usage(pid: int) -> tuple[int, int]:
    """Resident memory (kB) and open file descriptors of a process and its children (the containers)."""
    rss = fds = 0
    for member in _process_tree(pid):
        with contextlib.suppress(OSError):
            status = Path(f"/proc/{member}/status").read_text()
            rss += int(next(line for line in status.splitlines() if line.startswith("VmRSS:")).split()[1])
            fds += len(os.listdir(f"/proc/{member}/fd"))
    return rss, fds


def test_idle_stack_stays_flat_with_objects_in_the_bucket(database_url: str, conn: Any, tmp_path: Path) -> None:
    # Given a stack that checks its bucket every 50 ms, holding objects moto keeps in temporary
    # files (above 5 MB) and a snapshot it has applied
    server = start_devserver(
        tmp_path / "devserver.log",
        "--no-samples",
        "--s3-poll-seconds",
        "0.05",
        env=subprocess_env(DATABASE_URL=database_url),
    )
    try:
        client = s3_client(server)
        big = b"[" + b" " * (6 * 1024 * 1024) + b"]"
        for number in range(3):
            client.put_object(Bucket=BUCKET, Key=f"archive/{number}.json", Body=big)
        client.put_object(Bucket=BUCKET, Key="patients/flat.json", Body=sample_bytes("patients"))
        assert wait_for_s3_sync(server, "patients/flat.json", timeout=30)["status"] == "applied"
        assert call("GET", f"{server.base}/patients").status == 200
        time.sleep(5)
        rss_before, fds_before = _usage(server.process.pid)

        # When it idles for a minute (about 1,200 polls), answering a read now and then
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert call("GET", f"{server.base}/patients").status == 200
            time.sleep(1)
        rss_after, fds_after = _usage(server.process.pid)
    finally:
        assert stop_devserver(server) == 0, server.output()

    # Then memory and file descriptors stay flat (a leak of one object per poll is 1,200 fds)
    assert fds_after - fds_before <= 5, (fds_before, fds_after)
    assert rss_after - rss_before < 30 * 1024, (rss_before, rss_after)


def test_database_down_is_one_line_and_exit_3() -> None:
    closed = free_port()
    url = f"postgresql://postgres:secret@127.0.0.1:{closed}/paysync"
    result = subprocess.run(
        [sys.executable, "-m", "devserver", "--port", str(free_port()), "--s3-port", str(free_port())],
        cwd=ROOT,
        env=subprocess_env(DATABASE_URL=url),
        capture_output=True,
        text=True,
        timeout=60,
    )
    lines = (result.stdout + result.stderr).strip().splitlines()
    assert result.returncode == 3
    assert len(lines) == 1, lines
    assert f"127.0.0.1:{closed}" in lines[0]
    assert "unreachable" in lines[0]
    assert "secret" not in lines[0]


def test_make_run_with_the_database_down_prints_one_line() -> None:
    make = shutil.which("make")
    if make is None:
        pytest.skip("make is not installed")
    url = f"postgresql://postgres@127.0.0.1:{free_port()}/paysync"
    result = subprocess.run(
        [make, "--no-print-directory", "run", f"PORT={free_port()}"],
        cwd=ROOT,
        env=subprocess_env(DATABASE_URL=url),
        capture_output=True,
        text=True,
        timeout=120,
    )
    # make adds its own "make: *** [run] Error 3" line
    lines = [line for line in (result.stdout + result.stderr).strip().splitlines() if not line.startswith("make")]
    assert result.returncode != 0
    assert len(lines) == 1, lines
    assert lines[0].startswith("devserver: the database at")


def test_embedded_postgres_with_samples_stops_cleanly(tmp_path: Path) -> None:
    # Given no DATABASE_URL: the devserver runs its own PostgreSQL and loads the samples
    data_dir = tmp_path / "pgdata"
    server = start_devserver(tmp_path / "devserver.log", "--data-dir", str(data_dir), env=subprocess_env())
    try:
        postmaster = int((data_dir / "postmaster.pid").read_text().split()[0])
        patients = call("GET", f"{server.base}/patients?payment_min=10")
        assert [patient["externalId"] for patient in patients.json()] == ["5"]
    finally:
        # When Ctrl-C is pressed
        code = stop_devserver(server, signal.SIGINT)

    # Then it exits 0 and leaves no PostgreSQL behind
    assert code == 0, server.output()
    assert not (data_dir / "postmaster.pid").exists()
    assert _gone(postmaster), server.output()


def _gone(pid: int, timeout: float = 5) -> bool:
    # The postmaster is not our child: once stopped it may linger a moment as a zombie.
    import psutil

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.1)
    return False


def test_port_in_use_fails_fast(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        started = time.monotonic()
        result = subprocess.run(
            [sys.executable, "-m", "devserver", "--port", str(port), "--data-dir", str(tmp_path / "unused")],
            cwd=ROOT,
            env=subprocess_env(),
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert result.returncode == 2
    assert f"127.0.0.1:{port}" in result.stderr
    assert len((result.stdout + result.stderr).strip().splitlines()) == 1, result.stderr
    assert time.monotonic() - started < 10
    assert not (tmp_path / "unused").exists()


# The pieces, without processes.


def test_routes_come_from_the_template() -> None:
    template = load_template(ROOT / "template.yaml")
    declared = {(route.method, route.path) for route in template.routes}
    assert {("GET", "/patients"), ("POST", "/patients"), ("POST", "/uploads"), ("GET", "/syncs/{id}")} <= declared
    assert any(n.wants("ObjectCreated:Put", "payments/2026/x.json") for n in template.notifications)
    assert not any(n.wants("ObjectCreated:Put", "notes/readme.txt") for n in template.notifications)


def test_most_specific_route_wins() -> None:
    function = Function("F", Path("app.py"), "lambda_handler")
    routes = [
        Route("GET", "/syncs/{id}", function),
        Route("GET", "/syncs/latest", function),
        Route("ANY", "/files/{proxy+}", function),
    ]

    assert match_route(routes, "GET", "/syncs/latest")[0] == routes[1]
    assert match_route(routes, "GET", "/syncs/a%20b")[:2] == (routes[0], {"id": "a b"})
    assert match_route(routes, "PUT", "/files/a/b.json")[:2] == (routes[2], {"proxy": "a/b.json"})
    assert match_route(routes, "POST", "/syncs/7") == (None, {"id": "7"}, ["GET"])
    assert match_route(routes, "GET", "/syncs") == (None, {}, [])


def test_s3_event_encodes_the_key_like_s3() -> None:
    event = s3_event(
        bucket="b", region="us-east-1", key="patients/a b+c.json", size=3, etag='"e"', version_id="v1", event_name="x"
    )
    record = event["Records"][0]
    assert record["eventSource"] == "aws:s3"
    assert record["s3"]["object"]["key"] == "patients/a+b%2Bc.json"
    assert record["s3"]["object"]["eTag"] == "e"
    assert record["s3"]["bucket"]["arn"] == "arn:aws:s3:::b"


class _FlakyRuntime:
    """Fails the first invocation, then answers; records the events."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def invoke(self, name: str, event: dict[str, Any]) -> Any:
        self.events.append(event)
        if len(self.events) == 1:
            raise RuntimeError("transient")
        return {"objects": [{"status": "applied", "syncId": 1}]}


def _wait_for(condition: Any, timeout: float = 5) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline
        time.sleep(0.01)


def test_notifier_retries_a_failed_delivery_and_delivers_each_version_once() -> None:
    from datetime import datetime

    from devserver.s3 import NotificationPoller, ObjectVersion
    from devserver.template import S3Notification

    function = Function("Reconcile", Path("app.py"), "lambda_handler", async_retries=2)
    versions = [
        ObjectVersion("patients/a b.json", "v1", '"e1"', 3, datetime(2026, 1, 1)),
        ObjectVersion("notes/readme.txt", "v1", '"e2"', 5, datetime(2026, 1, 2)),
    ]
    runtime = _FlakyRuntime()
    notifier = NotificationPoller(
        "bucket",
        "us-east-1",
        [S3Notification(function, rules=(("prefix", "patients/"),))],
        runtime,  # type: ignore[arg-type]
        list_versions=lambda bucket: versions,
    )
    try:
        notifier.poll()  # the first attempt fails
        _wait_for(lambda: len(runtime.events) == 1 and not notifier._running)
        notifier.poll()  # retried
        _wait_for(lambda: len(runtime.events) == 2 and not notifier._running)
        notifier.poll()  # delivered: never again
        time.sleep(0.2)
    finally:
        notifier.stop()

    assert len(runtime.events) == 2
    record = runtime.events[1]["Records"][0]
    assert record["s3"]["object"]["key"] == "patients/a+b.json"
    assert record["s3"]["object"]["versionId"] == "v1"
    assert record["eventName"] == "ObjectCreated:Put"


def test_local_routes_are_served_before_the_template_routes() -> None:
    from devserver.apigateway import ApiGateway

    function = Function("F", Path("app.py"), "lambda_handler")
    gateway = ApiGateway("127.0.0.1", 0, [Route("GET", "/patients", function)])
    try:
        gateway.add_local_route("GET", "/docs", lambda *_: (200, [("Content-Type", "text/html")], b"<html>"))

        assert gateway.handle("GET", "/docs?x=1", [], b"", ("127.0.0.1", 1)) == (
            200,
            [("Content-Type", "text/html")],
            b"<html>",
        )
        assert gateway.handle("POST", "/docs", [], b"", ("127.0.0.1", 1))[0] == 404
    finally:
        gateway.stop()
