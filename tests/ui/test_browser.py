"""The gallery in a real headless Chromium (Debian's, through Playwright's executable_path)
against the local stack: the grid, filters in the URL, paging, the detail view, edits that
survive a duplicate delivery and a backfill, re-caption, export, the keyboard, escaping and
an axe-core audit."""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from captioner.events import backfill_message
from tests import images
from tests.tools.conftest import depth, row
from tests.ui.conftest import put, wait_for, wait_for_status

AXE = Path(__file__).parent / "vendor" / "axe.min.js"
XSS = '<img src=x onerror="document.title=\'pwned\'"><script>document.title="pwned"</script>'


@pytest.fixture(scope="module")
def origin(ui):
    parts = urlsplit(ui.url)
    return f"{parts.scheme}://{parts.netloc}"


def open_gallery(page, ui, query=""):
    page.goto(ui.url + ("&" + query if query else ""))
    page.wait_for_selector("main")


def test_the_grid_shows_captioned_rejected_and_failed_images_with_alt_text(page, ui, photos):
    open_gallery(page, ui, "prefix=gallery/")
    cards = page.locator("main .card")
    assert cards.count() == 4
    alts = page.locator("main .card img").evaluate_all("els => els.map(e => e.alt)")
    assert all(a.strip() for a in alts)
    assert "A picture named blue.jpg." in alts
    rejected = page.locator(".card", has_text="gallery/notes.png")
    assert "REJECTED" in rejected.inner_text() and "not an image" in rejected.inner_text()
    failed = page.locator(".card", has_text="gallery/broken.png")
    assert "FAILED" in failed.inner_text() and "ago" in failed.inner_text()
    # every thumbnail was made by the server and loaded
    page.wait_for_function(
        "() => [...document.querySelectorAll('main .card img')].every(i => i.complete && i.naturalWidth > 0)"
    )


def test_filters_and_search_live_in_the_url(page, ui, photos):
    open_gallery(page, ui, "prefix=gallery/")
    page.select_option("#status", "REJECTED")
    page.click("button[type=submit]")
    page.wait_for_url("**status=REJECTED**")
    assert page.locator("main .card").count() == 1
    assert "gallery/notes.png" in page.locator("main").inner_text()
    # the URL alone gives the same view (a bookmark)
    bookmarked = page.url
    page.goto(bookmarked)
    assert page.locator("main .card").count() == 1
    page.fill("#q", "blue")
    page.select_option("#status", "")
    page.click("button[type=submit]")
    page.wait_for_url("**q=blue**")
    assert [t.strip() for t in page.locator("main .card .key").all_inner_texts()] == [
        "gallery/blue.jpg"
    ]


def test_paging_follows_the_cursor_without_repeating_a_card(page, ui, photos):
    for i in range(5):
        put(photos, f"pages/p{i}.png", images.png(10 + i, 10))
    for i in range(5):
        wait_for_status(photos, f"pages/p{i}.png", "CAPTIONED")
    open_gallery(page, ui, "prefix=pages/&limit=2")
    seen = []
    while True:
        seen += [t.strip() for t in page.locator("main .card .key").all_inner_texts()]
        if page.locator("#next").count() == 0:
            break
        before = page.url
        page.click("#next")
        page.wait_for_url(lambda url, before=before: url != before and "cursor=" in url)
        assert "limit=2" in page.url
    assert sorted(seen) == [f"pages/p{i}.png" for i in range(5)]


def test_the_detail_view_shows_the_row_its_tags_and_the_original(page, ui, photos):
    open_gallery(page, ui, "prefix=gallery/blue")
    page.click("main .card-link")
    page.wait_for_url("**/object?**")
    text = page.locator("main").inner_text()
    r = row(photos, "gallery/blue.jpg")
    for value in (r["version_id"], "CAPTIONED", "modelslab", "WRITTEN", str(r["size"])):
        assert value in text
    assert "caption" in page.locator("main dl").last.inner_text()  # the object's tags
    href = page.get_attribute("#original", "href")
    resp = page.request.get(urlsplit(ui.url)._replace(path="", query="").geturl() + href)
    assert resp.headers["content-type"] == "image/jpeg"
    assert resp.headers["content-disposition"] == "inline"


def test_an_edit_on_the_page_survives_a_duplicate_delivery_and_a_backfill(page, ui, photos):
    put(photos, "edits/dog.png", images.png(40, 30))
    wait_for_status(photos, "edits/dog.png", "CAPTIONED")
    open_gallery(page, ui, "prefix=edits/")
    page.click("main .card-link")
    page.wait_for_url("**/object?**")
    page.fill("#caption-text", "A brown dog catching a frisbee")
    page.click("#edit button[type=submit]")
    page.wait_for_selector("#edit-result:has-text('Saved')")
    r = row(photos, "edits/dog.png")
    assert r["caption"] == "A brown dog catching a frisbee" and r["caption_source"] == "human"
    body = backfill_message(photos.bucket, "edits/dog.png", version_id=r["version_id"],
                            etag=r["etag"], size=r["size"])  # fmt: skip
    for extra in ({}, {"provider": "local"}):
        message = json.loads(body)
        if extra:
            message["Records"][0]["captioner"] = extra
        photos.client("sqs").send_message(
            QueueUrl=photos.queue_url, MessageBody=json.dumps(message)
        )
    wait_for(lambda: depth(photos, photos.queue_url), lambda n: n == 0, 20, "the queue")
    page.reload()
    assert page.input_value("#caption-text") == "A brown dog catching a frisbee"
    assert "human" in page.locator("[data-field=caption_source]").inner_text()


