"""Resolve template.yaml for given parameter values, the way CloudFormation would.

Conditions are evaluated, ``Fn::If`` picks its branch, ``AWS::NoValue`` disappears,
resources whose condition is false are dropped, and ``Ref``/``Fn::Sub``/``Fn::Join``/
``Fn::Split``/``Fn::Select`` are computed from the parameters and pseudo parameters of an
example stack. What only exists after deployment (``Ref`` to a resource, ``Fn::GetAtt``)
becomes a ``${LogicalId}`` / ``${LogicalId.Attribute}`` placeholder, as in ``Fn::Sub``.

So a test can state what a stack deployed with ``KmsKeyArn=...`` contains, instead of
reading the ``Fn::If`` structure by hand.
"""

from __future__ import annotations

import re
from typing import Any

EXAMPLE_STACK_ID = (
    "arn:aws:cloudformation:us-east-1:123456789012:stack/captioner/"
    "51af3dc0-da77-11e4-872e-1234567db123"
)
EXAMPLE_PSEUDO = {
    "AWS::AccountId": "123456789012",
    "AWS::Partition": "aws",
    "AWS::Region": "us-east-1",
    "AWS::StackId": EXAMPLE_STACK_ID,
    "AWS::StackName": "captioner",
    "AWS::URLSuffix": "amazonaws.com",
}

_NO_VALUE = object()


class Resolver:
    def __init__(
        self,
        template: dict[str, Any],
        parameters: dict[str, str] | None = None,
        pseudo: dict[str, str] | None = None,
    ) -> None:
        self.template = template
        declared = template.get("Parameters", {})
        unknown = set(parameters or {}) - set(declared)
        assert not unknown, f"not template parameters: {sorted(unknown)}"
        self.values: dict[str, Any] = {**EXAMPLE_PSEUDO, **(pseudo or {})}
        for name, spec in declared.items():
            raw = (parameters or {}).get(name, spec.get("Default", ""))
            if spec["Type"] == "CommaDelimitedList":
                # CloudFormation trims each member
                self.values[name] = [m.strip() for m in str(raw).split(",")]
            else:
                self.values[name] = raw
        self._conditions: dict[str, bool] = {}

    # -- conditions -----------------------------------------------------------------------

    def condition(self, name: str) -> bool:
        if name not in self._conditions:
            self._conditions[name] = bool(self._value(self.template["Conditions"][name]))
        return self._conditions[name]

    # -- the resolved template --------------------------------------------------------------

    def resources(self) -> dict[str, Any]:
        """Every resource that would be created, with its resolved properties."""
        out = {}
        for name, res in self.template["Resources"].items():
            if "Condition" in res and not self.condition(res["Condition"]):
                continue
            out[name] = {**res, "Properties": self.resolve(res.get("Properties", {}))}
        return out

    def resolve(self, node: Any) -> Any:
        value = self._value(node)
        return None if value is _NO_VALUE else value

    def _value(self, node: Any) -> Any:
        if isinstance(node, list):
            return [v for v in (self._value(n) for n in node) if v is not _NO_VALUE]
        if not isinstance(node, dict):
            return node
        if len(node) == 1:
            ((fn, arg),) = node.items()
            if fn == "Ref" or fn == "Condition" or fn.startswith("Fn::"):
                return self._function(fn, arg)
        items = {k: self._value(v) for k, v in node.items()}
        return {k: v for k, v in items.items() if v is not _NO_VALUE}

    def _function(self, fn: str, arg: Any) -> Any:
        if fn == "Ref":
            if arg == "AWS::NoValue":
                return _NO_VALUE
            return self.values.get(arg, "${" + arg + "}")
        if fn == "Fn::GetAtt":
            return "${" + (arg if isinstance(arg, str) else ".".join(arg)) + "}"
        if fn == "Condition":
            return self.condition(arg)
        if fn == "Fn::If":
            name, yes, no = arg
            return self._value(yes if self.condition(name) else no)
        if fn == "Fn::Equals":
            a, b = (self._value(v) for v in arg)
            return str(a) == str(b)
        if fn == "Fn::Not":
            return not self._value(arg[0])
        if fn == "Fn::And":
            return all(self._value(v) for v in arg)
        if fn == "Fn::Or":
            return any(self._value(v) for v in arg)
        if fn == "Fn::Join":
            separator, items = arg[0], self._value(arg[1])
            assert isinstance(separator, str), "Fn::Join's separator must be a literal"
            return separator.join(str(v) for v in items)
        if fn == "Fn::Split":
            separator, text = arg[0], self._value(arg[1])
            assert isinstance(separator, str), "Fn::Split's separator must be a literal"
            return str(text).split(separator)
        if fn == "Fn::Select":
            return self._value(arg[1])[int(self._value(arg[0]))]
        if fn == "Fn::Sub":
            return self._sub(arg)
        raise AssertionError(f"the test resolver does not know {fn}")

    def _sub(self, arg: Any) -> str:
        text, local = (arg, {}) if isinstance(arg, str) else (arg[0], arg[1])
        variables = {k: self._value(v) for k, v in local.items()}

        def one(match: re.Match[str]) -> str:
            name = match[1]
            if name in variables:
                return str(variables[name])
            value = self.values.get(name)
            return "${" + name + "}" if value is None or "." in name else str(value)

        return re.sub(r"\$\{([^}!]+)\}", one, text)


def identity_statements(resources: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(owner, statement) for every identity-based policy statement of resolved resources."""
    found: list[tuple[str, dict[str, Any]]] = []
    for name, res in resources.items():
        props = res.get("Properties", {})
        docs: list[Any] = []
        if res["Type"] == "AWS::IAM::Role":
            docs = [p["PolicyDocument"] for p in props.get("Policies", [])]
        elif res["Type"] in ("AWS::IAM::Policy", "AWS::IAM::ManagedPolicy", "AWS::IAM::RolePolicy"):
            docs = [props["PolicyDocument"]]
        elif res["Type"] == "AWS::Serverless::Function":
            docs = [
                p for p in props.get("Policies", []) if isinstance(p, dict) and "Statement" in p
            ]
        for doc in docs:
            found.extend((name, st) for st in doc["Statement"])
    return found
