"""The settings declared in config.py are the only source of names, defaults and bounds:
the README's "Function environment" table and template.yaml are checked against them."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from cfnlint.decode import cfn_yaml

from captioner.config import SETTINGS, SETTINGS_BY_FIELD, Config, Setting
from captioner.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
TEMPLATE = ROOT / "template.yaml"
BY_ENV = {s.env: s for s in SETTINGS}


def _number(value: float) -> str:
    return f"{value:g}"


def readme_row(spec: Setting) -> str:
    """The README's table row of one setting."""
    if spec.required:
        default = "— (required)"
    elif spec.default is None:
        default = "—"
    elif isinstance(spec.default, tuple):
        default = ", ".join(f"`{v}`" for v in spec.default) or "empty"
    elif isinstance(spec.default, float):
        default = f"`{_number(spec.default)}`"
    else:
        default = f"`{spec.default}`"
    return f"| `{spec.env}` | {default} | {spec.bounds or '—'} | {spec.meaning} |"


def readme_rows() -> list[str]:
    """The rows of the table under "Function environment", as written."""
    text = README.read_text(encoding="utf-8")
    start = text.index("Function environment")
    rows = re.findall(r"^\|.*\|$", text[start:].split("\n\n", 2)[1], re.M)
    assert rows[0].startswith("| variable | default | allowed | meaning |"), rows[0]
    return rows[2:]


def test_readme_documents_every_setting_as_declared():
    expected = [readme_row(s) for s in SETTINGS]
    ours = [r for r in readme_rows() if "POWERTOOLS_" not in r]  # Powertools' own variables
    assert ours == expected, (
        "README's Function environment table differs from captioner/config.py; "
        "its rows should read:\n" + "\n".join(expected)
    )


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return cfn_yaml.load(str(TEMPLATE))


def _variables(template: dict[str, Any]) -> dict[str, Any]:
    return template["Resources"]["CaptionFunction"]["Properties"]["Environment"]["Variables"]


# The deployed function turns these on through the template; run outside it (tests, a
# bare `App.from_env`) the function's own default is off, on purpose.
ON_IN_THE_TEMPLATE = {"CAPTION_PROVIDER_CONCURRENCY"}
# The template raises these above the function's default because it turns the leases on:
# without them the default keeps one instance under the smallest ModelsLab plan.
RAISED_WITH_THE_LEASES = {"CAPTION_PROVIDER_SLOTS"}


def test_the_templates_defaults_are_the_declared_defaults(template):
    params = template["Parameters"]
    checked = []
    for name, value in _variables(template).items():
        spec = BY_ENV.get(name)
        if spec is None:
            continue
        if isinstance(value, dict):
            param = params.get(value.get("Ref", ""))
            if param is None:
                continue  # a resource's name (the table): no default to compare
            if name in ON_IN_THE_TEMPLATE:
                assert spec.read({name: str(param["Default"])}) != spec.default, name
            elif "Default" in param:
                default = str(param["Default"])
                assert spec.read({name: default}) == spec.default, (name, default)
            allowed = param.get("AllowedValues")
            if allowed is not None:
                assert set(allowed) <= set(spec.choices), (name, allowed, spec.choices)
            if "MinValue" in param:
                assert spec.low is None or param["MinValue"] >= spec.low, name
            if "MaxValue" in param:
                assert spec.high is None or param["MaxValue"] <= spec.high, name
        elif name in RAISED_WITH_THE_LEASES:
            assert spec.read({name: str(value)}) > spec.default, (name, value)
        else:  # a literal: the template may only restate the default
            assert spec.read({name: str(value)}) == spec.default, (name, value)
        checked.append(name)
    assert "CAPTION_LENGTH" in checked and "CAPTION_BATCH_CONCURRENCY" in checked, checked


def test_an_unset_variable_takes_its_declared_default():
    config = Config.from_env({"CAPTIONS_TABLE": "t"})
    for name, spec in SETTINGS_BY_FIELD.items():
        if not spec.required:
            assert getattr(config, name) == spec.default, spec.env


CONSTRAINED = [s for s in SETTINGS if s.kind is not str or s.choices or s.max_length or s.pattern]


@pytest.mark.parametrize("spec", CONSTRAINED, ids=lambda s: s.env)
def test_a_malformed_value_fails_at_start_up_naming_its_variable(spec):
    bad = "x" * 200 if spec.kind is str else "Not_A_Number!"
    with pytest.raises(ConfigError, match=spec.env):
        Config.from_env({"CAPTIONS_TABLE": "t", spec.env: bad})


@pytest.mark.parametrize("spec", [s for s in SETTINGS if s.low is not None], ids=lambda s: s.env)
def test_a_value_out_of_bounds_names_its_variable_and_bounds(spec):
    too_low = str(spec.kind(spec.low) - 1)
    with pytest.raises(ConfigError, match=f"{spec.env} must be {spec.bounds}"):
        Config.from_env({"CAPTIONS_TABLE": "t", spec.env: too_low})