def test_a_caption_with_markup_shows_as_text_and_runs_nothing(page, ui, photos):
    put(photos, "xss/x.png", images.png(12, 12))
    wait_for_status(photos, "xss/x.png", "CAPTIONED")
    open_gallery(page, ui, "prefix=xss/")
    page.click("main .card-link")
    page.wait_for_url("**/object?**")
    page.fill("#caption-text", XSS)
    page.click("#edit button[type=submit]")
    page.wait_for_selector("#edit-result:has-text('Saved')")
    open_gallery(page, ui, "prefix=xss/")
    assert page.locator("main .card .caption").inner_text() == XSS
    assert page.locator("main .card img").get_attribute("alt") == XSS
    assert page.locator("main img[src=x], main script").count() == 0
    page.click("main .card-link")
    page.wait_for_url("**/object?**")
    page.wait_for_timeout(300)
    assert page.title() != "pwned" and page.input_value("#caption-text") == XSS


def test_recaption_shows_the_price_and_asks_first(page, ui, photos):
    put(photos, "again/a.png", images.png(14, 14))
    first = wait_for_status(photos, "again/a.png", "CAPTIONED")
    asked = []

    def answer(dialog):
        asked.append(dialog.message)
        dialog.accept()

    page.on("dialog", answer)
    open_gallery(page, ui, "prefix=again/")
    page.click("main .card-link")
    page.wait_for_url("**/object?**")
    page.click("#recaption-one")
    page.wait_for_selector("#recaption-result:has-text('Queued 1')")
    assert len(asked) == 1 and "Re-caption 1 image(s) for about $0.0047" in asked[0]
    wait_for(lambda: row(photos, "again/a.png"),
             lambda r: r["updated_at"] > first["updated_at"] and "tag_status" in r
             and r["status"] == "CAPTIONED", 20, "the re-caption")  # fmt: skip


def test_export_from_the_page_downloads_csv(page, ui, photos):
    open_gallery(page, ui, "prefix=gallery/")
    with page.expect_download() as download:
        page.click("text=Export CSV")
    lines = Path(download.value.path()).read_text().splitlines()
    assert lines[0] == "bucket,key,version_id,caption,caption_source,status"
    assert len(lines) == 5


def test_the_keyboard_searches_moves_opens_edits_and_closes(page, ui, photos):
    open_gallery(page, ui, "prefix=gallery/")
    page.keyboard.press("/")
    assert page.evaluate("document.activeElement.id") == "q"
    page.keyboard.press("Escape")
    page.keyboard.press("ArrowRight")
    keys = page.locator("main .card .key").all_inner_texts()
    focused = lambda: page.evaluate("document.activeElement.querySelector('.key')?.textContent")  # noqa: E731
    assert focused() == keys[0]
    page.keyboard.press("ArrowRight")
    assert focused() == keys[1]
    page.keyboard.press("ArrowLeft")
    assert focused() == keys[0]
    page.keyboard.press("Enter")
    page.wait_for_url("**/object?**")
    page.keyboard.press("e")
    assert page.evaluate("document.activeElement.id") == "caption-text"
    page.keyboard.press("Escape")
    page.keyboard.press("Escape")
    page.wait_for_url(lambda url: "/object" not in url)


def test_a_write_from_a_page_without_the_token_is_forbidden(page, ui, origin, photos):
    page.goto(origin + "/?prefix=gallery/")  # no token in the URL, none in this tab
    page.click("main .card-link")
    page.fill("#caption-text", "no token")
    page.click("#edit button[type=submit]")
    page.wait_for_selector("#edit-result:has-text('Not saved')")
    assert row(photos, "gallery/blue.jpg")["caption"] != "no token"


@pytest.mark.parametrize("where", ["grid", "detail"])
def test_axe_finds_no_serious_or_critical_violations(page, ui, photos, where):
    open_gallery(page, ui, "prefix=gallery/")
    if where == "detail":
        page.click("main .card-link")
        page.wait_for_url("**/object?**")
    # evaluated through the DevTools protocol, as the page's CSP allows no inline script
    page.evaluate("src => { (0, eval)(src); }", AXE.read_text(encoding="utf-8"))
    result = page.evaluate("async () => await axe.run(document)")
    bad = [(v["id"], v["impact"], len(v["nodes"])) for v in result["violations"]
           if v["impact"] in ("serious", "critical")]  # fmt: skip
    assert bad == []
    assert parse_qs(urlsplit(ui.url).query)["token"]
