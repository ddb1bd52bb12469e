"""Smoke test of the deployable artifact: every function of .aws-sam/build, run by python3.12 from the
build output only, invoked with each of its events/*.json against a real PostgreSQL and moto S3.

    python -m smoke                                   # everything (make smoke)
    python -m smoke --function GetPatientsFunction --event events/get_patients.json   (make invoke)

Each function runs in a fresh `python3.12 -I -S -B` process whose sys.path holds the function's
directory, its layers' python/ directories (as Lambda mounts them at /opt/python), the standard
library and the Lambda runtime's boto3 (smoke/lambda-runtime.lock), and nothing from the source tree
or this process: the host checks every loaded module's file. This process holds the dev tools
(pgserver, moto, pg8000). Migrations run through the built migrate function itself.
"""

from __future__ import annotations

import argparse
import copy
import gzip
import hashlib
import json
import logging
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote_plus, urlsplit

import yaml

ROOT = Path(__file__).resolve().parent.parent
BUILD = ROOT / ".aws-sam" / "build"
EVENTS = ROOT / "events"
SAMPLES = ROOT / "samples"
HOST = (Path(__file__).parent / "host.py").read_text()
RUNTIME = Path(sys.prefix) / "lambda-runtime"  # boto3/botocore as the Lambda runtime provides them
BUCKET = "paysync-local-snapshots"  # the bucket the S3 events name (`make run`'s)
IMPORT_RUNS = 7
# The layer the API and reconcile functions load: small, because it is in every cold start's package.
SHARED_LAYER_LIMIT_MB = 20
# The brief's samples once both are loaded: patient externalId -> total of its live payments.
SAMPLE_TOTALS = {"4": Decimal("0.00"), "15": Decimal("0.00"), "8": Decimal("9.29"), "5": Decimal("17.22")}


class SmokeFailure(AssertionError):
    """A function did not answer an event the way the source-level tests expect."""


def check(condition: object, message: str) -> None:
    if not condition:
        raise SmokeFailure(message)


# ---------------------------------------------------------------- the built template


class _CfnLoader(yaml.SafeLoader):
    """YAML with CloudFormation's short tags (!Ref X -> {"Ref": "X"}, ...)."""


