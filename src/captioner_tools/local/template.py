"""Read template.yaml, the one source of truth for the stack's resources.

The local stack and the tests create their bucket, queues and table from these properties
rather than from a second hand-written copy, so a change to the template is followed.
``StackTemplate`` resolves the intrinsic functions the local stack needs: ``Ref`` to
parameters (``CommaDelimitedList`` ones as lists, as CloudFormation does), to the local
pseudo parameters and to resources it created, ``Fn::If`` and conditions, ``Fn::GetAtt``,
``Fn::Join``/``Fn::Split``/``Fn::Select`` (conditions such as ``HasExistingBuckets`` join a
list parameter) and ``Fn::Sub`` of what it knows. Anything else (IAM, values only a deployed
stack has) has no meaning locally and is left as it is.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from captioner_tools.errors import TemplateError
from captioner_tools.local.defaults import ACCOUNT_ID, REGION
from captioner_tools.parameters import check_parameters

_INTRINSICS = {
    "Ref": "Ref", "Condition": "Condition", "GetAtt": "Fn::GetAtt",
}  # fmt: skip

TEMPLATE_ENV = "CAPTIONER_TEMPLATE"
TEMPLATE_NAME = "template.yaml"


class _CfnLoader(yaml.SafeLoader):
    """A YAML loader that understands CloudFormation's short tags (``!Ref``, ``!Sub``...)."""


def _intrinsic(loader: yaml.SafeLoader, tag_suffix: str, node: yaml.Node) -> dict[str, Any]:
    name = _INTRINSICS.get(tag_suffix, f"Fn::{tag_suffix}")
    if isinstance(node, yaml.ScalarNode):
        value: Any = loader.construct_scalar(node)
        if tag_suffix == "GetAtt":
            value = str(value).split(".", 1)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    return {name: value}


_CfnLoader.add_multi_constructor("!", _intrinsic)


def default_template_path() -> Path:
    """template.yaml at the repository root (src/captioner_tools/local → ../../..)."""
    return Path(__file__).resolve().parents[3] / TEMPLATE_NAME


def resolve_template_path(explicit: str | Path | None = None) -> Path:
    """``--template``, else ``$CAPTIONER_TEMPLATE``, else ./template.yaml, else the repo's.

    The working directory comes before the repository so a user running from their own
    checkout (or a copy with changed parameters) gets the template they are looking at.
    """
    chosen = explicit or os.environ.get(TEMPLATE_ENV) or None
    if chosen:
        path = Path(chosen).expanduser()
        if not path.is_file():
            raise TemplateError(f"template not found: {path}")
        return path.resolve()
    for path in (Path.cwd() / TEMPLATE_NAME, default_template_path()):
        if path.is_file():
            return path.resolve()
    raise TemplateError(
        f"{TEMPLATE_NAME} not found in {Path.cwd()} or the repository: "
        f"pass --template or set {TEMPLATE_ENV}"
    )


@cache
def load_template(path: Path | None = None) -> dict[str, Any]:
    path = path or default_template_path()
    if not path.is_file():
        raise FileNotFoundError(f"template not found: {path}")
    with path.open(encoding="utf-8") as fh:
        return yaml.load(fh, Loader=_CfnLoader)  # noqa: S506 - SafeLoader subclass


def resource(name: str, path: Path | None = None) -> dict[str, Any]:
    return load_template(path)["Resources"][name]


def properties(name: str, path: Path | None = None) -> dict[str, Any]:
    return resource(name, path).get("Properties", {})


def table_definition(path: Path | None = None, logical_id: str = "CaptionsTable") -> dict[str, Any]:
    """CreateTable arguments for CaptionsTable (keys, attributes, indexes) from the template."""
    props = properties(logical_id, path)
    indexes = [
        {"IndexName": g["IndexName"], "KeySchema": g["KeySchema"], "Projection": g["Projection"]}
        for g in props.get("GlobalSecondaryIndexes", [])
    ]
    spec: dict[str, Any] = {
        "AttributeDefinitions": props["AttributeDefinitions"],
        "KeySchema": props["KeySchema"],
        "BillingMode": "PAY_PER_REQUEST",
    }
    if indexes:
        spec["GlobalSecondaryIndexes"] = indexes
    return spec


def parameter_default(name: str, path: Path | None = None) -> Any:
    return load_template(path)["Parameters"][name].get("Default")


# -- resolving intrinsics --------------------------------------------------------------------

