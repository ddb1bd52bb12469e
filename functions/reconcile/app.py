"""S3 ObjectCreated -> reconcile the snapshot object. Transient errors raise (Lambda retries,
then the on-failure destination gets the event); rejected snapshots are recorded, not retried."""

from urllib.parse import unquote_plus

from aws_lambda_powertools.utilities.data_classes import S3Event, event_source
from aws_lambda_powertools.utilities.typing import LambdaContext

from paysync.observability import log_metrics, logger, trace_handler
from paysync.uploads import sync_object


@logger.inject_lambda_context(clear_state=True)
@trace_handler
@log_metrics
@event_source(data_class=S3Event)
def lambda_handler(event: S3Event, context: LambdaContext) -> dict:
    outcomes = [
        sync_object(
            record.s3.bucket.name,
            unquote_plus(record.s3.get_object.key),  # S3 event keys are URL-encoded
            record.s3.get_object.version_id,
            sequencer=record.s3.get_object.get("sequencer"),  # orders the versions of one key
            etag=record.s3.get_object.etag or None,
        )
        for record in event.records
    ]
    return {"objects": [outcome.to_json() for outcome in outcomes]}
