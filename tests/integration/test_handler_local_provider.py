"""The same handler, unchanged, with the offline `local` provider; and a backfill message
that asks for another provider re-captions a version the default provider already did."""

from __future__ import annotations

import io
import json

import pytest
from skimage import data

from captioner import handler
from captioner.events import backfill_message
from tests import images
from tests.conftest import fast, notification, s3_record, sqs_event


def coffee_jpeg() -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.fromarray(data.coffee()).save(out, "JPEG", quality=90)
    return out.getvalue()


@pytest.fixture
def local_env(app_env, monkeypatch):
    monkeypatch.setenv("CAPTION_PROVIDER", "local")
    monkeypatch.delenv("MODELSLAB_API_KEY")
    handler.reset()
    return app_env


def test_local_provider_captions_through_the_real_handler(
    local_env, fake_modelslab, lambda_context
):
    obj = local_env.put("photos/coffee.jpg", coffee_jpeg())
    rec = s3_record(
        "photos/coffee.jpg",
        version_id=obj["version_id"],
        etag=obj["etag"],
        size=obj["size"],
        sequencer="01",
    )
    result = handler.lambda_handler(sqs_event(notification(rec)), lambda_context)
    assert result == {"batchItemFailures": []}
    row = local_env.row("photos/coffee.jpg")
    assert row["status"] == "CAPTIONED" and row["provider"] == "local"
    assert "espresso" in row["caption"].lower()
    assert row["model"].startswith("efficientnet-lite0")
    assert row["labels"][0]["label"] == "espresso" and 0 < row["labels"][0]["score"] <= 1
    assert (
        local_env.tags("photos/coffee.jpg", obj["version_id"])["caption"]
        == row["caption"].rstrip(".") + "."
    )
    assert fake_modelslab.requests == []  # no network, no key


def test_the_row_records_the_new_signals_before_the_classifier_labels(local_env, lambda_context):
    out = io.BytesIO()
    from PIL import Image

    Image.fromarray(data.astronaut()).save(out, "PNG")
    obj = local_env.put("people/astronaut.png", out.getvalue())
    rec = s3_record(
        "people/astronaut.png",
        version_id=obj["version_id"],
        etag=obj["etag"],
        size=obj["size"],
        sequencer="01",
    )
    assert handler.lambda_handler(sqs_event(notification(rec)), lambda_context) == {
        "batchItemFailures": []
    }
    row = local_env.row("people/astronaut.png")
    assert row["caption"] == "A photo of a person."
    assert row["labels"][0]["label"] == "person" and row["labels"][0]["score"] >= 0.6
    assert len(row["labels"]) == 6  # the signal, then the classifier's top five
    assert "+blazeface-full-range@" in row["model"] and "+pp-ocrv6-rec-tiny@" in row["model"]
    assert local_env.tags("people/astronaut.png", obj["version_id"])["caption"] == (
        "A photo of a person."
    )


def test_local_provider_accepts_webp_which_modelslab_refuses(local_env, lambda_context):
    obj = local_env.put("a.webp", images.webp())
    rec = s3_record(
        "a.webp", version_id=obj["version_id"], etag=obj["etag"], size=obj["size"], sequencer="01"
    )
    handler.lambda_handler(sqs_event(notification(rec)), lambda_context)
    assert local_env.row("a.webp")["status"] == "CAPTIONED"


def test_backfill_with_another_provider_recaptions_a_captioned_version(
    app_env, fake_modelslab, lambda_context, monkeypatch
):
    monkeypatch.setenv("CAPTION_PROVIDER", "local")
    handler.reset()
    obj = app_env.put("re.jpg", coffee_jpeg())
    body = backfill_message(
        "captioner-uploads-test",
        "re.jpg",
        version_id=obj["version_id"],
        etag=obj["etag"],
        size=obj["size"],
    )
    handler.lambda_handler(sqs_event(body), lambda_context)
    assert app_env.row("re.jpg")["provider"] == "local"

    # same version, default provider again: a duplicate, nothing to do
    handler.lambda_handler(sqs_event(body), lambda_context)
    assert fake_modelslab.requests == []

    again = backfill_message(
        "captioner-uploads-test",
        "re.jpg",
        version_id=obj["version_id"],
        etag=obj["etag"],
        size=obj["size"],
        provider="modelslab",
    )
    fast(handler.get_app())
    assert handler.lambda_handler(sqs_event(again), lambda_context) == {"batchItemFailures": []}
    row = app_env.row("re.jpg")
    assert row["provider"] == "modelslab" and row["caption"] == "A picture named re.jpg."
    assert "labels" not in row and "model" not in row  # the local provider's provenance is cleared
    # the tag we wrote for the local caption is ours to replace; the row remembers it
    assert app_env.tags("re.jpg", obj["version_id"])["caption"] == "A picture named re.jpg."
    assert row["tag_status"] == "WRITTEN" and row["tag_value"] == "A picture named re.jpg."
    assert len(fake_modelslab.paid_calls()) == 1
    assert json.loads(again)["Records"][0]["captioner"] == {"provider": "modelslab"}
