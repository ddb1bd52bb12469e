"""Deploy-time schema migration: a CloudFormation custom resource that runs `alembic upgrade head`
on Create and Update (Delete leaves the data alone) and reports back to CloudFormation.

Its `LoginUsers` property lists [{"SecretArn": ..., "Group": "paysync_read" | "paysync_sync"}]: each
secret's user is created (or its password reset to the secret's) as a member of that group role."""

import json
import urllib.request

from aws_lambda_powertools.utilities.typing import LambdaContext

from paysync.migrate import LoginUser, ensure_login_users, upgrade
from paysync.observability import logger


def _respond(event: dict, context: LambdaContext, status: str, data: dict, reason: str = "") -> None:
    body = json.dumps(
        {
            "Status": status,
            "Reason": reason or f"see CloudWatch log stream {context.log_stream_name}",
            "PhysicalResourceId": event.get("PhysicalResourceId") or "paysync-schema",
            "StackId": event["StackId"],
            "RequestId": event["RequestId"],
            "LogicalResourceId": event["LogicalResourceId"],
            "Data": data,
        }
    ).encode()
    request = urllib.request.Request(event["ResponseURL"], data=body, method="PUT", headers={"Content-Type": ""})
    with urllib.request.urlopen(request, timeout=30):
        pass


def _login_users(properties: dict) -> list[LoginUser]:
    from aws_lambda_powertools.utilities.parameters import get_secret

    logins = []
    for entry in properties.get("LoginUsers") or []:
        secret = get_secret(entry["SecretArn"], transform="json", force_fetch=True)
        logins.append(LoginUser(secret["username"], secret["password"], entry["Group"]))
    return logins


@logger.inject_lambda_context(clear_state=True)
def lambda_handler(event: dict, context: LambdaContext) -> dict:
    data: dict = {}
    try:
        if event.get("RequestType") in ("Create", "Update"):
            data["Revision"] = upgrade()
            logger.info("schema migrated", extra={"revision": data["Revision"]})
            logins = _login_users(event.get("ResourceProperties") or {})
            ensure_login_users(logins)
            logger.info("login users ready", extra={"users": [login.username for login in logins]})
        status, reason = "SUCCESS", ""
    except Exception as exc:
        logger.exception("schema migration failed")
        status, reason = "FAILED", f"migration failed: {type(exc).__name__}"
    _respond(event, context, status, data, reason)
    return {"Status": status, **data}
