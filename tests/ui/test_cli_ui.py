"""``captioner ui`` as users run it: a process that prints one line with the URL at once (read
here from a pipe), serves the local stack's rows, and stops on Ctrl-C; and the one-line
message without the ``ui`` extra."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from urllib.parse import urlsplit

import httpx
from typer.testing import CliRunner

from captioner_tools.cli.app import app


def test_ui_prints_its_url_on_one_line_and_serves_until_interrupted(photos):
    env = {**os.environ, "AWS_ENDPOINT_URL": photos.endpoint_url, "COLUMNS": "40"}
    for name in ("CAPTIONER_BUCKET", "CAPTIONS_TABLE", "CAPTIONER_QUEUE_URL", "CAPTIONER_DLQ_URL"):
        env.pop(name, None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "captioner_tools.cli", "ui", "--port", "0", "--no-open"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    try:
        line = proc.stdout.readline()
        assert line.startswith("Captioner gallery on http://127.0.0.1:"), line
        url = line.split(" on ", 1)[1].strip()
        assert "?token=" in url and len(line) > 40  # never wrapped, whatever COLUMNS says
        rows = httpx.get(url.replace("/?", "/api/rows?") + "&prefix=gallery/", timeout=10)
        assert {r["key"] for r in rows.json()["rows"]} >= {"gallery/blue.jpg"}
        evil = httpx.get(url, headers={"Host": f"attacker.example:{urlsplit(url).port}"})
        assert evil.status_code == 421
    finally:
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=20)
    assert proc.returncode == 0, stderr
    assert "token=" not in stderr  # no access log: URLs carry the token


def test_without_the_ui_extra_the_command_says_what_to_install(monkeypatch):
    for name in ("starlette", "jinja2", "uvicorn"):
        monkeypatch.setitem(sys.modules, name, None)  # import fails as if not installed
    result = CliRunner().invoke(app, ["ui", "--bucket", "b", "--table", "t"])
    assert result.exit_code == 1
    assert result.output.strip() == (
        "error: the gallery needs the 'ui' extra: pip install 'captioner[ui]'"
    )
