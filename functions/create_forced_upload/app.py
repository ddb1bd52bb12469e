"""POST /forced/uploads: a presigned S3 PUT URL whose snapshot is synced forced (the deletion
guard does not stop it). A separate route so IAM can grant forcing apart from uploading."""

from aws_lambda_powertools.utilities.typing import LambdaContext

from paysync import params
from paysync.observability import logger, trace_handler
from paysync.uploads import create_upload
from paysync.web import create_resolver, json_request, json_response, query_params

app = create_resolver()


@app.post("/forced/uploads")
def post_forced_upload():
    event = app.current_event
    params.check_query(query_params(event), ())
    return json_response(201, create_upload(json_request(event), forced=True))


@logger.inject_lambda_context(clear_state=True)
@trace_handler
def lambda_handler(event: dict, context: LambdaContext) -> dict:
    return app.resolve(event, context)
