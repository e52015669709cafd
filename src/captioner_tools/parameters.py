"""Template parameter values checked as CloudFormation checks them before it creates anything.

The local stack, the samconfig.toml test and ``captioner doctor`` use it, so a value that AWS
would refuse (``CaptionProvider=foo``, ``MaxReceiveCount=abc``) is refused here too, with one
line naming the parameter, the value and the rule, instead of failing later in a resource.

The rules are the parameter's own declaration: ``Type`` (``String``, ``Number``,
``CommaDelimitedList``, ``List<Number>``), ``AllowedValues``, ``AllowedPattern`` (which must
match the whole value; ``ConstraintDescription`` replaces the pattern in the message, as in
AWS), ``MinLength``/``MaxLength`` and ``MinValue``/``MaxValue``. A parameter without a
``Default`` must be given a value, and a name the template does not declare is refused.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

from captioner_tools.errors import TemplateError


class ParameterError(TemplateError):
    """Parameter values the template refuses; one problem per line of ``problems``."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))  # the CLI prints one error line each
        self.problems = problems


def parameter_problems(declared: Mapping[str, Any], values: Mapping[str, Any]) -> list[str]:
    """What CloudFormation would refuse in ``values`` (overrides by name), one line each."""
    problems = [
        f"parameter {name} does not exist in the template"
        for name in values
        if name not in declared
    ]
    for name, spec in declared.items():
        if name in values:
            problems.extend(_value_problems(name, spec, _text(values[name])))
        elif "Default" not in spec:
            problems.append(f"parameter {name} must have a value (it has no default)")
    return problems


def check_parameters(declared: Mapping[str, Any], values: Mapping[str, Any]) -> None:
    """Raise ``ParameterError`` when ``parameter_problems`` finds any."""
    problems = parameter_problems(declared, values)
    if problems:
        raise ParameterError(problems)


def _text(value: Any) -> str:
    """A value as CloudFormation receives it: a string (a list as its comma-joined items)."""
    if isinstance(value, list | tuple):
        return ",".join(str(v) for v in value)
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def _value_problems(name: str, spec: Mapping[str, Any], value: str) -> list[str]:
    kind = str(spec.get("Type", "String"))
    shown = f"parameter {name}={value!r}"
    if kind == "Number":
        return _number_problems(shown, spec, [value])
    if kind == "List<Number>":
        return _number_problems(shown, spec, value.split(",") if value else [])
    if kind == "CommaDelimitedList":
        # AllowedValues and AllowedPattern apply to each item of a list.
        items = [item.strip() for item in value.split(",")] if value else [""]
        return [p for item in items for p in _string_problems(shown, spec, item, lengths=False)]
    return _string_problems(shown, spec, value, lengths=True)


def _number_problems(shown: str, spec: Mapping[str, Any], items: list[str]) -> list[str]:
    problems: list[str] = []
    for item in items:
        try:
            number = Decimal(item.strip())
        except InvalidOperation:
            return [f"{shown} must be a number"]
        if not number.is_finite():
            return [f"{shown} must be a number"]
        allowed = spec.get("AllowedValues")
        if allowed is not None and number not in {Decimal(str(v)) for v in allowed}:
            problems.append(f"{shown} must be one of {_listing(allowed)}")
        if "MinValue" in spec and number < Decimal(str(spec["MinValue"])):
            problems.append(f"{shown} must be a number not less than {spec['MinValue']}")
        if "MaxValue" in spec and number > Decimal(str(spec["MaxValue"])):
            problems.append(f"{shown} must be a number not greater than {spec['MaxValue']}")
    return problems


def _string_problems(
    shown: str, spec: Mapping[str, Any], value: str, *, lengths: bool
) -> list[str]:
    problems: list[str] = []
    allowed = spec.get("AllowedValues")
    if allowed is not None and value not in {_text(v) for v in allowed}:
        problems.append(f"{shown} must be one of {_listing(allowed)}")
    pattern = spec.get("AllowedPattern")
    if pattern is not None and re.fullmatch(str(pattern), value) is None:
        rule = spec.get("ConstraintDescription") or f"match the pattern {pattern}"
        problems.append(f"{shown} {_must(str(rule))}")
    if lengths and "MinLength" in spec and len(value) < int(spec["MinLength"]):
        problems.append(f"{shown} must be at least {spec['MinLength']} characters long")
    if lengths and "MaxLength" in spec and len(value) > int(spec["MaxLength"]):
        problems.append(f"{shown} must be at most {spec['MaxLength']} characters long")
    return problems


def _must(rule: str) -> str:
    """ "must be empty or ..." as it is; "an email address" → "must be an email address"."""
    return rule if rule.startswith("must ") else f"must {rule}"


def _listing(values: Any) -> str:
    return ", ".join(_text(v) for v in values)
