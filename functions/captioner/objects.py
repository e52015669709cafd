"""S3 adapter: the few object operations the pipeline needs, with plain return types."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

_MISSING = {"404", "NoSuchKey", "NoSuchVersion", "NotFound", "NoSuchBucket"}


class ObjectMissing(Exception):
    """The object (version) no longer exists: it was deleted before we got to it."""


@dataclass(frozen=True)
class ObjectHead:
    version_id: str | None
    etag: str | None
    size: int


class ObjectStore:
    def __init__(self, s3_client: Any) -> None:
        self._s3 = s3_client

    def head(self, bucket: str, key: str, version_id: str | None) -> ObjectHead:
        resp = self._call("head_object", **_ref(bucket, key, version_id))
        vid = resp.get("VersionId")
        return ObjectHead(
            version_id=vid if vid and vid != "null" else None,
            etag=(resp.get("ETag") or "").strip('"') or None,
            size=int(resp.get("ContentLength", 0)),
        )

    def read_prefix(self, bucket: str, key: str, version_id: str | None, length: int) -> bytes:
        """The first ``length`` bytes of the object (a ranged GET; never the whole body)."""
        resp = self._call(
            "get_object", **_ref(bucket, key, version_id), Range=f"bytes=0-{max(length, 1) - 1}"
        )
        with resp["Body"] as body:
            data: bytes = body.read(length)
        return data

    def read_all(self, bucket: str, key: str, version_id: str | None, limit: int) -> bytes:
        """The whole body, refusing more than ``limit`` bytes (for providers that need pixels)."""
        resp = self._call("get_object", **_ref(bucket, key, version_id))
        with resp["Body"] as body:
            data: bytes = body.read(limit + 1)
        if len(data) > limit:
            raise ValueError(f"object grew past {limit} bytes while reading")
        return data

    def presign(self, bucket: str, key: str, version_id: str | None, expires: int) -> str:
        url: str = self._s3.generate_presigned_url(
            "get_object", Params=_ref(bucket, key, version_id), ExpiresIn=expires
        )
        return url

    def get_tags(self, bucket: str, key: str, version_id: str | None) -> list[tuple[str, str]]:
        resp = self._call("get_object_tagging", **_ref(bucket, key, version_id))
        return [(t["Key"], t["Value"]) for t in resp.get("TagSet", [])]

    def put_tags(
        self, bucket: str, key: str, version_id: str | None, tags: list[tuple[str, str]]
    ) -> None:
        tag_set = [{"Key": k, "Value": v} for k, v in tags]
        self._call(
            "put_object_tagging", **_ref(bucket, key, version_id), Tagging={"TagSet": tag_set}
        )

    def delete_tags(self, bucket: str, key: str, version_id: str | None) -> None:
        self._call("delete_object_tagging", **_ref(bucket, key, version_id))

    def _call(self, op: str, **kwargs: Any) -> Any:
        try:
            return getattr(self._s3, op)(**kwargs)
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in _MISSING:
                raise ObjectMissing(f"{kwargs.get('Bucket')}/{kwargs.get('Key')}: {code}") from exc
            raise


def _ref(bucket: str, key: str, version_id: str | None) -> dict[str, str]:
    ref = {"Bucket": bucket, "Key": key}
    if version_id:
        ref["VersionId"] = version_id
    return ref