def _cfn_tag(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> Any:
    name = "Ref" if suffix == "Ref" else f"Fn::{suffix}"
    if isinstance(node, yaml.ScalarNode):
        value: Any = loader.construct_scalar(node)
        if suffix == "GetAtt":
            value = value.split(".", 1)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    return {name: value}


_CfnLoader.add_multi_constructor("!", _cfn_tag)


@dataclass
class Function:
    """One AWS::Serverless::Function of the built template."""

    name: str
    directory: Path
    layers: list[Path]
    timeout: int
    routes: list[tuple[str, str]] = field(default_factory=list)  # (method, path)
    s3_rules: list[tuple[str, str]] = field(default_factory=list)  # (prefix, suffix)
    custom_resource: bool = False
    scheduled: bool = False  # has an EventBridge Schedule event


def load_functions() -> dict[str, Function]:
    """The functions of .aws-sam/build/template.yaml with their build directories and layers."""
    template = yaml.load((BUILD / "template.yaml").read_text(), Loader=_CfnLoader)
    resources = template["Resources"]
    defaults = template.get("Globals", {}).get("Function", {})
    service_tokens = {
        json.dumps(res["Properties"].get("ServiceToken"))
        for res in resources.values()
        if str(res.get("Type", "")).startswith("Custom::")
    }
    functions = {}
    for name, res in resources.items():
        if res.get("Type") != "AWS::Serverless::Function":
            continue
        props = res["Properties"]
        layers = []
        for ref in [*defaults.get("Layers", []), *props.get("Layers", [])]:
            layer = resources[ref["Ref"]]["Properties"]["ContentUri"]
            layers.append((BUILD / layer).resolve())
        function = Function(
            name=name,
            directory=(BUILD / props["CodeUri"]).resolve(),
            layers=layers,
            timeout=int(props.get("Timeout", defaults.get("Timeout", 3))),
            custom_resource=json.dumps({"Fn::GetAtt": [name, "Arn"]}) in service_tokens,
        )
        for event in (props.get("Events") or {}).values():
            where = event.get("Properties", {})
            if event["Type"] == "Api":
                function.routes.append((where["Method"].upper(), where["Path"]))
            elif event["Type"] == "S3":
                rules = {r["Name"]: r["Value"] for r in where.get("Filter", {}).get("S3Key", {}).get("Rules", [])}
                function.s3_rules.append((rules.get("prefix", ""), rules.get("suffix", "")))
            elif event["Type"] == "Schedule":
                function.scheduled = True
        functions[name] = function
    return functions


def function_for(event: dict[str, Any], functions: dict[str, Function]) -> Function:
    """The function the template sends this event to (API route, S3 key filter, schedule or custom resource)."""
    if "httpMethod" in event:
        route = (event["httpMethod"], event["resource"])
        matches = [f for f in functions.values() if route in f.routes]
    elif "Records" in event:
        key = unquote_plus(event["Records"][0]["s3"]["object"]["key"])
        matches = [f for f in functions.values() if any(key.startswith(p) and key.endswith(s) for p, s in f.s3_rules)]
    elif event.get("detail-type") == "Scheduled Event":
        matches = [f for f in functions.values() if f.scheduled]
    else:
        matches = [f for f in functions.values() if f.custom_resource and "RequestType" in event]
    check(len(matches) == 1, f"no single function takes this event: {[f.name for f in matches]}")
    return matches[0]


def schema_version() -> str:
    """The revision the template's migration custom resource asks for."""
    template = yaml.load((BUILD / "template.yaml").read_text(), Loader=_CfnLoader)
    [version] = [
        res["Properties"]["SchemaVersion"]
        for res in template["Resources"].values()
        if str(res.get("Type", "")).startswith("Custom::") and "SchemaVersion" in res["Properties"]
    ]
    return str(version)


# ---------------------------------------------------------------- function processes


def _spec(function: Function, mode: str, result: str = "") -> str:
    return json.dumps(
        {
            "function_dir": str(function.directory),
            "layers": [str(layer) for layer in function.layers],
            "runtime": str(RUNTIME),
            "mode": mode,
            "timeout": function.timeout,
            "name": function.name,
            "result": result,
        }
    )


def python312() -> str:
    """The interpreter of this venv's base: the Lambda runtime's version, without this venv's packages."""
    executable = Path(sys._base_executable)
    check(sys.version_info[:2] == (3, 12), f"the smoke runner needs python3.12, not {sys.version.split()[0]}")
    return str(executable)


def invoke(function: Function, events: list[dict[str, Any]], env: dict[str, str]) -> list[Any]:
    """Invoke `function` with each event in one fresh process; returns the handler's results."""
    with tempfile.TemporaryDirectory(prefix="smoke") as scratch:
        result = Path(scratch) / "result.json"
        process = subprocess.run(
            [python312(), "-I", "-S", "-B", "-c", HOST, _spec(function, "invoke", str(result))],
            input=json.dumps(events),
            capture_output=True,
            text=True,
            env={**env, "AWS_LAMBDA_FUNCTION_NAME": function.name},
            cwd=scratch,  # nothing of the repository is reachable from the working directory
            timeout=300,
            check=False,
        )
        check(process.returncode == 0 and result.exists(), f"{function.name} crashed:\n{process.stderr[-3000:]}")
        output = json.loads(result.read_text())
    check(not output["foreign"], f"{function.name} loaded modules from outside the build: {output['foreign']}")
    for item in output["results"]:
        check("error" not in item, f"{function.name} raised {item.get('error')}\n{process.stdout[-2000:]}")
    return [item["result"] for item in output["results"]]


def cold_import_ms(function: Function, env: dict[str, str], runs: int = IMPORT_RUNS) -> tuple[list[float], list[float]]:
    """The handler module's import time (wall clock, CPU) in `runs` fresh processes; no bytecode is
    written, as on Lambda's read-only file system."""
    times, cpu = [], []
    for _ in range(runs):
        process = subprocess.run(
            [python312(), "-I", "-S", "-B", "-c", HOST, _spec(function, "import")],
            capture_output=True,
            text=True,
            env={**env, "AWS_LAMBDA_FUNCTION_NAME": function.name},
            cwd=tempfile.gettempdir(),
            timeout=120,
            check=False,
        )
        check(process.returncode == 0, f"{function.name} does not import:\n{process.stderr[-3000:]}")
        output = json.loads(process.stdout.strip().splitlines()[-1])
        check(not output["foreign"], f"{function.name} imported from outside the build: {output['foreign']}")
        times.append(output["import_ms"])
        cpu.append(output["import_cpu_ms"])
    return times, cpu


def tree_bytes(path: Path) -> int:
    """Unzipped size of a directory (what counts against Lambda's 250 MB limit)."""
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


# ---------------------------------------------------------------- local services


@contextmanager
def database(fresh: bool = True) -> Iterator[str]:
    """A fresh, empty database on DATABASE_URL's server, or on an embedded PostgreSQL (pgserver);
    with fresh=False, DATABASE_URL itself when it is set."""
    import pg8000.native

    server_url = os.environ.get("DATABASE_URL")
    if server_url and not fresh:
        yield server_url
        return
    server = data_dir = None
    if not server_url:
        import pgserver

        data_dir = tempfile.mkdtemp(prefix="smoke-pg")
        server = pgserver.get_server(data_dir, cleanup_mode="stop")
        server_url = server.get_uri()
    name = f"paysync_smoke_{uuid.uuid4().hex[:8]}"
    admin = pg8000.native.Connection(**connect_kwargs(server_url))
    admin.run(f"CREATE DATABASE {name}")
    head, _, query = server_url.partition("?")
    scheme, _, rest = head.partition("://")
    url = f"{scheme}://{rest.split('/', 1)[0]}/{name}" + (f"?{query}" if query else "")
    try:
        yield url
    finally:
        admin.run(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.close()
        if server is not None:
            server.cleanup()
            shutil.rmtree(data_dir, ignore_errors=True)


def connect_kwargs(url: str) -> dict[str, Any]:
    """pg8000 keyword arguments of a postgresql:// URL (?host=/socket/dir for Unix sockets)."""
    parts = urlsplit(url)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    kwargs: dict[str, Any] = {
        "user": unquote_plus(parts.username or "postgres"),
        "password": unquote_plus(parts.password) if parts.password else None,
        "database": parts.path.lstrip("/") or "postgres",
    }
    if query.get("host", "").startswith("/"):
        kwargs["unix_sock"] = f"{query['host']}/.s.PGSQL.{parts.port or 5432}"
    else:
        kwargs.update(host=parts.hostname or "127.0.0.1", port=parts.port or 5432)
    return kwargs


@contextmanager
def s3_server() -> Iterator[tuple[str, Any]]:
    """moto's S3 server on 127.0.0.1 with the versioned bucket the events name."""
    import boto3
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    client = boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    client.create_bucket(Bucket=BUCKET)
    client.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
    try:
        yield endpoint, client
    finally:
        server.stop()


@contextmanager
def cloudformation_endpoint() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """An HTTP endpoint standing in for the custom resource's ResponseURL; collects the answers."""
    answers: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_PUT(self) -> None:
            answers.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/cloudformation-response", answers
    finally:
        server.shutdown()
        server.server_close()


def function_env(database_url: str, s3_endpoint: str) -> dict[str, str]:
    """The environment Lambda and the template give a function, pointed at the local services."""
    return {
        "PATH": "/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "TZ": ":UTC",
        "AWS_REGION": "us-east-1",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "1024",
        "DATABASE_URL": database_url,
        "S3_ENDPOINT_URL": s3_endpoint,
        "SNAPSHOT_BUCKET": BUCKET,
        "POWERTOOLS_SERVICE_NAME": "paysync",
        "POWERTOOLS_METRICS_NAMESPACE": "Paysync",
        "POWERTOOLS_LOG_LEVEL": "WARNING",
        "POWERTOOLS_TRACE_DISABLED": "true",  # no X-Ray daemon here; the SDK is still imported
    }


# ---------------------------------------------------------------- the events and what they must do


def load_event(name: str) -> dict[str, Any]:
    return json.loads((EVENTS / name).read_text())


def body_of(response: dict[str, Any]) -> Any:
    return json.loads(response["body"], parse_float=Decimal)


def header(response: dict[str, Any], name: str) -> str | None:
    single = {k.lower(): v for k, v in (response.get("headers") or {}).items()}
    multi = {k.lower(): v for k, v in (response.get("multiValueHeaders") or {}).items()}
    if name.lower() in single:
        return single[name.lower()]
    values = multi.get(name.lower())
    return values[0] if values else None


def status(response: dict[str, Any], expected: int) -> dict[str, Any]:
    check(response["statusCode"] == expected, f"status {response['statusCode']} != {expected}: {response['body']}")
    return response


def s3_event_for(client: Any, name: str) -> dict[str, Any]:
    """Put the sample snapshot where the event file says (gzip for .gz) and make the event name the
    created object version: its versionId, eTag and size (everything else in the file is kept)."""
    event = load_event(name)
    record = event["Records"][0]["s3"]
    key = unquote_plus(record["object"]["key"])
    check(record["bucket"]["name"] == BUCKET, f"{name} names bucket {record['bucket']['name']}")
    body = (SAMPLES / f"{key.split('/', 1)[0]}.json").read_bytes()
    if key.endswith(".gz"):
        body = gzip.compress(body)
    response = client.put_object(Bucket=BUCKET, Key=key, Body=body)
    record["object"].update(versionId=response["VersionId"], eTag=response["ETag"].strip('"'), size=len(body))
    return event


class Smoke:
    """The scenario: the same expectations as the source-level event tests, against the build."""

    def __init__(self, functions: dict[str, Function], env: dict[str, str], db_url: str, s3: Any, cfn: Any) -> None:
        self.functions = functions
        self.env = env
        self.db = db_url
        self.s3 = s3
        self.cfn_url, self.cfn_answers = cfn
        self.exercised: list[tuple[str, str, str]] = []

    def send(self, name: str, event: dict[str, Any] | None = None, env: dict[str, str] | None = None) -> Any:
        event = event if event is not None else load_event(name)
        function = function_for(event, self.functions)
        [result] = invoke(function, [event], {**self.env, **(env or {})})
        if "objects" in result:  # the reconcile function: one outcome per S3 record
            outcome = ",".join(item["status"] for item in result["objects"])
        elif "purged" in result:  # the scheduled history purge
            outcome = f"purged {sum(result['purged'].values())}"
        else:
            outcome = result.get("statusCode", result.get("Status", "ok"))
        self.exercised.append((function.name, name, str(outcome)))
        return result

    def query(self, sql: str) -> list[list[Any]]:
        import pg8000.native

        connection = pg8000.native.Connection(**connect_kwargs(self.db))
        try:
            return connection.run(sql)
        finally:
            connection.close()

    def live(self, table: str) -> int:
        return self.query(f"SELECT count(*) FROM {table} WHERE deleted IS NULL")[0][0]

    def run(self) -> None:
        steps: list[Callable[[], None]] = [
            self.migrate,
            self.empty_replica,
            self.post_snapshots,
            self.reads,
            self.rows_and_stats,
            self.syncs,
            self.forced,
            self.upload,
            self.s3_puts,
            self.purge_history,
        ]
        for step in steps:
            step()
            print(f"  ok  {step.__name__}")

    def migrate(self) -> None:
        event = load_event("migrate_create.json")
        event["ResponseURL"] = self.cfn_url
        result = self.send("migrate_create.json", event)
        revision = schema_version()
        check(result == {"Status": "SUCCESS", "Revision": revision}, f"migrate answered {result}")
        [answer] = self.cfn_answers
        check(answer["Status"] == "SUCCESS" and answer["Data"] == {"Revision": revision}, f"told CFN {answer}")
        check(answer["RequestId"] == event["RequestId"], "the answer names another request")
        check(self.query("SELECT version_num FROM alembic_version") == [[revision]], "schema not at head")

    def empty_replica(self) -> None:
        response = status(self.send("get_sync.json"), 404)
        check(body_of(response)["error"]["code"] == "not_found", response["body"])

    def post_snapshots(self) -> None:
        summary = body_of(status(self.send("post_patients_dry_run.json"), 200))
        check((summary["dryRun"], summary["inserted"]) == (True, 4), f"dry run: {summary}")
        check(self.live("patients") == 0, "a dry run changed the replica")

        response = status(self.send("post_patients.json"), 200)
        check(header(response, "Content-Type") == "application/json", "POST /patients is not JSON")
        summary = body_of(response)
        check(
            (summary["status"], summary["source"], summary["received"], summary["inserted"])
            == ("applied", "api", 4, 4),
            f"patients: {summary}",
        )
        check(self.live("patients") == 4, "patients not applied")

        summary = body_of(status(self.send("post_payments.json"), 200))
        check((summary["inserted"], summary["orphaned"]) == (6, 2), f"payments: {summary}")
        totals = self.query("SELECT payments_total, payments_count FROM patients WHERE external_id = '5'")
        check(totals == [[Decimal("17.22"), 3]], f"patient 5 totals {totals}")

    def reads(self) -> None:
        response = status(self.send("get_patients.json"), 200)
        check({p["externalId"]: p["paymentsTotal"] for p in body_of(response)} == SAMPLE_TOTALS, response["body"])
        check(header(response, "Link") is None, "a single page has a Link header")

        response = status(self.send("get_patients_filtered.json"), 200)
        check([p["externalId"] for p in body_of(response)] == ["5"], response["body"])
        check('"paymentsTotal":17.22' in response["body"], "paymentsTotal is not a JSON number with cents")

        first = status(self.send("get_patients_page.json"), 200)
        link = header(first, "Link") or ""
        match = re.fullmatch(r'<(.+)>; rel="next"', link)
        check(len(body_of(first)) == 2 and match, f"first page: {link!r} {first['body']}")
        url = urlsplit(match.group(1))
        check(url.path == "/Prod/patients" and url.scheme == "https", f"next page URL {match.group(1)}")
        following = load_event("get_patients_page.json")
        query = {name: values[0] for name, values in parse_qs(url.query).items()}
        following["queryStringParameters"] = query
        following["multiValueQueryStringParameters"] = {name: [value] for name, value in query.items()}
        second = status(self.send("get_patients_page.json", following), 200)
        ids = sorted(p["externalId"] for p in body_of(first) + body_of(second))
        check(ids == ["15", "4", "5", "8"] and header(second, "Link") is None, f"pages: {ids}")

        response = status(self.send("get_payments.json"), 200)
        payments = body_of(response)
        check(sorted(p["externalId"] for p in payments) == ["501", "502", "503", "601", "602", "701"], "payments")
        check('"amount":7.10' in response["body"], "amount is not a JSON number with cents")

        response = status(self.send("get_payments_filtered.json"), 200)
        pairs = sorted((p["externalId"], p["amount"]) for p in body_of(response))
        check(pairs == [("501", Decimal("4.46")), ("502", Decimal("5.66")), ("503", Decimal("7.10"))], str(pairs))

    def rows_and_stats(self) -> None:
        patient = body_of(status(self.send("get_patient.json"), 200))
        check((patient["externalId"], patient["paymentsTotal"]) == ("5", Decimal("17.22")), f"patient 5: {patient}")
        versions = body_of(status(self.send("get_patient_history.json"), 200))
        check([(v["action"], v["validTo"]) for v in versions] == [("inserted", None)], f"history of 5: {versions}")
        payment = body_of(status(self.send("get_payment.json"), 200))
        check((payment["externalId"], payment["amount"]) == ("501", Decimal("4.46")), f"payment 501: {payment}")
        versions = body_of(status(self.send("get_payment_history.json"), 200))
        check([v["action"] for v in versions] == ["inserted"], f"history of 501: {versions}")
        # Sync 1 is the dry run here (nothing changed); sync 2 is the patients first load.
        event = load_event("get_sync_changes.json")
        event["pathParameters"]["id"] = "2"
        event["path"] = "/syncs/2/changes"
        changes = body_of(status(self.send("get_sync_changes.json", event), 200))
        check(sorted(c["externalId"] for c in changes) == ["15", "4", "5", "8"], f"changes of sync 2: {changes}")
        stats = body_of(status(self.send("get_stats.json"), 200))
        figures = (stats["patients"]["live"], stats["payments"]["live"], stats["payments"]["sum"])
        check(figures == (4, 6, Decimal("52.12")), f"stats: {stats}")
        histogram = body_of(status(self.send("get_stats_histogram.json"), 200))
        check(sum(b["count"] for b in histogram["buckets"]) == 4, f"histogram: {histogram}")
        points = body_of(status(self.send("get_stats_history.json"), 200))
        check([p["entity"] for p in points] == ["payments", "patients"], f"stats history: {points}")

    def syncs(self) -> None:
        runs = body_of(status(self.send("get_syncs.json"), 200))
        shape = [(run["entity"], run["status"], run["source"], run["dryRun"]) for run in runs]
        expected = [("payments", "applied", "api", False), ("patients", "applied", "api", False)]
        check(shape == [*expected, ("patients", "applied", "api", True)], f"sync runs: {shape}")
        run = body_of(status(self.send("get_sync.json"), 200))
        check((run["id"], run["entity"], run["received"]) == (1, "patients", 4), f"sync run 1: {run}")

    def forced(self) -> None:
        summary = body_of(status(self.send("post_forced_payments_dry_run.json"), 200))
        check((summary["forced"], summary["dryRun"]) == (True, True), f"forced dry run: {summary}")
        upload = body_of(status(self.send("create_forced_upload.json"), 201))
        check(upload["headers"] == {"x-amz-meta-paysync-force": "true"}, f"forced upload: {upload}")

    def upload(self) -> None:
        upload = body_of(status(self.send("create_upload.json"), 201))
        check((upload["entity"], upload["method"], upload["bucket"]) == ("patients", "PUT", BUCKET), str(upload))
        data = (SAMPLES / "patients.json").read_bytes()
        # With a Content-Type: urllib would send a form type, whose body plain moto drops.
        request = urllib.request.Request(
            upload["uploadUrl"], data=data, method="PUT", headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=30) as answer:
            check(answer.status == 200, f"PUT to the upload URL: {answer.status}")
        stored = self.s3.get_object(Bucket=BUCKET, Key=upload["key"])["Body"].read()
        check(hashlib.sha256(stored).digest() == hashlib.sha256(data).digest(), "the uploaded object differs")

    def s3_puts(self) -> None:
        event = s3_event_for(self.s3, "s3_patients_put.json")
        [outcome] = self.send("s3_patients_put.json", event)["objects"]
        check((outcome["key"], outcome["status"]) == ("patients/2026/11/26/snapshot.json", "applied"), str(outcome))
        [outcome] = self.send("s3_patients_put.json", copy.deepcopy(event))["objects"]
        check((outcome["status"], outcome["code"]) == ("skipped", "already_applied"), f"replay: {outcome}")

        event = s3_event_for(self.s3, "s3_payments_put.json")
        [outcome] = self.send("s3_payments_put.json", event)["objects"]
        check((outcome["key"], outcome["status"]) == ("payments/2026/11/26/snapshot one.json", "applied"), str(outcome))

        event = s3_event_for(self.s3, "s3_payments_gz_put.json")
        [outcome] = self.send("s3_payments_gz_put.json", event)["objects"]
        check(outcome["status"] == "applied", f"gzip snapshot: {outcome}")
        check(self.live("payments") == 6, "payments after the S3 syncs")
        totals = self.query("SELECT payments_total FROM patients WHERE external_id = '8'")
        check(totals == [[Decimal("9.29")]], f"patient 8 totals {totals}")

    def purge_history(self) -> None:
        versions = "SELECT (SELECT count(*) FROM patient_versions), (SELECT count(*) FROM payment_versions)"
        renamed = load_event("post_patients.json")  # the patients renamed: their versions so far become history
        renamed["body"] = json.dumps([{**record, "firstName": "Renamed"} for record in json.loads(renamed["body"])])
        status(self.send("post_patients.json", renamed), 200)
        [before] = self.query(versions)
        check(sum(before) > 0, f"the syncs left no history to purge: {before}")
        result = self.send("purge_history_scheduled.json", env={"HISTORY_RETENTION_DAYS": "0"})
        check(result["purged"] == {"patients": 0, "payments": 0}, f"retention 0 purged: {result}")
        check(self.query(versions) == [before], "retention 0 changed the history")

        self.query("UPDATE patient_versions SET valid_to = valid_to - interval '40 days'")
        self.query("UPDATE payment_versions SET valid_to = valid_to - interval '40 days'")
        result = self.send("purge_history_scheduled.json", env={"HISTORY_RETENTION_DAYS": "30"})
        expected = {"patients": before[0], "payments": before[1]}
        check((result["retentionDays"], result["purged"]) == (30, expected), f"purge: {result}")
        check(self.query(versions) == [[0, 0]], "old versions left after the purge")
        check(self.live("patients") == 4, "the purge touched live rows")


# ---------------------------------------------------------------- main


def report_imports(functions: dict[str, Function], env: dict[str, str]) -> None:
    print(f"\ncold import of each handler from the build (median of {IMPORT_RUNS} fresh python3.12 processes)")
    print(f"  {'function':<24} {'wall':>7} {'cpu':>7}   wall min-max")
    for function in functions.values():
        times, cpu = cold_import_ms(function, env)
        print(
            f"  {function.name:<24} {statistics.median(times):4.0f} ms {statistics.median(cpu):4.0f} ms"
            f"   {min(times):.0f}-{max(times):.0f} ms"
        )


def report_layers(functions: dict[str, Function]) -> None:
    """Each layer's unzipped size; the layers of the API and reconcile functions must stay small."""
    print("\nlayers (unzipped)")
    layers = sorted({layer for function in functions.values() for layer in function.layers})
    for layer in layers:
        users = [f for f in functions.values() if layer in f.layers]
        size_mb = tree_bytes(layer) / 1e6
        print(f"  {layer.name:<24} {size_mb:6.1f} MB   used by {len(users)} functions")
        if any(not f.custom_resource for f in users):
            check(size_mb <= SHARED_LAYER_LIMIT_MB, f"{layer.name} is over {SHARED_LAYER_LIMIT_MB} MB unzipped")


def event_files() -> list[str]:
    return sorted(path.name for path in EVENTS.glob("*.json") if not path.name.startswith("env."))


def run_all() -> None:
    functions = load_functions()
    check(RUNTIME.is_dir(), f"{RUNTIME} is missing: `make smoke` installs it (smoke/lambda-runtime.lock)")
    with database() as db_url, s3_server() as (endpoint, client), cloudformation_endpoint() as cfn:
        env = function_env(db_url, endpoint)
        print(f"smoke: {len(functions)} functions from {BUILD.relative_to(ROOT)} (python3.12 -I -S -B)")
        smoke = Smoke(functions, env, db_url, client, cfn)
        smoke.run()
        missing = sorted(set(event_files()) - {name for _, name, _ in smoke.exercised})
        check(not missing, f"event files no scenario step sends: {missing}")
        untested = sorted(set(functions) - {fn for fn, _, _ in smoke.exercised})
        check(not untested, f"functions no event reaches: {untested}")
        print("\ninvocations")
        for function, name, outcome in smoke.exercised:
            print(f"  {function:<24} {name:<28} {outcome}")
        report_imports(functions, env)
    report_layers(functions)
    print(f"\n{len(smoke.exercised)} passed, 0 failed")


def run_one(function_name: str, event_path: str) -> None:
    """`make invoke` without Docker: one function, one event, against the local services; prints the
    handler's answer. DATABASE_URL (e.g. `make run`'s) is used as the server of a fresh database."""
    functions = load_functions()
    check(function_name in functions, f"no function {function_name}; the template has {sorted(functions)}")
    event = json.loads(Path(event_path).read_text())
    with database(fresh=False) as db_url, s3_server() as (endpoint, client), cloudformation_endpoint() as (cfn_url, _):
        env = function_env(db_url, endpoint)
        migrate = next(f for f in functions.values() if f.custom_resource)
        setup = load_event("migrate_create.json")
        setup["ResponseURL"] = cfn_url
        invoke(migrate, [setup], env)
        if "Records" in event:
            event = s3_event_for(client, Path(event_path).name)
        elif "ResponseURL" in event:
            event["ResponseURL"] = cfn_url
        [result] = invoke(functions[function_name], [event], env)
    print(json.dumps(result, indent=2, default=str))


def main(argv: list[str] | None = None) -> int:
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # moto's server: one line per S3 call
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--function", help="invoke only this function (logical id in template.yaml)")
    parser.add_argument("--event", help="with --function: the event file")
    parser.add_argument("--imports-only", action="store_true", help="only the cold imports and layer sizes")
    parser.add_argument("--build-dir", type=Path, help="another build output (e.g. a baseline's .aws-sam/build)")
    args = parser.parse_args(argv)
    global BUILD
    BUILD = (args.build_dir or BUILD).resolve()
    try:
        if args.imports_only:
            functions = load_functions()
            report_imports(functions, function_env("postgresql://unused/paysync", "http://127.0.0.1:9"))
            report_layers(functions)
        elif args.function:
            run_one(args.function, args.event or "")
        else:
            run_all()
    except SmokeFailure as failure:
        print(f"\nSMOKE FAILED: {failure}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
