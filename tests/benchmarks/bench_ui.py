# ruff: noqa: E402  (the repository root goes on sys.path before ``tests`` is imported)
"""The gallery with 1,000 rows in the local stack, in headless Chromium:

    .venv/bin/python tests/benchmarks/bench_ui.py [--rows 1000] [--runs 3]

Rows and objects are written straight into moto (``poll=False``: no captioning), so only the
gallery is measured. For each run it prints: the first page of 100 cards ready in the browser
(``DOMContentLoaded`` of ``/?limit=100``), all 100 (a viewport tall enough for every card:
they load lazily) thumbnails loaded with a cold server cache
(each one a GetObject and a Pillow resize), the same page in a fresh browser context once the
server has them (its cache), and the S3 GetObject calls of each view (botocore ``before-call``
events on the gallery's own S3 client). Nothing here asserts a timing.
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT / "functions"), str(ROOT)]

import httpx
from PIL import Image

from captioner.store import now_iso
from captioner_tools.cli.target import Deployment, TargetOptions
from captioner_tools.local.stack import LocalStack
from captioner_tools.ui.server import start
from tests.ui.conftest import CHROMIUM_FLAGS, chromium_path

READY = "() => [...document.querySelectorAll('main .card img')].every(i => i.complete && i.naturalWidth > 0)"


def photo(i: int) -> bytes:
    img = Image.new("RGB", (640, 480), ((i * 37) % 256, (i * 91) % 256, (i * 53) % 256))
    out = io.BytesIO()
    img.save(out, "JPEG", quality=85)
    return out.getvalue()


def fill(stack: LocalStack, rows: int) -> None:
    s3, ddb = stack.client("s3"), stack.client("dynamodb")
    for i in range(rows):
        key = f"bench/{i:05d}.jpg"
        obj = s3.put_object(Bucket=stack.bucket, Key=key, Body=photo(i))
        item = {
            "bucket": stack.bucket, "key": key, "status": "CAPTIONED",
            "caption": f"A test card number {i}", "caption_source": "model",
            "provider": "local", "version_id": obj["VersionId"], "revision": obj["VersionId"],
            "etag": obj["ETag"].strip('"'), "size": str(len(photo(i))), "tag_status": "WRITTEN",
            "updated_at": now_iso(), "created_at": now_iso(),
        }  # fmt: skip
        ddb.put_item(
            TableName=stack.table,
            Item={k: ({"N": v} if k == "size" else {"S": v}) for k, v in item.items()},
        )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    with LocalStack(port=0, poll=False, register_stack=False) as stack:
        started = time.monotonic()
        fill(stack, args.rows)
        print(f"{args.rows} rows and objects written in {time.monotonic() - started:.1f} s")
        deployment = Deployment(TargetOptions(
            endpoint_url=stack.endpoint_url, bucket=stack.bucket, table=stack.table,
            queue_url=stack.queue_url, dlq_url=stack.dlq_url,
        ))  # fmt: skip
        from captioner_tools.ui.rows import View, read_page

        query = []
        for _ in range(args.runs):
            t0 = time.perf_counter()
            read_page(deployment.captions(), deployment.client("dynamodb"),
                      View(bucket=stack.bucket, limit=100))  # fmt: skip
            query.append(time.perf_counter() - t0)
        reads = {"n": 0}

        def count(**_: object) -> None:
            reads["n"] += 1

        deployment.client("s3").meta.events.register("before-call.s3.GetObject", count)
        figures: dict[str, list[float]] = {"ready": [], "cold": [], "cached": []}
        s3_reads: dict[str, list[int]] = {"cold": [], "cached": []}
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_FLAGS)
            for _ in range(args.runs):
                running = start(deployment)  # a fresh server: an empty thumbnail cache
                url = running.url + "&limit=100"
                # its one-time work (templates, the stack's parameters) is not a page's
                httpx.get(running.url.replace("/?", "/api/rows?") + "&limit=1", timeout=60)
                for view in ("cold", "cached"):
                    # an empty browser cache each view; tall enough that no thumbnail is lazy
                    context = browser.new_context(viewport={"width": 1280, "height": 8000})
                    page = context.new_page()
                    before = reads["n"]
                    t0 = time.perf_counter()
                    page.goto(url, wait_until="domcontentloaded")
                    ready = time.perf_counter() - t0
                    assert page.locator("main .card").count() == 100
                    page.wait_for_function(READY, timeout=120_000)
                    figures[view].append(time.perf_counter() - t0)
                    s3_reads[view].append(reads["n"] - before)
                    if view == "cold":
                        figures["ready"].append(ready)
                    context.close()
                running.stop()
            browser.close()
    med = statistics.median
    print(
        f"first page of 100 cards ready:        {med(figures['ready']) * 1000:.0f} ms (median of {args.runs})"
    )
    print(f"  of which the table query (moto):     {med(query) * 1000:.0f} ms")
    print(
        f"  + 100 thumbnails, cold server cache: {med(figures['cold']) * 1000:.0f} ms, {med(s3_reads['cold']):.0f} S3 GetObject"
    )
    print(
        f"  + 100 thumbnails, server cache:      {med(figures['cached']) * 1000:.0f} ms, {med(s3_reads['cached']):.0f} S3 GetObject"
    )


if __name__ == "__main__":
    main()
