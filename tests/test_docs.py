"""The docs site: its reference pages are what scripts/gen_docs.py writes from config.py and
the CLI (so they cannot drift), and ``mkdocs build --strict`` passes offline (a broken link,
anchor or nav entry fails it)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT / "docs" / "reference"


def _gen_docs():
    spec = importlib.util.spec_from_file_location("gen_docs", ROOT / "scripts" / "gen_docs.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_generated_reference_pages_are_up_to_date(tmp_path):
    written = _gen_docs().write(tmp_path)
    assert {p.name for p in written} == {"configuration.md", "cli.md"}
    for page in written:
        committed = REFERENCE / page.name
        assert committed.read_text(encoding="utf-8") == page.read_text(encoding="utf-8"), (
            f"docs/reference/{page.name} is stale: run .venv/bin/python scripts/gen_docs.py"
        )


def test_the_cli_reference_lists_every_command_and_option():
    text = (REFERENCE / "cli.md").read_text(encoding="utf-8")
    for heading in ("`captioner list`", "`captioner backfill`", "`captioner local up`"):
        assert f" {heading}\n" in text, heading
    assert "`--engine`" in text and "`--version`" in text


def test_the_site_builds_strictly_without_warnings(tmp_path):
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(tmp_path / "site")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "WARNING" not in result.stdout + result.stderr, result.stdout + result.stderr
    assert (tmp_path / "site" / "reference" / "configuration" / "index.html").is_file()
    assert "fonts.googleapis.com" not in (tmp_path / "site" / "index.html").read_text()
