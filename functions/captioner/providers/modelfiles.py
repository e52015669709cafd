"""Where the offline models' files are.

In a checkout or an installed package they sit beside this module (``models/``). In Lambda
they come with ``OfflineModelLayer``, which the template attaches only when ``local`` is the
provider or a fallback (with onnxruntime and numpy), unpacked at ``/opt/captioner-models``:
the function package itself carries none of them (functions/Makefile).
"""

from __future__ import annotations

from pathlib import Path

BUNDLED_DIR = Path(__file__).resolve().parent / "models"
LAYER_DIR = Path("/opt/captioner-models")


def models_dir() -> Path:
    """The bundled directory when it exists, else the layer's."""
    return BUNDLED_DIR if BUNDLED_DIR.is_dir() else LAYER_DIR