_NO_VALUE = object()  # AWS::NoValue: the property disappears
_PLAIN = object()  # a one-key mapping that is not an intrinsic function
_CONDITION_FUNCTIONS = ("Fn::Equals", "Fn::Not", "Fn::And", "Fn::Or", "Condition")
_LIST_TYPES = ("CommaDelimitedList", "List<")  # parameter types whose Ref is a list
_SUB_VARIABLE = re.compile(r"\$\{([^}]*)\}")
# The pseudo parameters of the local stack (AWS::StackName is added per stack).
LOCAL_PSEUDO_PARAMETERS = {
    "AWS::AccountId": ACCOUNT_ID,
    "AWS::Partition": "aws",
    "AWS::Region": REGION,
    "AWS::URLSuffix": "amazonaws.com",
}


@dataclass(frozen=True)
class SqsEventSource:
    """The function's SQS event (SAM ``Events: {Type: SQS}``), as the poller needs it."""

    queue: str  # logical id of the queue
    batch_size: int = 10
    batching_window_s: float = 0.0
    max_concurrency: int = 2
    report_batch_item_failures: bool = False


@dataclass(frozen=True)
class FunctionSpec:
    logical_id: str
    handler: str  # "module.function", imported by the poller
    timeout_s: int
    memory_mb: int
    environment: dict[str, str]
    events: tuple[SqsEventSource, ...]


