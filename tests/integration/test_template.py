"""template.yaml: what the deployed stack promises, checked without deploying it."""

from __future__ import annotations

import ast
import itertools
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
from alembic.script import ScriptDirectory

from devserver.template import read_template
from paysync.config import Settings
from paysync.migrate import MIGRATIONS_DIR
from paysync.records import ENTITIES
from paysync.uploads import SNAPSHOT_SUFFIXES
from tests.conftest import EVENTS, ROOT

TEMPLATE = ROOT / "template.yaml"
SAM = ROOT / ".venv-sam" / "bin" / "sam"
BUCKET_NAME = {"Fn::Sub": "${AWS::StackName}-snapshots-${AWS::AccountId}-${AWS::Region}"}
ROUTES = {
    ("GET", "/patients"),
    ("GET", "/payments"),
    ("POST", "/patients"),
    ("POST", "/payments"),
    ("POST", "/uploads"),
    ("POST", "/forced/patients"),
    ("POST", "/forced/payments"),
    ("POST", "/forced/uploads"),
    ("GET", "/syncs"),
    ("GET", "/syncs/{id}"),
}


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return read_template(TEMPLATE)


def resources_of(template: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    return {name: r for name, r in template["Resources"].items() if r["Type"] == kind}


def events_of(function: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [e["Properties"] for e in (function["Properties"].get("Events") or {}).values() if e["Type"] == kind]


def routes_of(template: dict[str, Any]) -> dict[tuple[str, str], str]:
    """(METHOD, path) -> the function's CodeUri."""
    return {
        (event["Method"].upper(), event["Path"]): function["Properties"]["CodeUri"]
        for function in resources_of(template, "AWS::Serverless::Function").values()
        for event in events_of(function, "Api")
    }


def defines_lambda_handler(module: Path) -> bool:
    tree = ast.parse(module.read_text())
    return any(isinstance(node, ast.FunctionDef) and node.name == "lambda_handler" for node in tree.body)


def test_every_function_has_local_code_with_a_lambda_handler(template):
    functions = resources_of(template, "AWS::Serverless::Function")
    assert template["Globals"]["Function"]["Handler"] == "app.lambda_handler"
    assert template["Globals"]["Function"]["Runtime"] == "python3.12"
    # Every folder under functions/ is deployed, and every deployed function has its folder.
    deployed = {function["Properties"]["CodeUri"].rstrip("/") for function in functions.values()}
    assert deployed == {f"functions/{d.name}" for d in (ROOT / "functions").iterdir() if (d / "app.py").exists()}
    for name, function in functions.items():
        code_uri = function["Properties"]["CodeUri"]
        assert code_uri.startswith("functions/"), name
        module = ROOT / code_uri / "app.py"
        assert module.is_file(), f"{name}: {module} is missing"
        assert defines_lambda_handler(module), f"{name}: {module} defines no lambda_handler"


def test_the_api_serves_exactly_the_specified_routes(template):
    assert set(routes_of(template)) == ROUTES
    for function in resources_of(template, "AWS::Serverless::Function").values():
        for event in events_of(function, "Api"):
            assert event["RestApiId"] == {"Ref": "Api"}


def test_every_route_requires_iam_sigv4(template):
    api = template["Resources"]["Api"]["Properties"]
    assert api["Auth"]["DefaultAuthorizer"] == "AWS_IAM"
    # NONE: API Gateway invokes with its resource permission, not with the caller's credentials.
    assert api["Auth"]["InvokeRole"] == "NONE"
    for function in resources_of(template, "AWS::Serverless::Function").values():
        for event in events_of(function, "Api"):
            assert event.get("Auth", {}).get("Authorizer", "AWS_IAM") == "AWS_IAM", event["Path"]
    assert api["StageName"] == "Prod"
    assert api["TracingEnabled"] is True
    assert api["AccessLogSetting"]["DestinationArn"] == {"Fn::GetAtt": ["ApiAccessLogGroup", "Arn"]}


def test_api_events_name_declared_routes(template):
    # The events/ files are what `sam local invoke -e` replays: each must match a route of the template.
    routes = routes_of(template)
    api_events = [path for path in sorted(EVENTS.glob("*.json")) if '"httpMethod"' in path.read_text()]
    assert len(api_events) >= 11
    for path in api_events:
        event = json.loads(path.read_text())
        assert (event["httpMethod"], event["resource"]) in routes, path.name
        assert event["requestContext"]["path"] == f"/Prod{event['path']}", path.name


def test_snapshot_bucket_is_private_encrypted_versioned_and_tls_only(template):
    bucket = template["Resources"]["SnapshotBucket"]
    properties = bucket["Properties"]
    assert bucket["DeletionPolicy"] == "Retain"
    [rule] = properties["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    assert rule["ServerSideEncryptionByDefault"]["SSEAlgorithm"] in ("AES256", "aws:kms")
    assert properties["VersioningConfiguration"]["Status"] == "Enabled"
    assert properties["PublicAccessBlockConfiguration"] == {
        "BlockPublicAcls": True,
        "BlockPublicPolicy": True,
        "IgnorePublicAcls": True,
        "RestrictPublicBuckets": True,
    }
    lifecycle = properties["LifecycleConfiguration"]["Rules"]
    assert any(r.get("AbortIncompleteMultipartUpload", {}).get("DaysAfterInitiation") == 1 for r in lifecycle)
    assert any("NoncurrentVersionExpiration" in r for r in lifecycle)

    [policy] = resources_of(template, "AWS::S3::BucketPolicy").values()
    assert policy["Properties"]["Bucket"] == {"Ref": "SnapshotBucket"}
    [deny] = [s for s in policy["Properties"]["PolicyDocument"]["Statement"] if s["Effect"] == "Deny"]
    assert deny["Action"] == "s3:*"
    assert deny["Principal"] == "*"
    assert deny["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    assert {"Fn::GetAtt": ["SnapshotBucket", "Arn"]} in deny["Resource"]  # the bucket
    assert {"Fn::Sub": "${SnapshotBucket.Arn}/*"} in deny["Resource"]  # and its objects


def test_reconcile_is_notified_of_exactly_the_keys_the_code_accepts(template):
    reconcile = template["Resources"]["ReconcileFunction"]
    notified = set()
    for event in events_of(reconcile, "S3"):
        assert event["Bucket"] == {"Ref": "SnapshotBucket"}
        assert event["Events"] == "s3:ObjectCreated:*"
        rules = {rule["Name"]: rule["Value"] for rule in event["Filter"]["S3Key"]["Rules"]}
        notified.add((rules["prefix"], rules["suffix"]))
    assert notified == {(f"{entity}/", suffix) for entity, suffix in itertools.product(ENTITIES, SNAPSHOT_SUFFIXES)}


def test_functions_name_the_bucket_without_referring_to_it(template):
    # SnapshotBucket's notification depends on ReconcileFunction; a !Ref from a function (env var or
    # policy) back to the bucket would make CloudFormation refuse the stack as circular.
    env = template["Globals"]["Function"]["Environment"]["Variables"]
    assert template["Resources"]["SnapshotBucket"]["Properties"]["BucketName"] == BUCKET_NAME
    assert env["SNAPSHOT_BUCKET"] == BUCKET_NAME
    reconcile = template["Resources"]["ReconcileFunction"]["Properties"]
    assert {"S3ReadPolicy": {"BucketName": BUCKET_NAME}} in reconcile["Policies"]
    for function in resources_of(template, "AWS::Serverless::Function").values():
        assert "SnapshotBucket" not in str(function["Properties"].get("Policies", ""))
        assert "SnapshotBucket" not in str(function["Properties"].get("Environment", ""))
    # The presigned PUT can only write under the entity prefixes.
    [upload_policy] = template["Resources"]["CreateUploadFunction"]["Properties"]["Policies"]
    [statement] = upload_policy["Statement"]
    assert statement["Action"] == "s3:PutObject"
    assert {r["Fn::Sub"].rsplit("/", 2)[-2] for r in statement["Resource"]} == set(ENTITIES)


def test_functions_reach_the_database_through_the_tls_proxy(template):
    env = template["Globals"]["Function"]["Environment"]["Variables"]
    assert env["DB_HOST"] == {"Fn::GetAtt": ["DatabaseProxy", "Endpoint"]}
    assert env["DB_SECRET_ARN"] == {"Ref": "DatabaseSecret"}
    proxy = template["Resources"]["DatabaseProxy"]["Properties"]
    assert proxy["RequireTLS"] is True
    assert proxy["Auth"][0]["IAMAuth"] == "DISABLED"
    cluster = template["Resources"]["DatabaseCluster"]
    assert cluster["Properties"]["StorageEncrypted"] is True
    assert cluster["Properties"]["Engine"] == "aurora-postgresql"
    assert cluster["DeletionPolicy"] == "Snapshot"
    # Database reachable from the proxy only, the proxy from the functions only.
    db_ingress = template["Resources"]["DatabaseIngressFromProxy"]["Properties"]
    assert db_ingress["SourceSecurityGroupId"] == {"Fn::GetAtt": ["ProxySecurityGroup", "GroupId"]}
    proxy_ingress = template["Resources"]["ProxyIngressFromLambda"]["Properties"]
    assert proxy_ingress["SourceSecurityGroupId"] == {"Fn::GetAtt": ["LambdaSecurityGroup", "GroupId"]}
    assert (db_ingress["FromPort"], proxy_ingress["FromPort"]) == (5432, 5432)


def test_environment_variables_are_settings_paysync_reads(template):
    env = template["Globals"]["Function"]["Environment"]["Variables"]
    unknown = {n for n in env if not n.startswith("POWERTOOLS_") and n.lower() not in Settings.model_fields}
    assert not unknown, f"not read by paysync.config.Settings: {unknown}"
    assert env["POWERTOOLS_METRICS_NAMESPACE"] == "Paysync"


def test_reconcile_retries_then_dead_letters(template):
    reconcile = template["Resources"]["ReconcileFunction"]["Properties"]
    assert reconcile["Timeout"] == 900
    assert reconcile["MemorySize"] >= 1769
    invoke_config = reconcile["EventInvokeConfig"]
    assert invoke_config["MaximumRetryAttempts"] == 2
    assert invoke_config["DestinationConfig"]["OnFailure"] == {
        "Type": "SQS",
        "Destination": {"Fn::GetAtt": ["ReconcileDeadLetterQueue", "Arn"]},
    }


def test_schema_migration_reruns_when_a_migration_is_added(template):
    # CloudFormation only calls the custom resource again when a property changes.
    migration = template["Resources"]["SchemaMigration"]
    assert migration["Properties"]["ServiceToken"] == {"Fn::GetAtt": ["MigrateFunction", "Arn"]}
    head = ScriptDirectory(str(MIGRATIONS_DIR)).get_current_head()
    assert migration["Properties"]["SchemaVersion"] == head, "bump SchemaVersion to the newest migration"
    assert {"DatabaseInstance", "DatabaseProxyTargetGroup"} <= set(migration["DependsOn"])


def test_alarms_watch_the_failure_paths(template):
    alarms = {
        (a["Properties"]["Namespace"], a["Properties"]["MetricName"]): a["Properties"]
        for a in resources_of(template, "AWS::CloudWatch::Alarm").values()
    }
    errors = alarms[("AWS/Lambda", "Errors")]
    assert errors["Dimensions"] == [{"Name": "FunctionName", "Value": {"Ref": "ReconcileFunction"}}]
    dlq = alarms[("AWS/SQS", "ApproximateNumberOfMessagesVisible")]
    assert dlq["Dimensions"][0]["Value"] == {"Fn::GetAtt": ["ReconcileDeadLetterQueue", "QueueName"]}
    api_5xx = {d["Name"]: d["Value"] for d in alarms[("AWS/ApiGateway", "5XXError")]["Dimensions"]}
    assert api_5xx["ApiName"] == template["Resources"]["Api"]["Properties"]["Name"]
    assert api_5xx["Stage"] == template["Resources"]["Api"]["Properties"]["StageName"]


def test_outputs(template):
    assert {"ApiUrl", "SnapshotBucketName", "DatabaseProxyEndpoint", "DatabaseSecretArn", "DeadLetterQueueUrl"} <= set(
        template["Outputs"]
    )


@pytest.mark.skipif(not SAM.exists(), reason="aws-sam-cli is not installed in .venv-sam (run `make test`)")
def test_sam_validate_lint_is_clean():
    # cfn-lint on the transformed template: catches circular dependencies and invalid properties.
    env = {**os.environ, "SAM_CLI_TELEMETRY": "0"}
    result = subprocess.run(
        [str(SAM), "validate", "--lint", "--region", "us-east-1", "--template-file", str(TEMPLATE)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
