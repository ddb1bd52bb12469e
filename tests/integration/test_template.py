"""template.yaml: what the deployed stack promises, checked without deploying it."""

from __future__ import annotations

import ast
import itertools
import json
import os
import re
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml
from alembic.script import ScriptDirectory

from devserver.template import read_template
from paysync.config import Settings
from paysync.migrate import GROUP_ROLES, MIGRATIONS_DIR
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
    ("GET", "/patients/{externalId}"),
    ("GET", "/patients/{externalId}/history"),
    ("GET", "/payments/{externalId}"),
    ("GET", "/payments/{externalId}/history"),
    ("GET", "/syncs/{id}/changes"),
    ("GET", "/stats"),
    ("GET", "/stats/histogram"),
    ("GET", "/stats/history"),
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
    assert api["AccessLogSetting"]["DestinationArn"] == {
        "Fn::If": [
            "ApiLogsToCloudWatch",
            {"Fn::GetAtt": ["ApiAccessLogGroup", "Arn"]},
            {"Fn::GetAtt": ["ApiAccessLogStream", "Arn"]},
        ]
    }


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
    assert rule["ServerSideEncryptionByDefault"]["SSEAlgorithm"] == {"Fn::If": ["UseCmk", "aws:kms", "AES256"]}
    assert rule["ServerSideEncryptionByDefault"]["KMSMasterKeyID"]["Fn::If"][:2] == [
        "UseCmk",
        {"Fn::GetAtt": ["EncryptionKey", "Arn"]},
    ]
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

    policy = template["Resources"]["SnapshotBucketPolicy"]
    assert policy["Properties"]["Bucket"] == {"Ref": "SnapshotBucket"}
    [deny] = [s for s in policy["Properties"]["PolicyDocument"]["Statement"] if s.get("Sid") == "DenyInsecureTransport"]
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
    [statement] = [s for s in upload_policy["Statement"] if s["Action"] == "s3:PutObject"]
    assert {r["Fn::Sub"].rsplit("/", 2)[-2] for r in statement["Resource"]} == set(ENTITIES)


def test_functions_reach_the_database_through_the_tls_proxy(template):
    env = template["Globals"]["Function"]["Environment"]["Variables"]
    # The read-only proxy endpoint when there is a reader instance, else the proxy's own endpoint.
    assert env["DB_HOST"] == {
        "Fn::If": [
            "HasReader",
            {"Fn::GetAtt": ["DatabaseProxyReaderEndpoint", "Endpoint"]},
            {"Fn::GetAtt": ["DatabaseProxy", "Endpoint"]},
        ]
    }
    for function in resources_of(template, "AWS::Serverless::Function").values():
        host = (function["Properties"].get("Environment") or {}).get("Variables", {}).get("DB_HOST")
        assert host in (None, {"Fn::GetAtt": ["DatabaseProxy", "Endpoint"]}), host
    proxy = template["Resources"]["DatabaseProxy"]["Properties"]
    assert proxy["RequireTLS"] is True
    assert {auth["IAMAuth"] for auth in proxy["Auth"]} == {"DISABLED"}
    reader = template["Resources"]["DatabaseProxyReaderEndpoint"]
    assert (reader["Condition"], reader["Properties"]["TargetRole"]) == ("HasReader", "READ_ONLY")
    assert template["Resources"]["DatabaseReaderInstance"]["Condition"] == "HasReader"
    assert template["Parameters"]["ReaderInstance"]["Default"] == "false"
    cluster = template["Resources"]["DatabaseCluster"]
    assert cluster["Properties"]["StorageEncrypted"] is True
    assert cluster["Properties"]["Engine"] == "aurora-postgresql"
    assert cluster["DeletionPolicy"] == "Snapshot"
    # Database reachable from the proxy (and the rotation functions) only, the proxy from the functions only.
    db_sources = {
        r["Properties"]["SourceSecurityGroupId"]["Fn::GetAtt"][0]
        for r in resources_of(template, "AWS::EC2::SecurityGroupIngress").values()
        if r["Properties"]["GroupId"] == {"Fn::GetAtt": ["DatabaseSecurityGroup", "GroupId"]}
    }
    assert db_sources == {"ProxySecurityGroup", "RotationSecurityGroup"}
    proxy_ingress = template["Resources"]["ProxyIngressFromLambda"]["Properties"]
    assert proxy_ingress["SourceSecurityGroupId"] == {"Fn::GetAtt": ["LambdaSecurityGroup", "GroupId"]}
    assert proxy_ingress["FromPort"] == 5432


