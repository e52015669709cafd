"""The README's screenshot of the gallery (docs/gallery.png), made from the demo so it stays
true: the local stack with the offline provider, the demo's sample photos plus a file that
is not an image, `captioner ui`, and Debian's chromium through Playwright.

    .venv/bin/python scripts/gallery_screenshot.py [--out docs/gallery.png]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "functions"), str(ROOT / "src"), str(ROOT)]

from captioner.store import FINAL_STATUSES, from_item  # noqa: E402
from captioner_tools.cli.localui import start_gallery  # noqa: E402
from captioner_tools.cli.samples import write_sample_photos  # noqa: E402
from captioner_tools.local.stack import LocalStack  # noqa: E402
from tests.ui.conftest import CHROMIUM_FLAGS, chromium_path  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "gallery.png")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    with (
        tempfile.TemporaryDirectory() as tmp,
        LocalStack(port=0, provider="local", register_stack=False, log_level="ERROR") as stack,
    ):
        s3, ddb = stack.client("s3"), stack.client("dynamodb")
        keys = []
        for path in write_sample_photos(Path(tmp)):
            key = f"demo/{path.name}"
            s3.upload_file(str(path), stack.bucket, key)
            keys.append(key)
        s3.put_object(Bucket=stack.bucket, Key="demo/notes.txt", Body=b"not an image")
        keys.append("demo/notes.txt")
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            rows = [ddb.get_item(TableName=stack.table, ConsistentRead=True,
                                 Key={"bucket": {"S": stack.bucket}, "key": {"S": k}}).get("Item")
                    for k in keys]  # fmt: skip
            done = [r for r in rows if r and from_item(r).get("status") in FINAL_STATUSES
                    and (from_item(r).get("status") != "CAPTIONED" or "tag_status" in r)]  # fmt: skip
            if len(done) == len(keys):
                break
            time.sleep(0.5)
        running = start_gallery(stack)
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_FLAGS)
            page = browser.new_page(viewport={"width": 1100, "height": 640})
            page.goto(running.url + "&prefix=demo/")
            page.wait_for_function(
                "() => [...document.querySelectorAll('main .card img')]"
                ".every(i => i.complete && i.naturalWidth > 0)"
            )
            args.out.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(args.out), full_page=True)
            browser.close()
        running.stop()
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
