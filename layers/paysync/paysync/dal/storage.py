"""S3 access (boto3): snapshot objects in, presigned upload URLs out."""

from __future__ import annotations

from functools import lru_cache
from typing import Any, BinaryIO

from paysync.config import get_settings
from paysync.models import S3Object


@lru_cache(maxsize=1)
def s3_client() -> Any:
    """The process's S3 client (S3_ENDPOINT_URL points it at a local moto server)."""
    import boto3  # imported on first use: read handlers never pay for it
    from botocore.config import Config

    config = Config(signature_version="s3v4", retries={"mode": "standard", "max_attempts": 5})
    return boto3.client("s3", endpoint_url=get_settings().s3_endpoint_url, config=config)


def open_object(bucket: str, key: str, version_id: str | None) -> tuple[BinaryIO, S3Object, dict[str, str]]:
    """A streaming body of one object version, what identifies that version, and its user
    metadata (x-amz-meta-* headers, names in lower case without the prefix).

    LastModified is kept in whole seconds (what GetObject reports), so every
    path compares the same value.
    """
    extra = {"VersionId": version_id} if version_id else {}
    response = s3_client().get_object(Bucket=bucket, Key=key, **extra)
    version = response.get("VersionId")
    identity = S3Object(
        bucket=bucket,
        key=key,
        version_id=None if version in (None, "null") else version,
        etag=response["ETag"].strip('"'),
        last_modified=response["LastModified"].replace(microsecond=0),
        size=response.get("ContentLength"),
    )
    metadata = {name.lower(): value for name, value in (response.get("Metadata") or {}).items()}
    return response["Body"], identity, metadata


def presign_put(bucket: str, key: str, expires_seconds: int, metadata: dict[str, str] | None = None) -> str:
    """A URL that lets its holder PUT one object at `key` until it expires. `metadata` is signed
    into the URL: the PUT must send each entry as an x-amz-meta-<name> header, and S3 refuses
    a PUT that adds x-amz-meta-* headers the URL did not sign."""
    params: dict[str, object] = {"Bucket": bucket, "Key": key}
    if metadata:
        params["Metadata"] = metadata
    return s3_client().generate_presigned_url("put_object", Params=params, ExpiresIn=expires_seconds, HttpMethod="PUT")


def upload_file(file: BinaryIO, bucket: str, key: str) -> None:
    """Upload a (possibly large) file, multipart when needed."""
    s3_client().upload_fileobj(file, bucket, key)
