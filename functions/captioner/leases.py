"""Provider slots shared by every function instance: one lease item per provider.

``CAPTION_PROVIDER_CONCURRENCY`` (the template's ``ProviderConcurrency``) caps the caption
requests in flight at a provider across the deployment. The template runs that many
instances, each with several requests in flight while leases are free (so one instance can
use every slot when only its batch is queued), so the cap is kept here, in DynamoDB, where
separate processes see the same count.

The item lives in the captions table under a partition no S3 bucket can have (``#slots``:
bucket names cannot contain ``#``), sort key the provider's name. It has no ``status``,
``updated_at`` or ``caption``, so neither index nor ``captioner search`` sees it. Its
``holders`` map names each lease's holder and the wall-clock time (epoch seconds) its lease
ends: an instance that dies holding one stops counting when that time passes.

- take: one conditional ``UpdateItem`` (``SET holders.#h`` if ``size(holders) < limit``,
  or if the holder is in the map already: a retried request), atomic across instances. When the map is full, holders whose lease ended are removed (each
  conditional on the value read) and the take is tried once more.
- give back: one ``UpdateItem`` (``REMOVE holders.#h``).
- room: one strongly consistent ``GetItem``, the cheap poll of an instance waiting for a
  lease (a read costs a fifth of a failed conditional write), at most one per instance every
  ``limits.LEASE_POLL_S``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from botocore.exceptions import ClientError

log = logging.getLogger(__name__)

SLOTS_PARTITION = "#slots"


class SlotLeases:
    """The deployment-wide leases of one provider, in the captions table."""

    def __init__(
        self,
        table_name: str,
        dynamodb_client: Any,
        provider: str,
        limit: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.table_name = table_name
        self.client = dynamodb_client
        self.provider = provider
        self.limit = limit
        self._clock = clock
        self._made = False  # the item and its empty map exist (made once per process)

    @property
    def _key(self) -> dict[str, Any]:
        return {"bucket": {"S": SLOTS_PARTITION}, "key": {"S": self.provider}}

    def take(self, holder: str, until: float) -> bool:
        """A lease for ``holder`` until the epoch time ``until``; False when all are held."""
        for _ in range(2):
            self._make()
            try:
                self.client.update_item(
                    TableName=self.table_name,
                    Key=self._key,
                    UpdateExpression="SET holders.#h = :until",
                    # a retried request whose first try took the lease finds it held
                    ConditionExpression="attribute_exists(holders) AND "
                    "(size(holders) < :limit OR attribute_exists(holders.#h))",
                    ExpressionAttributeNames={"#h": holder},
                    ExpressionAttributeValues={
                        ":until": {"N": _epoch(until)},
                        ":limit": {"N": str(self.limit)},
                    },
                    ReturnValuesOnConditionCheckFailure="ALL_OLD",
                )
                return True
            except ClientError as exc:
                if _code(exc) != "ConditionalCheckFailedException":
                    raise
                item = exc.response.get("Item") or {}
                if "holders" not in item:  # the item was removed meanwhile: make it again
                    self._made = False
                    continue
                if not self._clear_ended(item["holders"].get("M", {})):
                    return False
        return False

    def give_back(self, holder: str) -> None:
        self.client.update_item(
            TableName=self.table_name,
            Key=self._key,
            UpdateExpression="REMOVE holders.#h",
            ExpressionAttributeNames={"#h": holder},
        )

    def has_room(self) -> bool:
        """Fewer live leases than the limit (ended ones do not count)."""
        now = self._clock()
        return sum(1 for ends in self.held().values() if ends > now) < self.limit

    def held(self) -> dict[str, float]:
        """Holder → lease end (``captioner status`` and tests)."""
        item = self.client.get_item(
            TableName=self.table_name, Key=self._key, ConsistentRead=True
        ).get("Item")
        holders = (item or {}).get("holders", {}).get("M", {})
        return {name: float(v["N"]) for name, v in holders.items()}

    def _make(self) -> None:
        if self._made:
            return
        self.client.update_item(
            TableName=self.table_name,
            Key=self._key,
            UpdateExpression="SET holders = if_not_exists(holders, :empty)",
            ExpressionAttributeValues={":empty": {"M": {}}},
        )
        self._made = True

    def _clear_ended(self, holders: dict[str, Any]) -> bool:
        """Remove the leases that ended (their holder died holding them); True if any went."""
        now, cleared = self._clock(), False
        for name, value in holders.items():
            if float(value["N"]) > now:
                continue
            try:
                self.client.update_item(
                    TableName=self.table_name,
                    Key=self._key,
                    UpdateExpression="REMOVE holders.#h",
                    ConditionExpression="holders.#h = :until",
                    ExpressionAttributeNames={"#h": name},
                    ExpressionAttributeValues={":until": value},
                )
                log.warning("provider slot lease of %s ended unreturned: cleared", name)
                cleared = True
            except ClientError as exc:
                if _code(exc) != "ConditionalCheckFailedException":
                    raise
                cleared = True  # another instance cleared or renewed it: look again
        return cleared


def _epoch(value: float) -> str:
    return f"{value:.3f}"


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))
