"""POST /forced/uploads: a presigned S3 PUT URL whose snapshot is synced forced (the deletion
guard does not stop it). A separate route so IAM can grant forcing apart from uploading."""

import json

from aws_lambda_powertools.utilities.typing import LambdaContext

from paysync.errors import InvalidRequest
from paysync.observability import logger, tracer
from paysync.uploads import create_upload
from paysync.web import create_resolver, json_response, query_params

app = create_resolver()


@app.post("/forced/uploads")
@tracer.capture_method(capture_response=False)
def post_forced_upload():
    event = app.current_event
    if query_params(event):
        raise InvalidRequest("POST /forced/uploads takes no query parameters")
    try:
        request = json.loads(event.decoded_body or "")
    except ValueError:
        raise InvalidRequest('the body must be JSON like {"entity": "patients"}') from None
    return json_response(201, create_upload(request, forced=True))


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler(capture_response=False)
def lambda_handler(event: dict, context: LambdaContext) -> dict:
    return app.resolve(event, context)