def test_environment_variables_are_settings_paysync_reads(template):
    env = template["Globals"]["Function"]["Environment"]["Variables"]
    for function in resources_of(template, "AWS::Serverless::Function").values():
        env = {**env, **((function["Properties"].get("Environment") or {}).get("Variables") or {})}
    unknown = {n for n in env if not n.startswith("POWERTOOLS_") and n.lower() not in Settings.field_names()}
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
        if a["Properties"]["MetricName"] != "Errors"
    }
    # Lambda errors: the functions that run unattended (S3 events, the daily schedule).
    watched = {
        a["Properties"]["Dimensions"][0]["Value"]["Ref"]
        for a in resources_of(template, "AWS::CloudWatch::Alarm").values()
        if a["Properties"]["MetricName"] == "Errors" and a["Properties"]["Namespace"] == "AWS/Lambda"
    }
    assert watched == {"ReconcileFunction", "PurgeHistoryFunction"}
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


# ---------------------------------------------------------------- security of the deployed stack

SECRETS = {"DatabaseSecret", "SyncSecret", "ReadSecret"}
# Which credentials each function may use: the sync user writes, the read user only reads.
SYNC_FUNCTIONS = {
    "PostPatientsFunction",
    "PostPaymentsFunction",
    "PostForcedFunction",
    "ReconcileFunction",
    "PurgeHistoryFunction",
}
READ_FUNCTIONS = {"GetPatientsFunction", "GetPaymentsFunction", "GetSyncsFunction", "GetStatsFunction"}


def refs_in(value: Any) -> set[str]:
    """Every resource or parameter name a piece of template refers to (Ref, GetAtt, ${...} in Sub)."""
    found: set[str] = set()
    if isinstance(value, dict):
        for key, item in value.items():
            if key == "Ref":
                found.add(item)
            elif key == "Fn::GetAtt":
                found.add(item[0])
            elif key == "Fn::Sub" and isinstance(item, str):
                found |= {name.split(".")[0] for name in re.findall(r"\$\{([^}!]+)\}", item)}
            else:
                found |= refs_in(item)
    elif isinstance(value, list):
        for item in value:
            found |= refs_in(item)
    return found


def function_env(template: dict[str, Any], name: str) -> dict[str, Any]:
    env = dict(template["Globals"]["Function"]["Environment"]["Variables"])
    env.update((template["Resources"][name]["Properties"].get("Environment") or {}).get("Variables") or {})
    return env


def test_each_function_uses_the_least_privileged_database_user(template):
    functions = resources_of(template, "AWS::Serverless::Function")
    assert template["Globals"]["Function"]["Environment"]["Variables"]["DB_SECRET_ARN"] == {"Ref": "ReadSecret"}
    expected = dict.fromkeys(READ_FUNCTIONS, "ReadSecret") | dict.fromkeys(SYNC_FUNCTIONS, "SyncSecret")
    expected["MigrateFunction"] = "DatabaseSecret"
    for name, secret in expected.items():
        assert function_env(template, name)["DB_SECRET_ARN"] == {"Ref": secret}, name
        if secret != "ReadSecret":
            assert function_env(template, name)["DB_HOST"] == {"Fn::GetAtt": ["DatabaseProxy", "Endpoint"]}, name
    # IAM: each function may read its own secret only (the migration also reads the users' secrets).
    for name, function in functions.items():
        readable = refs_in(function["Properties"].get("Policies")) & SECRETS
        if name == "MigrateFunction":
            assert readable == SECRETS
        elif name in ("CreateUploadFunction", "CreateForcedUploadFunction"):
            assert readable == set()
        else:
            assert readable == {expected[name]}, name


