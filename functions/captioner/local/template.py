"""Read template.yaml, the one source of truth for the stack's resources.

The local stack and the tests create their bucket, queues and table from these properties
rather than from a second hand-written copy, so a change to the template is followed.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import yaml

_INTRINSICS = {
    "Ref": "Ref", "Condition": "Condition", "GetAtt": "Fn::GetAtt",
}  # fmt: skip


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
    """template.yaml at the repository root (functions/captioner/local → ../../..)."""
    return Path(__file__).resolve().parents[3] / "template.yaml"


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


def table_definition(path: Path | None = None) -> dict[str, Any]:
    """CreateTable arguments for CaptionsTable (keys, attributes, indexes) from the template."""
    props = properties("CaptionsTable", path)
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
