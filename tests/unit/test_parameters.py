"""Template parameter values refused as CloudFormation refuses them, one line per problem."""

from __future__ import annotations

from typing import Any

import pytest

from captioner_tools.parameters import ParameterError, check_parameters, parameter_problems

DECLARED: dict[str, Any] = {
    "Provider": {"Type": "String", "Default": "a", "AllowedValues": ["a", "b"]},
    "Count": {"Type": "Number", "Default": 5, "MinValue": 1, "MaxValue": 10},
    "Days": {"Type": "Number", "Default": 30, "AllowedValues": [1, 30]},
    "Arn": {
        "Type": "String",
        "Default": "",
        "AllowedPattern": "^$|^arn:[a-z]+$",
        "ConstraintDescription": "must be empty or an ARN",
    },
    "Code": {"Type": "String", "Default": "x", "AllowedPattern": "[a-z]+", "MaxLength": 3},
    "Name": {"Type": "String", "Default": "n", "MinLength": 1},
    "Names": {"Type": "CommaDelimitedList", "Default": "", "AllowedPattern": "^[a-z]*$"},
    "Sizes": {"Type": "List<Number>", "Default": "1"},
    "Required": {"Type": "String"},
}
GIVEN = {"Required": "r"}


def problems(**values: Any) -> list[str]:
    return parameter_problems(DECLARED, {**GIVEN, **values})


def test_valid_values_of_every_kind_pass() -> None:
    assert problems(Provider="b", Count="10", Days=1, Arn="arn:aws", Code="abc", Names="x,y",
                    Sizes="1,2.5") == []  # fmt: skip


def test_numbers_are_numbers_within_their_bounds() -> None:
    assert problems(Count="abc") == ["parameter Count='abc' must be a number"]
    assert problems(Count="nan") == ["parameter Count='nan' must be a number"]
    assert problems(Count="0") == ["parameter Count='0' must be a number not less than 1"]
    assert problems(Count="11") == ["parameter Count='11' must be a number not greater than 10"]
    assert problems(Days="2") == ["parameter Days='2' must be one of 1, 30"]
    assert problems(Sizes="1,x") == ["parameter Sizes='1,x' must be a number"]


def test_strings_match_their_values_pattern_and_lengths() -> None:
    assert problems(Provider="c") == ["parameter Provider='c' must be one of a, b"]
    assert problems(Arn="nope") == ["parameter Arn='nope' must be empty or an ARN"]
    # the pattern must match the whole value, as in CloudFormation; no description: the pattern
    assert problems(Code="ab1") == ["parameter Code='ab1' must match the pattern [a-z]+"]
    assert problems(Code="abcd") == ["parameter Code='abcd' must be at most 3 characters long"]
    assert problems(Name="") == ["parameter Name='' must be at least 1 characters long"]


def test_a_list_is_checked_item_by_item() -> None:
    assert problems(Names="ok,Bad") == ["parameter Names='ok,Bad' must match the pattern ^[a-z]*$"]


def test_unknown_names_and_missing_values_are_refused() -> None:
    assert parameter_problems(DECLARED, {"Nope": "1"}) == [
        "parameter Nope does not exist in the template",
        "parameter Required must have a value (it has no default)",
    ]


def test_check_raises_one_error_listing_every_problem() -> None:
    with pytest.raises(ParameterError) as caught:
        check_parameters(DECLARED, {**GIVEN, "Provider": "c", "Count": "x"})
    assert caught.value.problems == [
        "parameter Provider='c' must be one of a, b",
        "parameter Count='x' must be a number",
    ]
    assert str(caught.value).splitlines() == caught.value.problems  # a line each
