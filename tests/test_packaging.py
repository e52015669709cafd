"""The distribution: the function package stands alone, the Lambda's requirements come from
pyproject.toml, and `pip install .` in a fresh venv gives a working `captioner`."""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FUNCTION_PACKAGE = ROOT / "functions" / "captioner"
TOOL_LIBRARIES = ("typer", "rich", "moto", "yaml", "skimage", "captioner_tools")


def _name(requirement: str) -> str:
    """The normalised project name of a requirement line ("Pillow[x]==1" → "pillow")."""
    return re.split(r"[\[=<>!~; ]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def _requirements(name: str) -> list[str]:
    lines = (ROOT / "functions" / name).read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def test_lambda_requirements_are_pyprojects_dependencies_minus_the_tools_and_the_layer():
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    excluded = set(pyproject["tool"]["captioner"]["not-in-lambda"])
    layer = set(pyproject["tool"]["captioner"]["offline-model-layer"])
    dependencies = pyproject["project"]["dependencies"]
    assert _requirements("requirements.txt") == [
        d for d in dependencies if _name(d) not in excluded | layer
    ]
    assert _requirements("requirements-offline-model.txt") == [
        d for d in dependencies if _name(d) in layer
    ]
    assert (excluded | layer) <= {_name(d) for d in dependencies}
    assert layer == {"onnxruntime", "numpy"}


def _function_modules() -> list[str]:
    return sorted(
        ".".join(path.relative_to(FUNCTION_PACKAGE.parent).with_suffix("").parts).removesuffix(
            ".__init__"
        )
        for path in FUNCTION_PACKAGE.rglob("*.py")
    )


def test_no_module_of_the_function_package_imports_a_tool_library():
    """At the top or inside a function: the source says what may be imported at all."""
    found = []
    for path in FUNCTION_PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            found += [(path.name, n) for n in names if n.split(".")[0] in TOOL_LIBRARIES]
    assert found == []


def test_every_module_of_the_function_package_imports_without_the_tools():
    """In a fresh interpreter where the tool libraries cannot be imported (as in Lambda)."""
    modules = _function_modules()
    assert "captioner.handler" in modules and "captioner.providers.local" in modules
    probe = (
        "import importlib, sys\n"
        f"for name in {TOOL_LIBRARIES!r}:\n"
        "    sys.modules[name] = None  # importing it raises ImportError\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(FUNCTION_PACKAGE.parent)}
    proc = subprocess.run(
        [sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stderr


def _copy_sources(target: Path) -> Path:
    """What the distribution is built from, copied so the build leaves the checkout alone."""
    target.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, target / name)
    shutil.copytree(FUNCTION_PACKAGE, target / "functions" / "captioner", ignore=ignore)
    shutil.copytree(ROOT / "src", target / "src", ignore=ignore)
    return target


@pytest.mark.slow
def test_pip_install_in_a_fresh_venv_gives_a_working_cli(tmp_path):
    """No --system-site-packages, no --no-deps: pip resolves the default dependencies (from
    its cache or the index) as a user's `pip install .` does."""
    source = _copy_sources(tmp_path / "source")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=60)
    install = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet",
         "--disable-pip-version-check", "--no-compile", str(source)],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert install.returncode == 0, install.stdout + install.stderr
    (site,) = (venv / "lib").glob("python3.*/site-packages")
    for package in ("captioner", "captioner_tools"):  # both promise checked types
        assert (site / package / "py.typed").is_file(), package
    script = venv / "bin" / "captioner"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "PYTHON"))}
    env |= {"COLUMNS": "120", "NO_COLOR": "1"}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(script), *args], env=env, cwd=tmp_path, capture_output=True, text=True,
            timeout=60, check=False,
        )  # fmt: skip

    shown = run("--help")
    assert shown.returncode == 0, shown.stdout + shown.stderr
    for command in ("demo", "caption", "get", "list", "search", "status", "backfill", "local"):
        assert f" {command} " in shown.stdout
    # The local stack is the 'local' extra: without it, one line says how to get it.
    demo = run("demo")
    assert demo.returncode == 1 and "Traceback" not in demo.stderr
    assert demo.stderr.strip() == (
        "error: the local stack needs the 'local' extra: pip install 'captioner[local]'"
    )
