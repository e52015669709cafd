"""moto 5.2.5's ``TransactWriteItems`` with item-level rollback, for the local stack.

moto keeps a deep copy of the whole table for every item of a transaction, to roll back on
failure: with the word index every caption is a transaction of 10-20 items, so a table of
4,000 items made each caption take 4 s (and it grows with the table). This version keeps a
copy of only the items the transaction touches, and otherwise does what moto does: the
same checks, conditions, ``ALL_OLD`` on a failed condition, cancellation reasons, and all
or nothing. ``install`` is idempotent; ``tests/tools/test_local_stack.py`` checks it.
"""

from __future__ import annotations

import copy
from typing import Any

from captioner_tools.errors import LocalStackError

_installed = False


def install() -> None:
    global _installed
    if _installed:
        return
    from moto.dynamodb.models import DynamoDBBackend

    if not callable(getattr(DynamoDBBackend, "transact_write_items", None)):
        raise LocalStackError(
            "this moto has no DynamoDBBackend.transact_write_items: "
            "captioner_tools.local.mototransactions needs the moto version pyproject pins"
        )
    DynamoDBBackend.transact_write_items = transact_write_items  # type: ignore[method-assign]
    _installed = True


def _key_of(backend: Any, op_type: str, op: dict[str, Any]) -> dict[str, Any]:
    if op_type != "Put":
        return dict(op["Key"])
    table = backend.get_table(op["TableName"])
    key = {table.hash_key_attr: op["Item"][table.hash_key_attr]}
    if table.range_key_attr is not None:
        key[table.range_key_attr] = op["Item"][table.range_key_attr]
    return key


def transact_write_items(self: Any, transact_items: list[dict[str, Any]]) -> None:
    from moto.dynamodb.comparisons import get_filter_expression
    from moto.dynamodb.exceptions import (
        ConditionalCheckFailed,
        MockValidationException,
        MultipleTransactionsException,
        TooManyTransactionsException,
        TransactionCanceledException,
        TransactWriteSingleOpException,
    )

    if len(transact_items) > 100:
        raise TooManyTransactionsException()
    before: list[tuple[str, dict[str, Any], Any]] = []  # (table, key, item before or None)
    seen: set[tuple[str, str]] = set()
    errors: list[tuple[Any, Any, Any]] = []
    for item in transact_items:
        if len(item) > 1:
            raise TransactWriteSingleOpException
        original: dict[str, Any] | None = None
        try:
            op_type, op = next(iter(item.items()))
            if op_type not in {"ConditionCheck", "Put", "Delete", "Update"}:
                raise ValueError("Unsupported transaction operation")
            table_name = op["TableName"]
            key = _key_of(self, op_type, op)
            ident = (str(table_name), str(dict(sorted(key.items()))))
            if ident in seen:
                raise MultipleTransactionsException()
            seen.add(ident)
            current = self.get_item(table_name, key)
            names, values = op.get("ExpressionAttributeNames"), op.get("ExpressionAttributeValues")
            condition = op.get("ConditionExpression")
            if condition is not None and not (
                get_filter_expression(condition, names, values).expr(current)
            ):
                if op.get("ReturnValuesOnConditionCheckFailure") == "ALL_OLD" and current:
                    original = current.to_json()["Attributes"]
                raise ConditionalCheckFailed(item=original)
            if op_type != "ConditionCheck":
                before.append((table_name, key, copy.deepcopy(current)))
            if op_type == "Put":
                self.put_item(table_name, op["Item"], condition_expression=condition,
                              expression_attribute_names=names,
                              expression_attribute_values=values)  # fmt: skip
            elif op_type == "Delete":
                self.delete_item(table_name, key, condition_expression=condition,
                                 expression_attribute_names=names,
                                 expression_attribute_values=values)  # fmt: skip
            elif op_type == "Update":
                self.update_item(table_name, key, update_expression=op["UpdateExpression"],
                                 condition_expression=condition,
                                 expression_attribute_names=names,
                                 expression_attribute_values=values)  # fmt: skip
            errors.append((None, None, None))
        except (MultipleTransactionsException, MockValidationException):
            _roll_back(self, before)
            raise
        except ConditionalCheckFailed as exc:
            errors.append(("ConditionalCheckFailed", str(exc.message), original))
        except Exception as exc:  # as moto: any other failure cancels the transaction
            errors.append((type(exc).__name__, str(exc), original))
    if any(code is not None for code, _, _ in errors):
        _roll_back(self, before)
        raise TransactionCanceledException(errors)


def _roll_back(backend: Any, before: list[tuple[str, dict[str, Any], Any]]) -> None:
    """Put every touched item back as it was, last change first."""
    for table_name, key, item in reversed(before):
        if item is None:
            if backend.get_item(table_name, key) is not None:
                backend.delete_item(table_name, key)
        else:
            backend.put_item(table_name, item.to_json()["Attributes"])
