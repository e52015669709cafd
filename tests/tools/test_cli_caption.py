"""`captioner caption PATH...`: local files, either provider, JSON Lines for scripts."""

from __future__ import annotations

import json

import pytest
from skimage import data
from typer.testing import CliRunner

from captioner_tools.cli.app import app
from tests import images
from tests.conftest import API_KEY


@pytest.fixture
def folder(tmp_path):
    from PIL import Image

    Image.fromarray(data.coffee()).save(tmp_path / "coffee.png")
    Image.fromarray(data.chelsea()).save(tmp_path / "chelsea.jpg", quality=90)
    return tmp_path


@pytest.fixture
def runner(monkeypatch):
    monkeypatch.delenv("MODELSLAB_API_KEY", raising=False)
    monkeypatch.delenv("MODELSLAB_API_KEY_SECRET", raising=False)
    return CliRunner()


def test_json_lines_with_the_local_provider_by_default(runner, folder):
    result = runner.invoke(app, ["caption", str(folder), "--json"])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["path"].rsplit("/", 1)[1] for r in rows] == ["chelsea.jpg", "coffee.png"]
    assert all(r["status"] == "CAPTIONED" and r["provider"] == "local" for r in rows)
    coffee = rows[1]
    assert "espresso" in coffee["caption"].lower() and coffee["labels"][0]["label"] == "espresso"
    assert "cat" in rows[0]["caption"].lower()


def test_a_rejected_file_makes_the_exit_status_one(runner, folder):
    (folder / "notes.txt").write_text("not an image")
    result = runner.invoke(
        app, ["caption", str(folder / "notes.txt"), str(folder / "coffee.png"), "--length", "short"]
    )
    assert result.exit_code == 1
    assert (
        "REJECTED" in result.stdout
        and "not an image" in result.stdout
        and "espresso" in result.stdout
    )


def test_modelslab_provider_through_the_fake(runner, folder, fake_modelslab, monkeypatch):
    monkeypatch.setenv("MODELSLAB_API_KEY", API_KEY)
    monkeypatch.setenv("MODELSLAB_API_URL", fake_modelslab.url)
    result = runner.invoke(
        app, ["caption", str(folder / "coffee.png"), "--json", "--provider", "modelslab"]
    )
    assert result.exit_code == 0, result.output
    (row,) = [json.loads(line) for line in result.stdout.splitlines()]
    assert row["provider"] == "modelslab" and row["caption"] == "A picture named upload.png."
    assert fake_modelslab.requests[0].path.endswith("/base64_to_url")


def test_modelslab_without_a_key_is_one_clear_line(runner, folder):
    result = runner.invoke(app, ["caption", str(folder / "coffee.png"), "--provider", "modelslab"])
    assert result.exit_code == 1
    assert "no ModelsLab API key" in result.stderr and "Traceback" not in result.output


def test_an_empty_folder_is_an_error(runner, tmp_path):
    result = runner.invoke(app, ["caption", str(tmp_path)])
    assert result.exit_code == 1 and "no files found" in result.stderr


def test_gif_is_rejected_for_modelslab_but_captioned_locally(
    runner, tmp_path, fake_modelslab, monkeypatch
):
    gif = tmp_path / "a.gif"
    gif.write_bytes(images.gif())
    assert runner.invoke(app, ["caption", str(gif)]).exit_code == 0
    monkeypatch.setenv("MODELSLAB_API_KEY", API_KEY)
    monkeypatch.setenv("MODELSLAB_API_URL", fake_modelslab.url)
    result = runner.invoke(app, ["caption", str(gif), "--json"])
    rejected = json.loads(result.stdout)
    assert result.exit_code == 1 and rejected["status"] == "REJECTED"
    # the documented keys are always there, null when there is nothing
    assert rejected["caption"] is None and rejected["provider"] == "modelslab"


def test_openai_provider_through_the_fake(runner, folder, monkeypatch):
    from tests.fakes.openai import FakeOpenAI

    fake = FakeOpenAI().start()
    try:
        monkeypatch.setenv("OPENAI_BASE_URL", fake.url)
        monkeypatch.setenv("OPENAI_API_KEY", API_KEY)
        monkeypatch.setenv("OPENAI_MODEL", "llava:7b")
        result = runner.invoke(
            app, ["caption", str(folder / "coffee.png"), "--json", "--provider", "openai"]
        )
    finally:
        fake.stop()
    assert result.exit_code == 0, result.output
    (row,) = [json.loads(line) for line in result.stdout.splitlines()]
    assert row["provider"] == "openai" and row["status"] == "CAPTIONED"
    # a local file has no URL: it goes as a data URL
    assert row["caption"].startswith("A picture of ") and "image/png" in row["caption"]
    assert fake.requests[0].body["model"] == "llava:7b"
    assert API_KEY not in result.output


def test_openai_without_a_key_on_openai_itself_is_one_clear_line(runner, folder, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    result = runner.invoke(app, ["caption", str(folder / "coffee.png"), "--provider", "openai"])
    assert result.exit_code == 1
    assert "no OpenAI API key" in result.stderr and "Traceback" not in result.output


def test_bedrock_provider_through_a_stubbed_runtime(runner, folder, monkeypatch):
    import boto3
    from botocore.stub import ANY, Stubber

    from captioner.providers import bedrock

    client = boto3.client("bedrock-runtime", region_name="us-east-1",
                          aws_access_key_id="testing", aws_secret_access_key="testing")  # fmt: skip
    stub = Stubber(client)
    reply = {
        "output": {"message": {"role": "assistant", "content": [{"text": "An espresso cup."}]}},
        "stopReason": "end_turn",
        "usage": {"inputTokens": 1, "outputTokens": 1, "totalTokens": 2},
        "metrics": {"latencyMs": 1},
    }
    stub.add_response("converse", reply, {"modelId": "amazon.nova-pro-v1:0", "messages": ANY,
                                          "inferenceConfig": {"maxTokens": 100}})  # fmt: skip
    monkeypatch.setattr(bedrock._ClientCache, "__call__", lambda self, timeout: client)
    monkeypatch.setenv("BEDROCK_MODEL_ID", "amazon.nova-pro-v1:0")
    with stub:
        result = runner.invoke(
            app, ["caption", str(folder / "coffee.png"), "--json", "--provider", "bedrock"]
        )
    assert result.exit_code == 0, result.output
    (row,) = [json.loads(line) for line in result.stdout.splitlines()]
    assert (row["provider"], row["caption"]) == ("bedrock", "An espresso cup.")
    stub.assert_no_pending_responses()
