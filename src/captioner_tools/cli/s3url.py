"""``s3://bucket/key`` arguments."""

from __future__ import annotations

import re
from dataclasses import dataclass

from captioner_tools.errors import CliError

# Bucket naming rules (general purpose buckets), loosely: 3-63 chars, lowercase, digits, . -
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


@dataclass(frozen=True)
class S3Url:
    bucket: str
    key: str = ""  # an object key, or a prefix ("" = the whole bucket)

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.key}"


def parse_s3_url(text: str, *, object_key: bool = False) -> S3Url:
    """``s3://bucket`` or ``s3://bucket/prefix`` (``object_key``: a key is required).
    The key is taken literally, as the AWS CLI does (no URL decoding)."""
    if not text.startswith("s3://"):
        expected = "s3://bucket/key" if object_key else "s3://bucket/prefix"
        raise CliError(f"not an s3:// URL: {text!r} (expected {expected})")
    bucket, _, key = text[len("s3://") :].partition("/")
    if not _BUCKET.match(bucket):
        raise CliError(f"invalid bucket name {bucket!r} in {text!r}")
    if object_key and not key:
        raise CliError(f"{text!r} names a bucket, not an object (expected s3://bucket/key)")
    return S3Url(bucket, key)