class StackTemplate:
    """A template with parameter values (defaults overlaid by overrides)."""

    def __init__(
        self,
        path: Path | None = None,
        parameters: Mapping[str, Any] | None = None,
        stack_name: str = "captioner",
    ) -> None:
        self.path = path or default_template_path()
        self.doc = load_template(self.path)
        declared = self.doc.get("Parameters", {})
        check_parameters(declared, parameters or {})  # as CloudFormation would, one line each
        self.parameters = {name: spec.get("Default") for name, spec in declared.items()}
        self.parameters.update(parameters or {})
        for name, spec in declared.items():
            if str(spec.get("Type", "")).startswith(_LIST_TYPES):
                self.parameters[name] = _as_list(self.parameters[name])
        self.pseudo = {**LOCAL_PSEUDO_PARAMETERS, "AWS::StackName": stack_name}

    def parameter(self, name: str) -> Any:
        return self.parameters[name]

    def creates(self, logical_id: str) -> bool:
        """Whether the resource exists with these parameters (its ``Condition`` holds)."""
        condition = self.doc["Resources"][logical_id].get("Condition")
        return condition is None or self.condition(condition)

    def properties(self, logical_id: str) -> dict[str, Any]:
        try:
            res = self.doc["Resources"][logical_id]
        except KeyError:
            raise TemplateError(f"the template has no resource {logical_id}") from None
        return res.get("Properties", {})

    def resources_of_type(self, type_name: str) -> list[str]:
        """The logical ids of that type that exist with these parameters."""
        return [
            k
            for k, v in self.doc["Resources"].items()
            if v.get("Type") == type_name and self.creates(k)
        ]

    def resolve(self, node: Any, refs: Mapping[str, Any] | None = None) -> Any:
        """``node`` with parameters, conditions and the given resource ``refs`` substituted.

        ``refs`` maps logical ids (``Ref``) and ``"LogicalId.Attribute"`` (``Fn::GetAtt``) to
        the values of the resources created locally. Unresolvable intrinsics stay as they are.
        """
        value = self._resolve(node, refs or {})
        return None if value is _NO_VALUE else value

    def condition(self, name: str) -> bool:
        return bool(self._resolve(self.doc.get("Conditions", {})[name], {}))

    def _resolve(self, node: Any, refs: Mapping[str, Any]) -> Any:
        if isinstance(node, list):
            items = [self._resolve(v, refs) for v in node]
            return [v for v in items if v is not _NO_VALUE]
        if not isinstance(node, dict):
            return node
        if len(node) == 1:
            fn, arg = next(iter(node.items()))
            resolved = self._intrinsic(fn, arg, refs)
            if resolved is not _PLAIN:
                return resolved
        values = {k: self._resolve(v, refs) for k, v in node.items()}
        return {k: v for k, v in values.items() if v is not _NO_VALUE}

    def _intrinsic(self, fn: str, arg: Any, refs: Mapping[str, Any]) -> Any:
        if fn == "Ref":
            if arg == "AWS::NoValue":
                return _NO_VALUE
            if arg in self.parameters:
                return self.parameters[arg]
            if arg in self.pseudo:
                return self.pseudo[arg]
            return refs.get(arg, {fn: arg})
        if fn == "Fn::GetAtt":
            return refs.get(".".join(arg), {fn: arg})
        if fn == "Fn::If":
            cond, if_true, if_false = arg
            return self._resolve(if_true if self.condition(cond) else if_false, refs)
        if fn in _CONDITION_FUNCTIONS:
            return self._condition_function(fn, arg, refs)
        if fn in ("Fn::Join", "Fn::Split", "Fn::Select"):
            return self._list_function(fn, arg, refs)
        if fn == "Fn::Sub":
            return self._sub(arg, refs)
        return {fn: arg} if fn.startswith("Fn::") else _PLAIN

    def _list_function(self, fn: str, arg: Any, refs: Mapping[str, Any]) -> Any:
        """Fn::Join, Fn::Split and Fn::Select once their arguments are plain values (a
        resource's attribute may not be: then the function stays as it is)."""
        first, second = (self._resolve(a, refs) for a in arg)
        if fn == "Fn::Join" and isinstance(first, str) and _strings(second):
            return first.join(second)
        if fn == "Fn::Split" and isinstance(first, str) and isinstance(second, str):
            return second.split(first)
        if fn == "Fn::Select" and isinstance(second, list) and str(first).isdigit():
            index = int(first)
            if index >= len(second):
                raise TemplateError(f"Fn::Select index {index} out of range in {arg!r}")
            return second[index]
        return {fn: arg}

    def _sub(self, arg: Any, refs: Mapping[str, Any]) -> Any:
        """Fn::Sub with the parameters, pseudo parameters, ``refs`` and its own variables;
        left as it is when one of its variables is none of these."""
        text, own = (arg, {}) if isinstance(arg, str) else (arg[0], arg[1])
        variables = {k: self._resolve(v, refs) for k, v in own.items()}
        unknown = False

        def value(match: re.Match[str]) -> str:
            nonlocal unknown
            name = match.group(1)
            if name.startswith("!"):
                return "${" + name[1:] + "}"  # ${!Literal} is written as ${Literal}
            for source in (variables, self.parameters, self.pseudo, refs):
                found = source.get(name)
                if isinstance(found, str | int) and not isinstance(found, bool):
                    return str(found)
            unknown = True
            return match.group(0)

        result = _SUB_VARIABLE.sub(value, str(text))
        return {"Fn::Sub": arg} if unknown else result

    def _condition_function(self, fn: str, arg: Any, refs: Mapping[str, Any]) -> bool:
        if fn == "Condition":
            return self.condition(arg)
        values = [self._resolve(a, refs) for a in arg]
        if fn == "Fn::Equals":
            return str(values[0]) == str(values[1])
        if fn == "Fn::Not":
            return not values[0]
        return all(values) if fn == "Fn::And" else any(values)

    # -- what the local stack reads ---------------------------------------------------------

    def function(self, logical_id: str, refs: Mapping[str, Any] | None = None) -> FunctionSpec:
        """A SAM function's handler, limits, environment and SQS events (Globals applied)."""
        globals_ = self.doc.get("Globals", {}).get("Function", {})
        props = self.resolve({**globals_, **self.properties(logical_id)}, refs)
        variables = props.get("Environment", {}).get("Variables", {})
        events = tuple(
            _sqs_event(ev.get("Properties", {}))
            for ev in props.get("Events", {}).values()
            if ev.get("Type") == "SQS"
        )
        return FunctionSpec(
            logical_id=logical_id,
            handler=str(props["Handler"]),
            timeout_s=int(props.get("Timeout", 3)),
            memory_mb=int(props.get("MemorySize", 128)),
            environment={k: _env_value(v) for k, v in variables.items()},
            events=events,
        )

    def outputs(self, refs: Mapping[str, Any]) -> dict[str, str]:
        """The stack outputs whose values resolve with ``refs`` (others are left out)."""
        resolved = {
            name: self.resolve(spec.get("Value"), refs)
            for name, spec in self.doc.get("Outputs", {}).items()
        }
        return {k: str(v) for k, v in resolved.items() if isinstance(v, str | int)}


def _sqs_event(props: Mapping[str, Any]) -> SqsEventSource:
    queue = props.get("Queue")
    if isinstance(queue, dict) and "Fn::GetAtt" in queue:
        queue = queue["Fn::GetAtt"][0]
    return SqsEventSource(
        queue=str(queue),
        batch_size=int(props.get("BatchSize", 10)),
        batching_window_s=float(props.get("MaximumBatchingWindowInSeconds", 0)),
        max_concurrency=int(props.get("ScalingConfig", {}).get("MaximumConcurrency", 2)),
        report_batch_item_failures="ReportBatchItemFailures"
        in props.get("FunctionResponseTypes", []),
    )


def _as_list(value: Any) -> list[str]:
    """A list parameter's value: "a, b" → ["a", "b"]; empty → [""] (as CloudFormation)."""
    if isinstance(value, list | tuple):
        return [str(v).strip() for v in value]
    return [member.strip() for member in str(value if value is not None else "").split(",")]


def _strings(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def _env_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value) if not isinstance(value, dict) else ""
