"""POST /uploads: a presigned S3 PUT URL for a snapshot too large to POST inline."""

from aws_lambda_powertools.utilities.typing import LambdaContext

from paysync import params
from paysync.observability import logger, trace_handler
from paysync.uploads import create_upload
from paysync.web import create_resolver, json_request, json_response, query_params

app = create_resolver()


@app.post("/uploads")
def post_upload():
    event = app.current_event
    params.check_query(query_params(event), ())
    return json_response(201, create_upload(json_request(event)))


@logger.inject_lambda_context(clear_state=True)
@trace_handler
def lambda_handler(event: dict, context: LambdaContext) -> dict:
    return app.resolve(event, context)