def test_functions_start_using_a_database_user_once_the_migration_created_it(template):
    # Otherwise an update that moves them to new users would briefly use users that do not exist yet.
    for name in SYNC_FUNCTIONS | READ_FUNCTIONS:
        assert template["Resources"][name].get("DependsOn") == "SchemaMigration", name


def test_the_migration_creates_one_login_user_per_role_secret(template):
    logins = template["Resources"]["SchemaMigration"]["Properties"]["LoginUsers"]
    assert {(login["SecretArn"]["Ref"], login["Group"]) for login in logins} == {
        ("SyncSecret", "paysync_sync"),
        ("ReadSecret", "paysync_read"),
    }
    assert {login["Group"] for login in logins} == set(GROUP_ROLES)
    users = set()
    for name in SECRETS:
        generate = template["Resources"][name]["Properties"]["GenerateSecretString"]
        document = generate["SecretStringTemplate"]
        text = document["Fn::Sub"] if isinstance(document, dict) else document
        user = json.loads(text.replace("${DatabaseName}", "paysync"))["username"]
        assert re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", user)
        assert user not in GROUP_ROLES
        users.add(user)
        assert generate["PasswordLength"] >= 32
    assert len(users) == 3
    # The proxy accepts each of the three logins.
    auth = template["Resources"]["DatabaseProxy"]["Properties"]["Auth"]
    assert {a["SecretArn"]["Ref"] for a in auth} == SECRETS
    proxy_role = template["Resources"]["DatabaseProxyRole"]["Properties"]["Policies"]
    assert refs_in(proxy_role) >= SECRETS


def test_every_secret_rotates_on_a_schedule_inside_the_vpc(template):
    assert any(t.startswith("AWS::SecretsManager-") for t in template["Transform"])
    schedules = resources_of(template, "AWS::SecretsManager::RotationSchedule")
    rotated = set()
    for name, schedule in schedules.items():
        properties = schedule["Properties"]
        attachment = template["Resources"][properties["SecretId"]["Ref"]]
        assert attachment["Type"] == "AWS::SecretsManager::SecretTargetAttachment", name
        rotated.add(attachment["Properties"]["SecretId"]["Ref"])
        hosted = properties["HostedRotationLambda"]
        # Single user: the username never changes, so the proxy's login for the secret stays valid.
        assert hosted["RotationType"] == "PostgreSQLSingleUser"
        assert hosted["VpcSecurityGroupIds"] == {"Fn::GetAtt": ["RotationSecurityGroup", "GroupId"]}
        assert hosted["VpcSubnetIds"] == {"Fn::Join": [",", {"Ref": "PrivateSubnetIds"}]}
        assert properties["RotationRules"]["ScheduleExpression"] == {"Fn::Sub": "rate(${SecretRotationDays} days)"}
        # Only once the users exist, and never in the middle of a deploy.
        assert schedule["DependsOn"] == "SchemaMigration"
        assert properties["RotateImmediatelyOnUpdate"] is False
    assert rotated == SECRETS


def test_snapshot_uploads_are_bounded(template):
    limit = template["Parameters"]["MaxSnapshotBytes"]
    assert limit["Type"] == "Number"
    assert limit["MaxValue"] <= 5 * 1024**3  # a single PUT's own limit
    for name in ("CreateUploadFunction", "ReconcileFunction"):
        assert function_env(template, name)["MAX_SNAPSHOT_BYTES"] == {"Ref": "MaxSnapshotBytes"}, name
    assert "max_snapshot_bytes" in Settings.field_names()


