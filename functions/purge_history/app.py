"""EventBridge schedule -> delete the row versions older than HISTORY_RETENTION_DAYS, batch by batch.
With the retention 0 (the default) history is kept forever and the function does nothing."""

from aws_lambda_powertools.utilities.typing import LambdaContext

from paysync.config import get_settings
from paysync.dal.db import close_quietly, connect
from paysync.observability import logger, trace_handler
from paysync.retention import purge_history


@logger.inject_lambda_context(clear_state=True)
@trace_handler
def lambda_handler(event: dict, context: LambdaContext) -> dict:
    days = get_settings().history_retention_days
    if days == 0:
        logger.info("history retention is off (HISTORY_RETENTION_DAYS=0): nothing purged")
        return {"retentionDays": 0, "purged": {"patients": 0, "payments": 0}}
    connection = connect()
    try:
        return {"retentionDays": days, **purge_history(connection, days).to_json()}
    finally:
        close_quietly(connection)
