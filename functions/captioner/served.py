"""Which buckets this deployment serves: ``UploadBucket`` and the ``ExistingBucketNames``.

One small module so every entry point (the caption function, the batch backfill function)
asks the same question the same way. The template passes the list as one comma-separated
variable; blanks are dropped (an empty ``ExistingBucketNames`` joins to a trailing comma).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ServedBuckets:
    names: frozenset[str]

    @classmethod
    def parse(cls, raw: str) -> ServedBuckets:
        return cls(frozenset(part.strip() for part in raw.split(",") if part.strip()))

    def __contains__(self, bucket: object) -> bool:
        return isinstance(bucket, str) and bucket in self.names

    def describe(self) -> str:
        return ", ".join(sorted(self.names)) or "none"
