"""Bundled ONNX models, each loaded once per process and named by its content hash.

onnxruntime is imported only here and only when the first model is loaded, so importing
the providers stays cheap (a ModelsLab deployment never pays for it).
"""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from captioner.errors import ProviderConfigError

# The Lambda captions several records at once on 1-2 vCPUs: more threads per run would
# only contend with each other.
INTRA_OP_THREADS = 1


@dataclass(frozen=True)
class OnnxModel:
    session: Any  # onnxruntime.InferenceSession; run() is thread-safe
    input_name: str
    model_id: str  # name@sha256[:12], recorded with each caption
    metadata: dict[str, str]  # the model's custom metadata (e.g. an OCR alphabet)

    def run(self, pixels: Any) -> list[Any]:
        outputs: list[Any] = self.session.run(None, {self.input_name: pixels})
        return outputs


_sessions: dict[Path, OnnxModel] = {}
_lock = threading.Lock()


def open_model(path: Path, name: str, *, varying_shapes: bool = False) -> OnnxModel:
    """The model at ``path``, loaded once per process (the first caller pays).

    ``varying_shapes``: the model sees a new input size for every image (the text models).
    onnxruntime's memory arena would keep the largest buffers of each size for ever; without
    it, peak memory stays ~60 MB lower at about the same speed (models/MODEL.md).
    """
    path = path.resolve()
    model = _sessions.get(path)
    if model is None:
        with _lock:
            model = _sessions.get(path)
            if model is None:
                model = _sessions[path] = _load(path, name, varying_shapes)
    return model


def _load(path: Path, name: str, varying_shapes: bool) -> OnnxModel:
    try:
        import onnxruntime as ort  # lazy: a heavy import, paid only when used
    except ImportError as exc:
        raise ProviderConfigError(
            "local provider needs onnxruntime (in Lambda OfflineModelLayer, attached when "
            f"CaptionProvider or FallbackProviders names local): {exc}"
        ) from exc
    try:
        with path.open("rb") as model_file:  # streamed: no copy of the file held in memory
            sha = hashlib.file_digest(model_file, "sha256").hexdigest()
    except OSError as exc:
        raise ProviderConfigError(f"local model file missing: {exc}") from exc
    options = ort.SessionOptions()
    options.intra_op_num_threads = INTRA_OP_THREADS
    options.inter_op_num_threads = 1
    if varying_shapes:
        options.enable_cpu_mem_arena = False
        options.enable_mem_pattern = False
    try:
        # From the path, not bytes: onnxruntime then keeps no second copy (~20 MB less RSS).
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own unexported exception types
        raise ProviderConfigError(f"cannot load local model {path}: {exc}") from exc
    return OnnxModel(
        session=session,
        input_name=session.get_inputs()[0].name,
        model_id=f"{name}@{sha[:12]}",
        metadata=dict(session.get_modelmeta().custom_metadata_map),
    )
