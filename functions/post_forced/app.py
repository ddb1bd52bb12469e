"""POST /forced/patients, POST /forced/payments: reconcile an inline snapshot even when the
deletion guard trips. Separate routes so IAM can grant forcing apart from syncing."""

from aws_lambda_powertools.utilities.typing import LambdaContext

from paysync.observability import log_metrics, logger, trace_handler
from paysync.web import create_resolver, sync_snapshot

app = create_resolver()


@app.post("/forced/patients")
def post_forced_patients():
    return sync_snapshot(app.current_event, "patients", forced_route=True)


@app.post("/forced/payments")
def post_forced_payments():
    return sync_snapshot(app.current_event, "payments", forced_route=True)


@logger.inject_lambda_context(clear_state=True)
@trace_handler
@log_metrics
def lambda_handler(event: dict, context: LambdaContext) -> dict:
    return app.resolve(event, context)
