"""The gallery's routes over HTTP (a real server on 127.0.0.1, the local stack behind it):
the Host check, the token for writes, the security headers, the JSON API and its paging."""

from __future__ import annotations

import json
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from tests import images
from tests.tools.conftest import row
from tests.ui.conftest import put, wait_for_status


@pytest.fixture(scope="module")
def base(ui):
    parts = urlsplit(ui.url)
    return f"{parts.scheme}://{parts.netloc}"


@pytest.fixture(scope="module")
def token(ui):
    return parse_qs(urlsplit(ui.url).query)["token"][0]


def test_the_printed_url_is_loopback_with_a_token(ui):
    parts = urlsplit(ui.url)
    assert parts.hostname == "127.0.0.1" and parts.port and parts.path == "/"
    assert len(parse_qs(parts.query)["token"][0]) >= 24


def test_a_request_for_another_host_is_refused(base, photos):
    port = urlsplit(base).port
    for host in ("evil.example", f"evil.example:{port}", "127.0.0.1:1"):
        resp = httpx.get(base + "/api/rows", headers={"Host": host})
        assert resp.status_code == 421, host
    for host in (f"127.0.0.1:{port}", f"localhost:{port}"):
        assert httpx.get(base + "/api/rows", headers={"Host": host}).status_code == 200


def test_a_write_without_the_runs_token_is_forbidden(base, photos):
    body = {"bucket": photos.bucket, "key": "gallery/blue.jpg", "caption": "pwned"}
    assert httpx.post(base + "/api/caption", json=body).status_code == 403
    wrong = httpx.post(base + "/api/caption", json=body, headers={"X-Captioner-Token": "nope"})
    assert wrong.status_code == 403
    recaption = httpx.post(base + "/api/recaption", json={"status": "FAILED", "confirm": True})
    assert recaption.status_code == 403
    assert row(photos, "gallery/blue.jpg")["caption"] != "pwned"


def test_every_response_carries_a_strict_content_security_policy(base, photos):
    for path in ("/", "/api/rows", "/static/app.js", "/nowhere"):
        csp = httpx.get(base + path).headers["content-security-policy"]
        assert "default-src 'none'" in csp and "script-src 'self'" in csp
        assert "unsafe-inline" not in csp and "unsafe-eval" not in csp


def test_api_rows_has_the_keys_of_list_json_and_pages_without_repeats(base, photos):
    for i in range(7):
        put(photos, f"paging/p{i}.png", images.png(8 + i, 8))
    for i in range(7):
        wait_for_status(photos, f"paging/p{i}.png", "CAPTIONED")
    seen, cursor = [], None
    while True:
        params = {"prefix": "paging/", "limit": "3", **({"cursor": cursor} if cursor else {})}
        page = httpx.get(base + "/api/rows", params=params).json()
        assert len(page["rows"]) <= 3
        seen += [r["key"] for r in page["rows"]]
        cursor = page["next"]
        if not cursor:
            break
    assert sorted(seen) == sorted(f"paging/p{i}.png" for i in range(7)) and len(set(seen)) == 7
    first = httpx.get(base + "/api/rows", params={"prefix": "paging/p0"}).json()["rows"][0]
    assert first == row(photos, "paging/p0.png")  # the row as `captioner list --json` prints it


def test_api_rows_filters_by_status_and_words(base, photos):
    rejected = httpx.get(base + "/api/rows", params={"status": "rejected"}).json()["rows"]
    assert "gallery/notes.png" in [r["key"] for r in rejected]
    assert {r["status"] for r in rejected} == {"REJECTED"}
    found = httpx.get(base + "/api/rows", params={"q": "blue"}).json()["rows"]
    assert [r["key"] for r in found] == ["gallery/blue.jpg"]
    bad = httpx.get(base + "/api/rows", params={"status": "nope"})
    assert bad.status_code == 400 and "status must be one of" in bad.json()["error"]


def test_an_edit_through_the_api_needs_the_current_version(base, token, photos):
    current = row(photos, "gallery/red dot.png")
    headers = {"X-Captioner-Token": token}
    stale = {"bucket": photos.bucket, "key": "gallery/red dot.png", "version_id": "old",
             "caption": "x"}  # fmt: skip
    resp = httpx.post(base + "/api/caption", json=stale, headers=headers)
    assert resp.status_code == 409 and "no longer the row's" in resp.json()["error"]
    good = {**stale, "version_id": current["version_id"], "caption": "A red dot on white"}
    resp = httpx.post(base + "/api/caption", json=good, headers=headers)
    assert resp.status_code == 200, resp.text
    assert resp.json()["row"]["caption_source"] == "human"
    assert row(photos, "gallery/red dot.png")["caption"] == "A red dot on white"


