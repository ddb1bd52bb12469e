"""POST /uploads: a presigned S3 PUT URL for a snapshot too large to POST inline."""

import json

from aws_lambda_powertools.utilities.typing import LambdaContext

from paysync.errors import InvalidRequest
from paysync.observability import logger, trace_handler
from paysync.uploads import create_upload
from paysync.web import create_resolver, json_response, query_params

app = create_resolver()


@app.post("/uploads")
def post_upload():
    event = app.current_event
    if query_params(event):
        raise InvalidRequest("POST /uploads takes no query parameters")
    try:
        request = json.loads(event.decoded_body or "")
    except ValueError:
        raise InvalidRequest('the body must be JSON like {"entity": "patients"}') from None
    return json_response(201, create_upload(request))


@logger.inject_lambda_context(clear_state=True)
@trace_handler
def lambda_handler(event: dict, context: LambdaContext) -> dict:
    return app.resolve(event, context)