def test_the_snapshot_bucket_has_an_access_log_bucket(template):
    logging = template["Resources"]["SnapshotBucket"]["Properties"]["LoggingConfiguration"]
    assert logging["DestinationBucketName"] == {"Ref": "AccessLogBucket"}
    log_bucket = template["Resources"]["AccessLogBucket"]
    properties = log_bucket["Properties"]
    assert log_bucket["DeletionPolicy"] == "Retain"
    [rule] = properties["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    assert rule["ServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"  # what S3 log delivery supports
    assert set(properties["PublicAccessBlockConfiguration"].values()) == {True}
    assert len(properties["PublicAccessBlockConfiguration"]) == 4
    [expire] = [r for r in properties["LifecycleConfiguration"]["Rules"] if "ExpirationInDays" in r]
    assert expire["ExpirationInDays"] == {"Ref": "AccessLogRetentionDays"}
    statements = template["Resources"]["AccessLogBucketPolicy"]["Properties"]["PolicyDocument"]["Statement"]
    [delivery] = [s for s in statements if s["Effect"] == "Allow"]
    assert delivery["Principal"] == {"Service": "logging.s3.amazonaws.com"}
    assert delivery["Condition"]["ArnLike"]["aws:SourceArn"]["Fn::Sub"].endswith(BUCKET_NAME["Fn::Sub"])
    assert delivery["Resource"]["Fn::Sub"].endswith(f"/{logging['LogFilePrefix']}*")
    tls_only = {"Bool": {"aws:SecureTransport": "false"}}
    assert any(s["Effect"] == "Deny" and s["Condition"] == tls_only for s in statements)
    # Same length as the snapshot bucket's name: a stack name too long for bucket names fails at once.
    log_name = properties["BucketName"]["Fn::Sub"]
    assert log_name != BUCKET_NAME["Fn::Sub"]
    assert len(log_name) == len(BUCKET_NAME["Fn::Sub"])


def test_a_customer_managed_key_encrypts_data_at_rest_by_default(template):
    assert template["Parameters"]["UseCustomerManagedKey"]["Default"] == "true"
    key = template["Resources"]["EncryptionKey"]
    assert key["Properties"]["EnableKeyRotation"] is True
    assert key["DeletionPolicy"] == "Retain"
    principals = [s["Principal"] for s in key["Properties"]["KeyPolicy"]["Statement"]]
    assert {"Service": {"Fn::Sub": "logs.${AWS::Region}.amazonaws.com"}} in principals
    uses_key = {"Fn::If": ["UseCmk", {"Ref": "EncryptionKey"}, {"Ref": "AWS::NoValue"}]}
    uses_key_arn = {"Fn::If": ["UseCmk", {"Fn::GetAtt": ["EncryptionKey", "Arn"]}, {"Ref": "AWS::NoValue"}]}
    for name in SECRETS:
        assert template["Resources"][name]["Properties"]["KmsKeyId"] == uses_key, name
    log_groups = resources_of(template, "AWS::Logs::LogGroup")
    assert len(log_groups) >= 9
    for name, group in log_groups.items():
        assert group["Properties"]["KmsKeyId"] == uses_key_arn, name
    assert template["Resources"]["ReconcileDeadLetterQueue"]["Properties"]["KmsMasterKeyId"] == uses_key
    assert template["Resources"]["AlarmTopic"]["Properties"]["KmsMasterKeyId"] == uses_key
    assert template["Globals"]["Function"]["KmsKeyArn"] == uses_key_arn
    # Who writes or reads through S3 needs the key, through S3 and for this bucket only.
    for name, action in (("CreateUploadFunction", "kms:GenerateDataKey"), ("ReconcileFunction", "kms:Decrypt")):
        statements = [s for p in template["Resources"][name]["Properties"]["Policies"] for s in p.get("Statement", [])]
        [via_s3] = [s for s in statements if "s3." in str(s.get("Condition"))]
        assert action in (via_s3["Action"] if isinstance(via_s3["Action"], list) else [via_s3["Action"]])
        assert via_s3["Condition"]["StringEquals"]["kms:EncryptionContext:aws:s3:arn"]["Fn::Sub"].endswith(
            BUCKET_NAME["Fn::Sub"]
        )


def test_no_security_group_sends_to_the_whole_internet(template):
    for name, group in resources_of(template, "AWS::EC2::SecurityGroup").items():
        for rule in group["Properties"]["SecurityGroupEgress"]:  # inline, replacing the default allow-all
            assert rule.get("CidrIp") in (None, "127.0.0.1/32"), name
            assert "CidrIpv6" not in rule, name
    assert not resources_of(template, "AWS::EC2::SecurityGroupEgress")
    lambda_egress = template["Resources"]["LambdaSecurityGroup"]["Properties"]["SecurityGroupEgress"]
    destinations = {
        (rule["FromPort"], json.dumps(rule.get("DestinationSecurityGroupId") or rule.get("DestinationPrefixListId")))
        for rule in lambda_egress
    }
    endpoint = {
        "Fn::If": [
            "CreateSecretsEndpoint",
            {"Fn::GetAtt": ["EndpointSecurityGroup", "GroupId"]},
            {"Ref": "SecretsManagerEndpointSecurityGroupId"},
        ]
    }
    assert destinations == {
        (5432, json.dumps({"Fn::GetAtt": ["ProxySecurityGroup", "GroupId"]})),
        (443, json.dumps({"Ref": "S3PrefixListId"})),
        (443, json.dumps(endpoint)),
    }


def test_the_database_requires_tls(template):
    cluster = template["Resources"]["DatabaseCluster"]["Properties"]
    assert cluster["DBClusterParameterGroupName"] == {"Ref": "DatabaseClusterParameterGroup"}
    group = template["Resources"]["DatabaseClusterParameterGroup"]["Properties"]
    assert group["Parameters"]["rds.force_ssl"] == "1"
    # The family follows the engine's major version.
    assert group["Family"]["Fn::Sub"][0] == "aurora-postgresql${Major}"
    assert group["Family"]["Fn::Sub"][1]["Major"] == {
        "Fn::Select": [0, {"Fn::Split": [".", {"Ref": "DatabaseEngineVersion"}]}]
    }


def test_a_first_deploy_leaves_account_wide_settings_alone(template):
    parameters = template["Parameters"]
    assert parameters["ConfigureApiGatewayLogging"]["Default"] == "false"
    for name in ("ApiGatewayAccount", "ApiGatewayCloudWatchRole"):
        assert template["Resources"][name]["Condition"] == "CreateApiGatewayAccount"
    # The default access log needs no account setting: Firehose into the access-log bucket.
    assert parameters["ApiAccessLogDestination"]["Default"] == "s3"
    stream = template["Resources"]["ApiAccessLogStream"]
    assert stream["Condition"] == "ApiLogsToS3"
    assert stream["Properties"]["DeliveryStreamName"]["Fn::Sub"].startswith("amazon-apigateway-")
    assert stream["Properties"]["ExtendedS3DestinationConfiguration"]["BucketARN"] == {
        "Fn::GetAtt": ["AccessLogBucket", "Arn"]
    }
    # Reserved concurrency is off: a new account has only 10 concurrent executions, all unreserved.
    assert parameters["ReconcileReservedConcurrency"]["Default"] == 0
    reconcile = template["Resources"]["ReconcileFunction"]["Properties"]
    assert reconcile["ReservedConcurrentExecutions"]["Fn::If"][0] == "ReserveReconcileConcurrency"
    for name, function in resources_of(template, "AWS::Serverless::Function").items():
        if name != "ReconcileFunction":
            assert "ReservedConcurrentExecutions" not in function["Properties"], name


# A CloudFormation Rule, evaluated here the way CloudFormation evaluates it before creating anything.
def evaluate(expression: Any, parameters: dict[str, Any]) -> Any:
    if not isinstance(expression, dict):
        return expression
    [(function, argument)] = expression.items()
    if function == "Ref":
        return parameters[argument]
    values = [evaluate(item, parameters) for item in argument]
    if function == "Fn::Equals":
        return values[0] == values[1]
    if function == "Fn::Not":
        return not values[0]
    if function == "Fn::Or":
        return any(values)
    if function == "Fn::And":
        return all(values)
    if function == "Fn::EachMemberEquals":
        return all(member == values[1] for member in values[0])
    raise AssertionError(f"not a rule function: {function}")


def rule_passes(template: dict[str, Any], rule: str, **given: Any) -> bool:
    parameters = {name: p.get("Default") for name, p in template["Parameters"].items()}
    parameters.update(given)
    for name, parameter in template["Parameters"].items():
        if parameter["Type"] == "CommaDelimitedList" and isinstance(parameters[name], str):
            parameters[name] = parameters[name].split(",")
    body = template["Rules"][rule]
    if "RuleCondition" in body and not evaluate(body["RuleCondition"], parameters):
        return True
    return all(evaluate(assertion["Assert"], parameters) for assertion in body["Assertions"])


@pytest.mark.parametrize(
    ("route_tables", "already_reach_s3", "passes"),
    [
        ("", "false", False),  # no way to S3: refused before anything is created
        ("rtb-0123456789abcdef0", "false", True),
        ("rtb-0123456789abcdef0,rtb-0fedcba9876543210", "false", True),
        ("", "true", True),
    ],
)
def test_a_stack_whose_subnets_cannot_reach_s3_is_refused_at_once(template, route_tables, already_reach_s3, passes):
    given = {"PrivateRouteTableIds": route_tables, "SubnetsAlreadyReachS3": already_reach_s3}
    assert rule_passes(template, "SubnetsReachS3", **given) is passes


@pytest.mark.parametrize(
    ("create_endpoint", "endpoint_group", "passes"),
    [("true", "", True), ("false", "", False), ("false", "sg-0123456789abcdef0", True)],
)
def test_an_existing_secrets_endpoint_needs_its_security_group(template, create_endpoint, endpoint_group, passes):
    given = {"CreateSecretsManagerEndpoint": create_endpoint, "SecretsManagerEndpointSecurityGroupId": endpoint_group}
    assert rule_passes(template, "SecretsManagerReachable", **given) is passes


@pytest.mark.parametrize(
    ("configure", "destination", "passes"),
    [("false", "s3", True), ("true", "s3", False), ("true", "cloudwatch", True), ("false", "cloudwatch", True)],
)
def test_the_account_setting_is_only_changed_for_cloudwatch_access_logs(template, configure, destination, passes):
    given = {"ConfigureApiGatewayLogging": configure, "ApiAccessLogDestination": destination}
    assert rule_passes(template, "ApiGatewayAccountSettingOnlyForCloudWatch", **given) is passes


def test_every_checkov_skip_gives_its_reason():
    config = (ROOT / ".checkov.yaml").read_text()
    skipped = yaml.safe_load(config)["skip-check"]
    assert skipped, "nothing skipped: drop this test's config check"
    for check in skipped:
        # Each id is named in a comment that explains it.
        assert re.search(rf"^\s*# {check} \(.+\): \S+", config, re.MULTILINE), check
    inline = re.findall(r"checkov:skip=([A-Z0-9_]+)(.*)", TEMPLATE.read_text())
    assert inline
    for check, reason in inline:
        assert re.fullmatch(r":\S.{20,}", reason), f"{check} has no reason"


def test_samconfig_has_dev_and_prod_environments_and_one_deploy_command():
    config = tomllib.loads((ROOT / "samconfig.toml").read_text())
    for env in ("dev", "prod"):
        deploy = config[env]["deploy"]["parameters"]
        assert len(deploy["stack_name"]) <= 25  # bucket names derive from it
        assert set(deploy["capabilities"].split()) == {"CAPABILITY_IAM", "CAPABILITY_AUTO_EXPAND"}
    prod = config["prod"]["deploy"]["parameters"]["parameter_overrides"]
    assert "DeletionProtection=true" in prod
    command = re.compile(r"^\.venv-sam/bin/sam deploy .*$", re.MULTILINE)
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Deploying") :]
    section = section[: section.index("\n## ", 3)]
    assert command.findall(section)
    assert set(command.findall(section)) <= set(command.findall((ROOT / "docs" / "deploy.md").read_text()))


def test_the_history_purge_runs_daily_with_the_configured_retention(template):
    purge = template["Resources"]["PurgeHistoryFunction"]["Properties"]
    assert events_of(template["Resources"]["PurgeHistoryFunction"], "Schedule") == [
        {"Schedule": "rate(1 day)", "Description": "Purge the history older than HistoryRetentionDays"}
    ]
    assert purge["Environment"]["Variables"]["HISTORY_RETENTION_DAYS"] == {"Ref": "HistoryRetentionDays"}
    assert template["Parameters"]["HistoryRetentionDays"]["Default"] == 0  # history kept unless asked
    assert purge["Timeout"] == 900
    keep = template["Globals"]["Function"]["Environment"]["Variables"]["KEEP_HISTORY"]
    assert keep == {"Ref": "KeepHistory"}
    assert template["Parameters"]["KeepHistory"]["Default"] == "true"  # history kept unless asked