def test_a_bad_caption_or_a_missing_version_is_a_400_and_null_on_a_versioned_row_a_409(
    base, token, photos
):
    current = row(photos, "gallery/blue.jpg")
    headers = {"X-Captioner-Token": token}
    body = {"bucket": photos.bucket, "key": "gallery/blue.jpg",
            "version_id": current["version_id"]}  # fmt: skip
    for caption in ("", "   ", "x" * 200_000):
        resp = httpx.post(base + "/api/caption", json={**body, "caption": caption}, headers=headers)
        assert resp.status_code == 400, resp.text
    no_version = {k: v for k, v in body.items() if k != "version_id"}
    resp = httpx.post(base + "/api/caption", json={**no_version, "caption": "A"}, headers=headers)
    assert resp.status_code == 400 and "version_id" in resp.json()["error"]
    resp = httpx.post(base + "/api/caption", json={**body, "version_id": None, "caption": "A"},
                      headers=headers)  # fmt: skip
    assert resp.status_code == 409 and "versioned" in resp.json()["error"]
    assert row(photos, "gallery/blue.jpg")["caption"] == current["caption"]


def test_a_csv_export_never_hands_a_spreadsheet_a_formula():
    from captioner_tools.review import export_lines

    captions = (("a", '=HYPERLINK("http://evil","x")'), ("b", "+1"), ("c", "@SUM(1)"),
                ("d", "-2"), ("e", "A cat."))  # fmt: skip
    rows = [{"bucket": "b", "key": k, "caption": c, "status": "CAPTIONED"} for k, c in captions]
    text = "".join(export_lines(rows, "csv"))
    assert "'=HYPERLINK" in text and "'+1" in text and "'@SUM" in text and "'-2" in text
    assert ",A cat.," in text
    assert json.loads("".join(export_lines(rows[:1], "json")))[0]["caption"].startswith("=")


def test_thumbnails_are_small_jpegs_and_non_images_get_a_placeholder(base, ui, photos):
    r = row(photos, "gallery/blue.jpg")
    params = {"bucket": photos.bucket, "key": r["key"], "v": r["version_id"]}
    resp = httpx.get(base + "/thumb", params=params)
    assert resp.headers["content-type"] == "image/jpeg" and resp.content[:2] == b"\xff\xd8"
    assert "immutable" in resp.headers["cache-control"]
    reads = ui.server.config.app.state.gallery.thumbnails.s3_reads
    assert httpx.get(base + "/thumb", params=params).content == resp.content
    assert ui.server.config.app.state.gallery.thumbnails.s3_reads == reads  # cached: no S3 read
    notes = row(photos, "gallery/notes.png")
    placeholder = httpx.get(base + "/thumb", params={"key": notes["key"], "v": notes["version_id"]})
    assert placeholder.headers["content-type"] == "image/svg+xml"


def test_the_original_opens_inline_and_only_as_an_image(base, photos):
    r = row(photos, "gallery/blue.jpg")
    resp = httpx.get(base + "/original", params={"key": r["key"], "v": r["version_id"]})
    assert resp.status_code == 200 and resp.headers["content-type"] == "image/jpeg"
    assert resp.headers["content-disposition"] == "inline"
    notes = row(photos, "gallery/notes.png")
    assert httpx.get(base + "/original", params={"key": notes["key"]}).status_code == 415


def test_export_from_the_page_is_csv_with_a_header_row(base, photos):
    resp = httpx.get(base + "/export", params={"prefix": "gallery/", "format": "csv"})
    lines = resp.text.splitlines()
    assert lines[0] == "bucket,key,version_id,caption,caption_source,status"
    assert "attachment" in resp.headers["content-disposition"]
    assert len(lines) == 1 + 4
    as_json = json.loads(httpx.get(base + "/export", params={"format": "json"}).text)
    assert {r["key"] for r in as_json} >= {"gallery/blue.jpg", "gallery/notes.png"}
