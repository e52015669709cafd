"""Comments and docstrings cite only documents that are in the repository."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SOURCES = ("functions", "src", "scripts", "tests")
CITED_DOCUMENT = re.compile(r"[A-Za-z0-9_./-]+\.md\b")


def test_every_document_the_code_cites_is_in_the_repository():
    documents = [p.relative_to(ROOT).as_posix() for p in _documents()]
    missing = []
    for folder in SOURCES:
        for path in (ROOT / folder).rglob("*.py"):
            for cited in CITED_DOCUMENT.findall(path.read_text(encoding="utf-8")):
                if not any(doc == cited or doc.endswith("/" + cited) for doc in documents):
                    missing.append(f"{path.relative_to(ROOT)}: {cited}")
    assert "docs/modelslab.md" in documents
    assert missing == []


def _documents() -> list[Path]:
    """Markdown files of the repository (not of .venv, .tools or other hidden folders)."""
    top = [p for p in ROOT.iterdir() if not p.name.startswith(".")]
    return [p for p in top if p.suffix == ".md"] + [
        doc for folder in top if folder.is_dir() for doc in folder.rglob("*.md")
    ]
