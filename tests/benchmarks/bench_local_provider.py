"""Speed and memory of the offline ``local`` provider in a fresh process.

    .venv/bin/python tests/benchmarks/bench_local_provider.py [-n 300] [--threads 4]

prints the cold start (import numpy, import onnxruntime, loading the four models), per-image
latency and where it goes (decode, classifier, faces, text, sharpness), images/second
sequentially and with a thread pool (as the Lambda's batch concurrency runs it), and peak
RSS. For pytest-benchmark's statistics instead:

    .venv/bin/pytest tests/benchmarks/bench_local_provider.py

(the ``bench_`` name keeps it out of the default ``test_*.py`` collection).
"""

from __future__ import annotations

import argparse
import io
import resource
import statistics
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
PHOTOS = ("coffee.png", "chelsea.png", "astronaut.png", "camera.png", "rocket.jpg")
PHOTOS += ("motorcycle_left.png", "page.png", "text.png", "clock_motion.png")


def _importable() -> None:
    """Let ``python tests/benchmarks/...`` find the package without installing it."""
    if str(ROOT / "functions") not in sys.path:
        sys.path.insert(0, str(ROOT / "functions"))


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    start = time.perf_counter()
    result = fn()
    return result, (time.perf_counter() - start) * 1000


def photos() -> dict[str, bytes]:
    """The bundled scikit-image photos, plus a 12 MP JPEG as a phone would upload."""
    import skimage
    from PIL import Image

    data_dir = Path(skimage.__file__).parent / "data"
    bodies = {name: (data_dir / name).read_bytes() for name in PHOTOS}
    with Image.open(data_dir / "coffee.png") as coffee:
        big = coffee.convert("RGB").resize((4000, 3000), Image.Resampling.BICUBIC)
    out = io.BytesIO()
    big.save(out, "JPEG", quality=90)
    bodies["coffee-12mp.jpg"] = out.getvalue()
    return bodies


def sources(bodies: dict[str, bytes]) -> list[Any]:
    from captioner.providers.base import ImageInfo, ImageSource

    def make(name: str, data: bytes) -> ImageSource:
        return ImageSource(ImageInfo("?", 0, 0, len(data)), read=lambda: data, name=name)

    return [make(name, data) for name, data in bodies.items()]


def cold_start() -> dict[str, float]:
    """Import and session times; only meaningful as the first thing a process does."""
    _, numpy_ms = timed(lambda: __import__("numpy"))
    _, ort_ms = timed(lambda: __import__("onnxruntime"))
    _importable()
    from captioner.providers import faces, local, ocr

    _, session_ms = timed(local.load_model)
    _, faces_ms = timed(faces.model_id)
    _, ocr_ms = timed(ocr.model_ids)
    return {
        "import numpy": numpy_ms,
        "import onnxruntime": ort_ms,
        "load classifier": session_ms,
        "load face model": faces_ms,
        "load text models": ocr_ms,
    }


def stages(bodies: dict[str, bytes], rounds: int = 5) -> dict[str, float]:
    """Mean milliseconds per image of each step of a caption, over ``bodies``."""
    from captioner.providers import faces, local, ocr
    from captioner.providers.sharpness import sharpness

    model = local.load_model()
    steps = {
        "decode": lambda data: local.decode_image(data),
        "classifier": lambda image: model.probabilities(local.preprocess(image)),
        "faces": faces.detect_faces,
        "text (find + read)": ocr.read_text,
        "sharpness": sharpness,
    }
    totals = dict.fromkeys(steps, 0.0)
    for _ in range(rounds):
        for data in bodies.values():
            image, totals["decode"] = timed_add(steps["decode"], data, totals["decode"])
            for name in list(steps)[1:]:
                _, totals[name] = timed_add(steps[name], image, totals[name])
    return {name: total / (rounds * len(bodies)) for name, total in totals.items()}


def timed_add(fn: Callable[[Any], Any], arg: Any, total: float) -> tuple[Any, float]:
    result, ms = timed(lambda: fn(arg))
    return result, total + ms


def run(n: int, threads: int) -> None:
    before = peak_rss_mb()
    cold = cold_start()
    after_load = peak_rss_mb()
    from captioner.providers.local import LocalProvider

    provider = LocalProvider()
    images = sources(photos())
    deadline = time.monotonic() + 3600

    def one(i: int) -> float:
        return provider.caption(images[i % len(images)], "normal", deadline=deadline).latency_ms

    for image in images:  # warm up, and show what the model says
        result = provider.caption(image, "long", deadline=deadline)
        print(f"{image.name:20} {result.latency_ms:6.1f} ms  {result.text}")
    breakdown = stages(photos())

    latencies, total_ms = timed(lambda: [one(i) for i in range(n)])
    with ThreadPoolExecutor(max_workers=threads) as pool:
        _, pooled_ms = timed(lambda: list(pool.map(one, range(n))))

    quantiles = statistics.quantiles(latencies, n=20)
    print()
    for step, ms in cold.items():
        print(f"cold start, {step:18} {ms:7.1f} ms")
    print(f"per image (n={n}, mixed photos)   mean {statistics.mean(latencies):.1f} ms, "
          f"p50 {quantiles[9]:.1f} ms, p95 {quantiles[18]:.1f} ms")  # fmt: skip
    for step, ms in breakdown.items():
        print(f"  of which {step:22} {ms:6.1f} ms")
    print(f"sequential                        {n / total_ms * 1000:7.1f} images/s")
    print(f"{threads} threads                         {n / pooled_ms * 1000:7.1f} images/s")
    print(f"peak RSS: {before:.0f} MB at start, {after_load:.0f} MB after loading the model, "
          f"{peak_rss_mb():.0f} MB after captioning")  # fmt: skip


def test_caption_throughput(benchmark: Any) -> None:
    """pytest-benchmark: one ``normal`` caption of the coffee photo, model already loaded."""
    _importable()
    from captioner.providers.local import LocalProvider

    provider = LocalProvider()
    image = sources({"coffee.png": photos()["coffee.png"]})[0]
    deadline = time.monotonic() + 3600
    result = benchmark.pedantic(
        provider.caption,
        args=(image, "normal"),
        kwargs={"deadline": deadline},
        rounds=50,
        warmup_rounds=3,
    )
    assert result.labels[0].name == "espresso"  # no person, text or blur in it
    benchmark.extra_info["peak_rss_mb"] = round(peak_rss_mb())


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Benchmark the local caption provider.")
    parser.add_argument("-n", type=int, default=300, help="captions per run")
    parser.add_argument("--threads", type=int, default=4, help="thread pool size")
    args = parser.parse_args()
    run(args.n, args.threads)
