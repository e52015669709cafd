"""Turn the usual mistakes into one line on stderr and a non-zero exit, never a traceback.

Every command runs inside ``CaptionerGroup.invoke`` (see app.py), which hands any exception
to ``describe`` below; only errors nobody foresaw keep their traceback, and only with
``CAPTIONER_DEBUG=1``.
"""

from __future__ import annotations

from urllib.parse import urlparse

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    EndpointConnectionError,
    NoCredentialsError,
    NoRegionError,
    PartialCredentialsError,
    ProfileNotFound,
    ReadTimeoutError,
)

from captioner.errors import CaptionerError
from captioner_tools.endpoints import is_loopback
from captioner_tools.errors import ToolError

_CREDENTIAL_CODES = {
    "ExpiredToken", "ExpiredTokenException", "InvalidClientTokenId", "InvalidAccessKeyId",
    "UnrecognizedClientException", "SignatureDoesNotMatch", "InvalidSignatureException",
}  # fmt: skip
_DENIED_CODES = {"AccessDenied", "AccessDeniedException", "UnauthorizedOperation", "Forbidden"}
_QUEUE_MISSING = {"AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist"}


def describe(exc: BaseException) -> str | None:
    """One line for a known kind of error, or None for an unexpected one."""
    if isinstance(exc, ToolError | CaptionerError):
        return str(exc)
    if isinstance(exc, EndpointConnectionError | ConnectionClosedError | ReadTimeoutError):
        return _unreachable(exc)
    if isinstance(exc, NoCredentialsError | PartialCredentialsError):
        return (
            "no AWS credentials found: configure them (aws configure, AWS_PROFILE, "
            "--profile), or use --endpoint-url for a local stack"
        )
    if isinstance(exc, NoRegionError):
        return "no AWS region: pass --region or set AWS_REGION"
    if isinstance(exc, ProfileNotFound):
        return f"{exc} (check --profile / AWS_PROFILE)"
    if isinstance(exc, ClientError):
        return _client_error(exc)
    if isinstance(exc, BotoCoreError):
        return str(exc)
    if isinstance(exc, FileNotFoundError | NotADirectoryError | PermissionError):
        return f"{exc.strerror}: {exc.filename}"
    return None


def _unreachable(exc: BaseException) -> str:
    url = getattr(exc, "kwargs", {}).get("endpoint_url") or "the AWS endpoint"
    if is_loopback(url):
        root = "{0.scheme}://{0.netloc}".format(urlparse(url))
        return (
            f"cannot reach {root}: is the local stack running? "
            "Start it with `captioner local up` (or check --endpoint-url / AWS_ENDPOINT_URL)"
        )
    return f"cannot reach {url}: check your network, --region and --endpoint-url"


def _client_error(exc: ClientError) -> str:
    err = exc.response.get("Error", {})
    code = str(err.get("Code", "")) or "Error"
    message = str(err.get("Message", "")).strip() or code
    op = exc.operation_name
    if code == "NoSuchBucket":
        name = err.get("BucketName")
        what = f"bucket {name}" if name else "the bucket"
        return f"{what} does not exist (check the s3:// URL or --bucket)"
    if code == "ResourceNotFoundException":
        return f"not found: {message} (check --table / CAPTIONS_TABLE)"
    if code in _QUEUE_MISSING:
        return f"queue not found: {message} (check --queue-url / --dlq-url)"
    if code in _CREDENTIAL_CODES:
        return f"AWS rejected the credentials ({code}): {message}"
    if code in _DENIED_CODES:
        return f"access denied to {op}: {message}"
    return f"{op} failed ({code}): {message}"
