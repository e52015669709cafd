"""Where the local provider finds its models: bundled in a checkout, in the layer in Lambda."""

from __future__ import annotations

from pathlib import Path

import pytest

from captioner.providers import modelfiles


def test_a_checkout_uses_the_bundled_models() -> None:
    assert modelfiles.models_dir() == modelfiles.BUNDLED_DIR
    assert (modelfiles.BUNDLED_DIR / "efficientnet_lite0.onnx").is_file()


def test_a_package_without_the_models_uses_the_offline_model_layer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """functions/Makefile leaves providers/models out of the function package; the layer
    unpacks them at /opt/captioner-models."""
    monkeypatch.setattr(modelfiles, "BUNDLED_DIR", tmp_path / "not-in-the-package")
    assert modelfiles.models_dir() == Path("/opt/captioner-models")
