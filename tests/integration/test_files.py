"""Captioning local files: same checks, same providers, no S3."""

from __future__ import annotations

import pytest
from skimage import data

from captioner.config import Config
from captioner.errors import ProviderConfigError
from captioner.files import caption_file, expand
from captioner.providers.local import LocalProvider
from captioner.providers.modelslab import ModelsLabProvider
from captioner.retry import Backoff
from tests import images
from tests.conftest import API_KEY

CONFIG = Config.from_env({"CAPTIONS_TABLE": "unused"})
FAST = Backoff(base=0.01, cap=0.02, max_attempts=3)


@pytest.fixture
def photos(tmp_path):
    from PIL import Image

    Image.fromarray(data.coffee()).save(tmp_path / "coffee.png")
    Image.fromarray(data.chelsea()).save(tmp_path / "cat.jpg", quality=90)
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / ".hidden.png").write_bytes(images.png())
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "anim.gif").write_bytes(images.gif())
    return tmp_path


def test_expand_walks_folders_sorted_and_skips_hidden_files(photos):
    names = [p.relative_to(photos).as_posix() for p in expand([photos])]
    assert names == ["cat.jpg", "coffee.png", "notes.txt", "sub/anim.gif"]


def test_local_provider_captions_files_with_labels(photos):
    provider = LocalProvider()
    result = caption_file(photos / "coffee.png", provider, "normal", CONFIG)
    assert result.status == "CAPTIONED" and "espresso" in result.caption.lower()
    assert result.provider == "local" and result.labels[0]["label"] == "espresso"
    assert (result.format, result.width, result.height) == ("PNG", 600, 400)
    gif = caption_file(photos / "sub" / "anim.gif", provider, "short", CONFIG)
    assert gif.status == "CAPTIONED"  # the local model decodes GIF; ModelsLab would refuse it


def test_non_images_and_missing_files_are_reported_not_raised(photos):
    provider = LocalProvider()
    text = caption_file(photos / "notes.txt", provider, "normal", CONFIG)
    assert text.status == "REJECTED" and "not an image" in text.reason
    missing = caption_file(photos / "nope.png", provider, "normal", CONFIG)
    assert missing.status == "FAILED" and "cannot read" in missing.reason


def test_modelslab_uploads_the_file_then_captions_it(photos, fake_modelslab):
    provider = ModelsLabProvider(fake_modelslab.url, lambda: API_KEY)
    result = caption_file(photos / "cat.jpg", provider, "short", CONFIG, FAST)
    assert result.status == "CAPTIONED" and result.provider == "modelslab"
    upload, call = fake_modelslab.requests
    assert upload.path.endswith("/base64_to_url") and upload.body["base64_string"].startswith(
        "data:image/jpeg;base64,"
    )
    assert (
        call.body["init_image"] == "http://127.0.0.1:9/upload.png"
        and call.body["length"] == "short"
    )
    gif = caption_file(photos / "sub" / "anim.gif", provider, "short", CONFIG, FAST)
    assert gif.status == "REJECTED" and "unsupported format GIF" in gif.reason


def test_modelslab_without_a_key_raises_a_configuration_error(photos, fake_modelslab):
    provider = ModelsLabProvider(fake_modelslab.url, lambda: None)
    with pytest.raises(ProviderConfigError, match="no ModelsLab API key"):
        caption_file(photos / "cat.jpg", provider, "short", CONFIG, FAST)
