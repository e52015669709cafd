"""The daily spend cap: one counter item per UTC day in the captions table.

Before each paid provider request the spend is reserved with one conditional UpdateItem
(``spent_usd + price <= cap``, atomic, so any number of instances never reserve past the
cap); a request that turns out unpaid (429, an error reply, the image refused, a connection
that never reached the provider) gives its reservation back. Polling a queued job is free and
reserves nothing. A reply that timed out may have been charged: its reservation is kept, so
the counter errs towards spending less, never more.

The counter items live in the captions table under a partition key no S3 bucket can have
(``#budget``: bucket names cannot contain ``#``), sort key the UTC day (``2026-11-25``).
They have no ``status`` and no ``updated_at``, so neither index sees them, and no
``caption``, so ``captioner search`` skips them. Attributes: ``spent_usd`` (reserved minus
given back), ``cap_usd`` (the cap at the last reservation), ``reservations``, ``refunds``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from botocore.exceptions import ClientError

from captioner.errors import CaptionerError

BUDGET_PARTITION = "#budget"
# A row parked by the budget has a reason starting with this (the sweep looks for it).
BUDGET_REASON_PREFIX = "daily budget"


class BudgetExhausted(CaptionerError):
    """Today's budget cannot pay for one more request: nothing was reserved or sent."""

    def __init__(self, day: str, spent: Decimal, cap: Decimal) -> None:
        self.day, self.spent, self.cap = day, spent, cap
        super().__init__(self.reason)

    @property
    def reason(self) -> str:
        return (
            f"{BUDGET_REASON_PREFIX} of {_amount(self.cap)} $ reached ({self.spent:.4f} $ spent on "
            f"{self.day} UTC): waits for the next UTC day or a higher DailyBudgetUsd"
        )


@dataclass(frozen=True)
class Reservation:
    day: str
    amount: Decimal


@dataclass(frozen=True)
class DaySpend:
    day: str
    spent_usd: Decimal
    cap_usd: Decimal | None  # the cap at the day's last reservation; None before any
    reservations: int
    refunds: int


def usd(value: float | str | Decimal) -> Decimal:
    """Dollars as an exact decimal (DynamoDB numbers are decimal: no float drift)."""
    return Decimal(str(value)).quantize(Decimal("0.000001"))


class DailyBudget:
    def __init__(
        self,
        table_name: str,
        dynamodb_client: Any,
        cap_usd: float,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.table_name = table_name
        self._db = dynamodb_client
        self.cap = usd(cap_usd)  # 0 = no cap (spend is still counted)
        self._clock = clock or (lambda: datetime.now(UTC))

    @property
    def client(self) -> Any:
        """The DynamoDB client of the captions table (the budget sweep reads it too)."""
        return self._db

    def day(self) -> str:
        return self._clock().astimezone(UTC).strftime("%Y-%m-%d")

    def reserve(self, price_usd: float) -> Reservation | None:
        """Reserve one request's price for today; ``BudgetExhausted`` when it would pass the
        cap. None for a free provider (nothing to count)."""
        price = usd(price_usd)
        if price <= 0:
            return None
        day = self.day()
        if 0 < self.cap < price:  # not even one request fits
            raise BudgetExhausted(day, self.today().spent_usd, self.cap)
        kwargs: dict[str, Any] = {
            "TableName": self.table_name,
            "Key": _key(day),
            "UpdateExpression": "ADD #s :p, #r :one SET #c = :cap",
            "ExpressionAttributeNames": {"#s": "spent_usd", "#r": "reservations", "#c": "cap_usd"},
            "ExpressionAttributeValues": {
                ":p": {"N": str(price)},
                ":one": {"N": "1"},
                ":cap": {"N": str(self.cap)},
            },
        }
        if self.cap > 0:
            kwargs["ConditionExpression"] = "attribute_not_exists(#s) OR #s <= :limit"
            kwargs["ExpressionAttributeValues"][":limit"] = {"N": str(self.cap - price)}
            kwargs["ReturnValuesOnConditionCheckFailure"] = "ALL_OLD"
        try:
            self._db.update_item(**kwargs)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "ConditionalCheckFailedException":
                raise
            spent = exc.response.get("Item", {}).get("spent_usd", {}).get("N", "0")
            raise BudgetExhausted(day, usd(spent), self.cap) from None
        return Reservation(day, price)

    def refund(self, reservation: Reservation | None) -> None:
        """Give an unpaid request's reservation back (to its own day). Best effort: a refund
        that fails leaves the counter high, which only ever spends less."""
        if reservation is None:
            return
        with contextlib.suppress(Exception):
            self._db.update_item(
                TableName=self.table_name,
                Key=_key(reservation.day),
                UpdateExpression="ADD #s :p, #f :one",
                ExpressionAttributeNames={"#s": "spent_usd", "#f": "refunds"},
                ExpressionAttributeValues={
                    ":p": {"N": str(-reservation.amount)},
                    ":one": {"N": "1"},
                },
            )

    def today(self) -> DaySpend:
        return read_day(self.table_name, self._db, self.day())

    def room(self, price_usd: float) -> int | None:
        """How many more requests today's budget pays for; None when unlimited."""
        price = usd(price_usd)
        if self.cap <= 0 or price <= 0:
            return None
        left = self.cap - self.today().spent_usd
        return max(int(left // price), 0)


def read_day(table_name: str, dynamodb_client: Any, day: str) -> DaySpend:
    """One day's counter (zero when nothing was reserved that day)."""
    item = dynamodb_client.get_item(TableName=table_name, Key=_key(day), ConsistentRead=True).get(
        "Item", {}
    )

    def number(name: str) -> Decimal | None:
        value = item.get(name, {}).get("N")
        return Decimal(value) if value is not None else None

    return DaySpend(
        day=day,
        spent_usd=usd(number("spent_usd") or 0),
        cap_usd=number("cap_usd"),
        reservations=int(number("reservations") or 0),
        refunds=int(number("refunds") or 0),
    )


def _key(day: str) -> dict[str, Any]:
    return {"bucket": {"S": BUDGET_PARTITION}, "key": {"S": day}}


def _amount(value: Decimal) -> str:
    """Dollars with two decimals, or as many as a smaller amount needs (0.005, not 0.00)."""
    return f"{value:.2f}" if value == round(value, 2) else format(value.normalize(), "f")
