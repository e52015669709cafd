"""The ``captioner`` CLI end to end against the real embedded stack (moto on 127.0.0.1, the
Lambda handler behind the local SQS event source, a fake ModelsLab that downloads the
presigned URLs), plus the installed script in subprocesses: ``demo`` and ``local up``."""

from __future__ import annotations

import csv
import io
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from captioner import index
from captioner_tools.cli.app import app
from captioner_tools.cli.render import CSV_COLUMNS
from tests import images
from tests.conftest import API_KEY
from tests.fakes.modelslab import Reply
from tests.tools.conftest import (
    MAX_RECEIVE_COUNT,
    clean_environment,
    depth,
    free_port,
    row,
    wait_for,
    wait_for_status,
)

SCRIPT = Path(sys.executable).parent / "captioner"
runner = CliRunner()


def cli(stack, *args, **env):
    """Run a command in-process, pointed at the stack by AWS_ENDPOINT_URL only: names come
    from the stack outputs the local stack registered, as from a deployed stack."""
    environment = {"AWS_ENDPOINT_URL": stack.endpoint_url, "COLUMNS": "200", **env}
    for name in ("CAPTIONER_BUCKET", "CAPTIONS_TABLE", "CAPTIONER_QUEUE_URL", "CAPTIONER_DLQ_URL"):
        environment.setdefault(name, None)
    return runner.invoke(app, list(args), env=environment)


def ok(result):
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result.output


def one_error_line(result, *parts):
    """Usual mistakes: exit 1, one line on stderr, no traceback."""
    assert result.exit_code == 1, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    assert lines[0].startswith("error: ") and "Traceback" not in result.output
    for part in parts:
        assert part in lines[0], lines[0]
    return lines[0]


def put(stack, key, body):
    return stack.client("s3").put_object(Bucket=stack.bucket, Key=key, Body=body)


# -- upload → caption → get / list / search ----------------------------------------------------


@pytest.fixture(scope="module")
def gallery(stack):
    """Three uploads under e2e/, all finished."""
    for key, body in (("e2e/red dot.png", images.png()), ("e2e/blue.jpg", images.jpeg()),
                      ("e2e/notes.png", b"just some text, not an image")):  # fmt: skip
        put(stack, key, body)
    for key in ("e2e/red dot.png", "e2e/blue.jpg"):
        wait_for_status(stack, key, "CAPTIONED")
    wait_for_status(stack, "e2e/notes.png", "REJECTED")
    return stack


def test_get_prints_the_row_as_json_or_fields(gallery):
    out = ok(cli(gallery, "get", f"s3://{gallery.bucket}/e2e/red dot.png", "--json"))
    got = json.loads(out)
    assert got == row(gallery, "e2e/red dot.png")
    assert got["status"] == "CAPTIONED" and got["caption"] == "A picture named red dot.png."
    assert got["provider"] == "modelslab"
    text = ok(cli(gallery, "get", f"s3://{gallery.bucket}/e2e/red dot.png"))
    assert "A picture named red dot.png." in text and "CAPTIONED" in text


def test_list_is_newest_first_and_filters_by_prefix_status_and_time(gallery):
    url = f"s3://{gallery.bucket}/e2e/"
    rows = json.loads(ok(cli(gallery, "list", url, "--json")))
    assert {r["key"] for r in rows} == {"e2e/red dot.png", "e2e/blue.jpg", "e2e/notes.png"}
    stamps = [r["updated_at"] for r in rows]
    assert stamps == sorted(stamps, reverse=True)
    rejected = json.loads(ok(cli(gallery, "list", url, "--status", "rejected", "--json")))
    assert [r["key"] for r in rejected] == ["e2e/notes.png"]
    assert "not an image" in rejected[0]["reason"]
    assert len(json.loads(ok(cli(gallery, "list", url, "--limit", "1", "--json")))) == 1
    assert json.loads(ok(cli(gallery, "list", url, "--since", "2999-01-01", "--json"))) == []
    assert len(json.loads(ok(cli(gallery, "list", url, "--since", "1h", "--json")))) == 3
    # No URL: the deployment's bucket (from the stack outputs).
    everything = json.loads(ok(cli(gallery, "list", "--limit", "0", "--json")))
    assert {r["key"] for r in rows} <= {r["key"] for r in everything}


def test_list_as_csv_and_as_a_table(gallery):
    url = f"s3://{gallery.bucket}/e2e/"
    parsed = list(csv.reader(io.StringIO(ok(cli(gallery, "list", url, "--csv")))))
    assert tuple(parsed[0]) == CSV_COLUMNS and len(parsed) == 4
    by_key = {r[1]: dict(zip(CSV_COLUMNS, r, strict=True)) for r in parsed[1:]}
    assert by_key["e2e/blue.jpg"]["caption"] == "A picture named blue.jpg."
    table = ok(cli(gallery, "list", url))
    assert "e2e/notes.png" in table and "REJECTED" in table and "A picture named blue.jpg." in table


def test_list_by_status_alone_uses_the_status_index(gallery):
    rows = json.loads(ok(cli(gallery, "list", "--status", "REJECTED", "--json")))
    assert rows and all(r["status"] == "REJECTED" for r in rows)


def test_search_is_case_insensitive_and_needs_every_word(gallery):
    found = json.loads(ok(cli(gallery, "search", "PICTURE named BLUE", "--json")))
    assert [r["key"] for r in found] == ["e2e/blue.jpg"]
    assert found[0] == row(gallery, "e2e/blue.jpg")  # the rows, as `get --json` prints them
    assert json.loads(ok(cli(gallery, "search", "named zebra", "--json"))) == []
    assert "e2e/red dot.png" in ok(cli(gallery, "search", "red", "dot"))
    parsed = list(csv.reader(io.StringIO(ok(cli(gallery, "search", "named", "dot", "--csv")))))
    assert tuple(parsed[0]) == CSV_COLUMNS and [r[1] for r in parsed[1:]] == ["e2e/red dot.png"]


def count_dynamodb_calls(monkeypatch):
    from captioner_tools.cli.target import Deployment

    calls, real = [], Deployment.client

    def counting(self, service):
        client = real(self, service)
        if service == "dynamodb" and not getattr(client, "_counted", False):
            client.meta.events.register(
                "before-call.*.*", lambda model, **kw: calls.append(model.name)
            )
            client._counted = True
        return client

    monkeypatch.setattr(Deployment, "client", counting)
    return calls


def test_search_reads_the_word_index_not_the_table(gallery, monkeypatch):
    calls = count_dynamodb_calls(monkeypatch)
    found = json.loads(ok(cli(gallery, "search", "named", "jpg", "--json")))
    assert [r["key"] for r in found] == ["e2e/blue.jpg"]
    # the stack outputs (CloudFormation) aside: the word's shards, then the rows found
    assert "Scan" not in calls
    assert calls == ["Query"] * index.SHARDS + ["BatchGetItem"]
    calls.clear()
    scanned = json.loads(ok(cli(gallery, "search", "named", "jpg", "--scan", "--json")))
    assert scanned == found and calls == ["DescribeTable", "Scan"]


def test_search_filters_by_prefix_and_status_and_pages_newest_first(gallery):
    url = f"s3://{gallery.bucket}/e2e/"
    both = json.loads(ok(cli(gallery, "search", "named", url, "--json")))
    assert {r["key"] for r in both} == {"e2e/blue.jpg", "e2e/red dot.png"}
    assert both[0]["indexed_at"] > both[1]["indexed_at"]  # newest first
    assert (
        json.loads(ok(cli(gallery, "search", "named", f"s3://{gallery.bucket}/nope/", "--json")))
        == []
    )
    assert (
        json.loads(ok(cli(gallery, "search", "named", url, "--status", "failed", "--json"))) == []
    )
    assert len(json.loads(ok(cli(gallery, "search", "named", "-s", "CAPTIONED", "--json")))) >= 2
    first = cli(gallery, "search", "named", url, "--limit", "1", "--json")
    assert [r["key"] for r in json.loads(first.stdout)] == [both[0]["key"]]
    cursor = first.stderr.split("--after ", 1)[1].strip()
    rest = json.loads(ok(cli(gallery, "search", "named", url, "--after", cursor, "--json")))
    assert [r["key"] for r in rest] == [both[1]["key"]]


def test_search_explains_words_it_cannot_search(gallery):
    one_error_line(cli(gallery, "search", "a", "photo", "of"), "very common words", "--scan")
    one_error_line(cli(gallery, "search", "x", "--status", "deleted"), "--scan --status DELETED")


def test_reindex_makes_rows_from_before_the_index_searchable_without_captioning(gallery):
    ddb = gallery.client("dynamodb")
    table = gallery.table
    old = {"bucket": gallery.bucket, "key": "old/walrus.jpg", "status": "CAPTIONED",
           "caption": "A walrus on the ice", "updated_at": "2026-01-01T00:00:00.000Z"}  # fmt: skip
    ddb.put_item(TableName=table, Item={k: {"S": v} for k, v in old.items()})
    assert json.loads(ok(cli(gallery, "search", "walrus", "--json"))) == []
    assert [
        r["key"] for r in json.loads(ok(cli(gallery, "search", "walrus", "--scan", "--json")))
    ] == ["old/walrus.jpg"]
    url = f"s3://{gallery.bucket}/old/"
    dry = json.loads(ok(cli(gallery, "backfill", url, "--reindex", "--dry-run", "--json")))
    assert dry["rows"] == 1 and dry["indexed"] == 1
    assert json.loads(ok(cli(gallery, "search", "walrus", "--json"))) == []
    done = json.loads(ok(cli(gallery, "backfill", url, "--reindex", "--json")))
    assert done["rows"] == 1 and done["indexed"] == 1 and not done["dry_run"]
    found = json.loads(ok(cli(gallery, "search", "walrus", "--json")))
    assert [r["key"] for r in found] == ["old/walrus.jpg"]
    assert found[0]["updated_at"] == old["updated_at"]  # a caption row, not re-captioned
    again = json.loads(ok(cli(gallery, "backfill", url, "--reindex", "--json")))
    assert again["current"] == 1 and again["indexed"] == 0


# -- status, dead letters and redrive ----------------------------------------------------------


def test_status_counts_rows_per_status(gallery):
    report = json.loads(ok(cli(gallery, "status", "--json")))
    for status, count in report["counts"].items():
        listed = json.loads(ok(cli(gallery, "list", "--status", status, "--limit", "0", "--json")))
        assert count == len(listed), status
    assert report["counts"]["REJECTED"] >= 1 and report["counts"]["CAPTIONED"] >= 2
    assert set(report["queue"]) == {"visible", "in_flight", "delayed"}
    text = ok(cli(gallery, "status"))
    assert "Rows per status" in text and "Dead-letter queue" in text


def test_status_shows_rows_stuck_pending_and_backfill_finishes_them(stack):
    """An instance killed on the last delivery leaves PENDING with an expired lease."""
    put(stack, "stuck/s.png", images.png())
    # finished (tagged): a row seen CAPTIONED before its tag step would be rewritten under us
    wait_for(lambda: row(stack, "stuck/s.png"), lambda r: bool(r and r.get("tag_status")))
    stack.client("dynamodb").update_item(
        TableName=stack.table,
        Key={"bucket": {"S": stack.bucket}, "key": {"S": "stuck/s.png"}},
        UpdateExpression="SET #s = :p, #l = :past REMOVE tag_status, caption",
        ExpressionAttributeNames={"#s": "status", "#l": "lease_until"},
        ExpressionAttributeValues={
            ":p": {"S": "PENDING"},
            ":past": {"S": "2000-01-01T00:00:00.000Z"},
        },
    )
    report = json.loads(ok(cli(stack, "status", "--json")))
    assert report["idle_pending"]["count"] >= 1
    assert "stuck/s.png" in [r["key"] for r in report["idle_pending"]["rows"]]
    assert "PENDING with an expired lease" in ok(cli(stack, "status"))

    out = json.loads(ok(cli(stack, "backfill", f"s3://{stack.bucket}/stuck/", "--json")))
    assert out["enqueued"] == 1
    wait_for_status(stack, "stuck/s.png", "CAPTIONED")
    report = json.loads(ok(cli(stack, "status", "--json")))
    assert "stuck/s.png" not in [r["key"] for r in report["idle_pending"]["rows"]]


def test_poison_message_dead_letters_and_redrive_brings_it_back(stack, modelslab):
    # An invalid key: never the image's fault, not retried in-process, fails every delivery.
    modelslab.queue(*[Reply({"status": "error", "message": "Invalid Api Key"})] * 2)
    put(stack, "poison/p.png", images.png())
    wait_for(lambda: depth(stack, stack.dlq_url), lambda n: n == 1, 20, "the dead-letter queue")
    failed = wait_for_status(stack, "poison/p.png", "FAILED")
    assert "dead-lettered" in failed["reason"] and "Invalid Api Key" in failed["last_error"]
    assert failed["attempts"] == MAX_RECEIVE_COUNT

    report = json.loads(ok(cli(stack, "status", "--json")))
    assert report["dead_letter"]["visible"] == 1
    assert report["last_errors"][0]["key"] == "poison/p.png"
    assert "poison/p.png" in ok(cli(stack, "status"))

    modelslab.caption_replies.clear()  # the key is fixed
    moved = ok(cli(stack, "redrive"))
    assert "moved 1 of 1 message(s)" in moved and "receive → send → delete" in moved
    fixed = wait_for_status(stack, "poison/p.png", "CAPTIONED")
    assert fixed["caption"] == "A picture named p.png." and "last_error" not in fixed
    assert depth(stack, stack.dlq_url) == 0
    assert "nothing to redrive" in ok(cli(stack, "redrive"))


# -- backfill ------------------------------------------------------------------------------------


def test_backfill_enqueues_what_is_not_captioned_and_estimates_the_cost(stack, modelslab):
    put(stack, "old/done.png", images.png())
    wait_for_status(stack, "old/done.png", "CAPTIONED")
    # Objects that existed "before the stack": their notifications never reach the function.
    stack.stop_poller()
    for key, body in (("old/a.png", images.png()), ("old/b.jpg", images.jpeg()), ("old/", b"")):
        put(stack, key, body)
    stack.client("sqs").purge_queue(QueueUrl=stack.queue_url)
    stack.start_poller()

    dry = ok(cli(stack, "backfill", f"s3://{stack.bucket}/old/", "--dry-run"))
    assert "would enqueue" in dry and "2 × $0.0047 = $0.0094" in dry
    summary = json.loads(
        ok(cli(stack, "backfill", f"s3://{stack.bucket}/old/", "--dry-run", "--json"))
    )
    assert summary == {
        "bucket": stack.bucket, "prefix": "old/", "dry_run": True, "listed": 4, "folders": 1,
        "already_captioned": 1, "already_rejected": 0, "other_provider": 0, "enqueued": 2,
        "events_owed": 0, "failed": 0,
        "estimated_cost_usd": 0.0094,
    }  # fmt: skip
    assert row(stack, "old/a.png") is None  # a dry run sends nothing

    paid = len(modelslab.paid_calls())
    real = json.loads(ok(cli(stack, "backfill", f"s3://{stack.bucket}/old/", "--json")))
    assert (real["enqueued"], real["already_captioned"]) == (2, 1)
    assert wait_for_status(stack, "old/a.png", "CAPTIONED")["caption"] == "A picture named a.png."
    wait_for_status(stack, "old/b.jpg", "CAPTIONED")
    assert len(modelslab.paid_calls()) == paid + 2  # old/done.png was not paid for again

    again = json.loads(ok(cli(stack, "backfill", f"s3://{stack.bucket}/old/", "--json")))
    assert (again["enqueued"], again["already_captioned"]) == (0, 3)


def test_backfill_recaptions_one_providers_rows_with_another(stack):
    wait_for_status(stack, "old/a.png", "CAPTIONED")
    out = json.loads(ok(cli(stack, "backfill", f"s3://{stack.bucket}/old/", "--provider", "local",
                            "--only-provider", "modelslab", "--json")))  # fmt: skip
    assert out["enqueued"] == 3 and out["estimated_cost_usd"] == 0.0
    for key in ("old/a.png", "old/b.jpg", "old/done.png"):
        recaptioned = wait_for(
            lambda key=key: row(stack, key), lambda r: (r or {}).get("provider") == "local", 30, key
        )
        assert recaptioned["status"] == "CAPTIONED"
        assert recaptioned["caption"].startswith("A photo")  # the offline model's wording


# -- the usual mistakes: one line, exit 1, no traceback ------------------------------------------


def test_local_stack_not_running(stack):
    port = free_port()
    result = cli(stack, "status", "--endpoint-url", f"http://127.0.0.1:{port}")
    one_error_line(result, f"cannot reach http://127.0.0.1:{port}", "captioner local up")


def test_bad_s3_urls(stack):
    one_error_line(cli(stack, "get", "photos/cat.png"), "not an s3:// URL")
    one_error_line(cli(stack, "get", f"s3://{stack.bucket}"), "names a bucket, not an object")
    one_error_line(cli(stack, "list", "s3://Bad_Bucket/x"), "invalid bucket name")


def test_wrong_bucket_stack_and_row(stack):
    one_error_line(cli(stack, "backfill", "s3://no-such-bucket-here/"), "no-such-bucket-here")
    one_error_line(cli(stack, "list", "--stack-name", "nope"), "stack 'nope' not found")
    one_error_line(cli(stack, "get", f"s3://{stack.bucket}/never.png"), "no caption row")
    one_error_line(cli(stack, "list", "--status", "DONE"), "--status must be one of")
    one_error_line(cli(stack, "list", "--json", "--csv"), "choose one of --json and --csv")
    one_error_line(cli(stack, "list", "--since", "yesterday"), "--since")
    one_error_line(cli(stack, "backfill", f"s3://{stack.bucket}/", "--provider", "x"), "--provider")


def test_no_credentials_and_no_region_against_aws(stack, tmp_path):
    """Caught before any request leaves the machine."""
    nothing = str(tmp_path / "none")
    aws = {"AWS_ENDPOINT_URL": None, "AWS_ACCESS_KEY_ID": None, "AWS_SECRET_ACCESS_KEY": None,
           "AWS_SESSION_TOKEN": None, "AWS_PROFILE": None, "AWS_CONFIG_FILE": nothing,
           "AWS_SHARED_CREDENTIALS_FILE": nothing, "AWS_EC2_METADATA_DISABLED": "true",
           "AWS_DEFAULT_REGION": None}  # fmt: skip
    result = runner.invoke(app, ["status"], env={**aws, "AWS_REGION": "eu-west-1"})
    one_error_line(result, "no AWS credentials")
    result = runner.invoke(app, ["status"], env={**aws, "AWS_REGION": None})
    one_error_line(result, "no AWS region")


def test_local_up_on_a_busy_port(stack):
    one_error_line(cli(stack, "local", "up", "--port", str(stack.port)), "is in use")


def test_demo_on_a_missing_directory(stack, tmp_path):
    one_error_line(cli(stack, "demo", str(tmp_path / "nope")), "not a directory")


def test_help_lists_every_command():
    out = ok(runner.invoke(app, ["--help"], env={"COLUMNS": "200"}))
    for name in ("demo", "get", "list", "search", "status", "connect", "backfill", "redrive",
                 "local"):  # fmt: skip
        assert f" {name} " in out


# -- the installed script, in its own process ----------------------------------------------------


def run_script(*args, timeout=90, **env):
    return subprocess.run(
        [str(SCRIPT), *args],
        env=clean_environment(**env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_demo_with_modelslab_uploads_a_directory_and_waits_for_every_caption(modelslab, tmp_path):
    (tmp_path / "trip").mkdir()
    (tmp_path / "trip" / "beach.png").write_bytes(images.png(90, 60))
    (tmp_path / "dog.jpg").write_bytes(images.jpeg())
    (tmp_path / "scan.png").write_bytes(b"%PDF-1.7 not really a png")
    (tmp_path / "readme.txt").write_text("not an image name: not uploaded")
    fetched = len(modelslab.fetched)

    done = run_script("demo", str(tmp_path), "--timeout", "60",
                      MODELSLAB_API_URL=modelslab.url, MODELSLAB_API_KEY=API_KEY)  # fmt: skip

    assert done.returncode == 0, done.stdout + done.stderr
    assert "provider modelslab" in done.stdout
    lines = {
        line.split("│")[1].strip(): line for line in done.stdout.splitlines() if "│ demo/" in line
    }
    assert set(lines) == {"demo/dog.jpg", "demo/scan.png", "demo/trip/beach.png"}
    assert (
        "CAPTIONED" in lines["demo/trip/beach.png"]
        and "A picture named beach.png." in lines["demo/trip/beach.png"]
    )
    assert "REJECTED" in lines["demo/scan.png"]
    assert "3 of 3 images finished" in done.stdout
    assert len(modelslab.fetched) == fetched + 2  # it downloaded both images from moto
    assert all(status == 200 for _, status in modelslab.fetched[fetched:])


def test_demo_exits_non_zero_when_captions_do_not_finish_in_time(modelslab, tmp_path):
    (tmp_path / "slow.png").write_bytes(images.png())
    modelslab.queue(Reply({"status": "success", "output": ["late"]}, delay=2))

    late = run_script("demo", str(tmp_path), "--timeout", "1",
                      MODELSLAB_API_URL=modelslab.url, MODELSLAB_API_KEY=API_KEY)  # fmt: skip

    assert late.returncode == 1
    assert "timed out after 1 s" in late.stderr and "0 of 1 images finished" in late.stdout


@pytest.mark.slow
def test_demo_captions_the_sample_photos_offline():
    """The README's main job: no key, no network, the bundled model."""
    done = run_script("demo", timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "provider local" in done.stdout and "5 of 5 images finished" in done.stdout
    assert "A photo of an espresso." in done.stdout  # coffee.jpg
    assert "cat" in next(line for line in done.stdout.splitlines() if "chelsea.jpg" in line)
    assert done.stdout.count("│ CAPTIONED │") == 5


@pytest.mark.slow
def test_local_up_runs_in_the_foreground_until_interrupted(tmp_path):
    port = free_port()
    proc = subprocess.Popen(
        [
            str(SCRIPT),
            "local",
            "up",
            "--port",
            str(port),
            "--visibility-timeout",
            "1",
            "--parameter-overrides",
            "MaxReceiveCount=3 CaptionLength=short",
        ],
        env=clean_environment(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        banner = _read_until(proc, "ready", timeout=60)
        assert f"http://127.0.0.1:{port}" in banner and "Provider" in banner
        assert f"export AWS_ENDPOINT_URL=http://127.0.0.1:{port}" in banner
        assert "in memory" in banner and "after 3 receives" in banner
        # Another "shell": only the endpoint; no credentials, no names.
        env = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": None,
               "AWS_SECRET_ACCESS_KEY": None, "AWS_SESSION_TOKEN": None, "COLUMNS": "200",
               "CAPTIONER_BUCKET": None, "CAPTIONS_TABLE": None, "CAPTIONER_QUEUE_URL": None,
               "CAPTIONER_DLQ_URL": None}  # fmt: skip
        import boto3

        s3 = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}", region_name="us-east-1",
                          aws_access_key_id="testing", aws_secret_access_key="testing")  # fmt: skip
        s3.put_object(Bucket="captioner-local-uploads", Key="up/dot.png", Body=images.png())
        url = "s3://captioner-local-uploads/up/dot.png"
        got = wait_for(
            lambda: runner.invoke(app, ["get", url, "--json"], env=env),
            lambda r: (
                r.exit_code == 0 and json.loads(r.output).get("status") not in (None, "PENDING")
            ),
            30,
        )
        captioned = json.loads(got.output)
        assert captioned["provider"] == "local"  # no key: the offline model
        assert captioned["length"] == "short"  # CaptionLength=short reached the function
        assert "up/dot.png → CAPTIONED" in _read_until(proc, "up/dot.png", timeout=10)
        proc.send_signal(signal.SIGINT)
        assert "stopped" in _read_until(proc, "stopped", timeout=30)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _read_until(proc, marker, timeout):
    """Lines of ``proc``'s output up to the first containing ``marker`` (a reader thread,
    so a silent process cannot block the test past ``timeout``)."""
    lines = proc.lines if hasattr(proc, "lines") else _start_reader(proc)
    deadline, seen = time.monotonic() + timeout, []
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=0.2)
        except queue.Empty:
            continue
        seen.append(line)
        if marker in line:
            return "".join(seen)
    raise AssertionError(f"{marker!r} not printed; got:\n{''.join(seen)}")


def _start_reader(proc):
    proc.lines = queue.Queue()
    threading.Thread(
        target=lambda: [proc.lines.put(line) for line in iter(proc.stdout.readline, "")],
        daemon=True,
    ).start()
    return proc.lines


def test_script_is_installed():
    assert SCRIPT.is_file() or shutil.which("captioner"), "pip install -e '.[dev]' first"
    assert os.access(SCRIPT, os.X_OK)


def test_search_by_meaning_ranks_captions_that_say_it_in_other_words(
    gallery, monkeypatch, tmp_path
):
    from captioner.store import CaptionStore, ObjectRef, Result, Status, TagStatus
    from captioner_tools.search import ranking

    store = CaptionStore(gallery.table, gallery.client("dynamodb"))
    for key, text in (("pets/kitten.jpg", "A photo of a kitten asleep."),
                      ("pets/cat.jpg", "A photo of an Egyptian cat or a tiger cat."),
                      ("pets/coffee.jpg", "A photo of an espresso.")):  # fmt: skip
        claim = store.claim(ObjectRef(gallery.bucket, key, "v1", "e", 5, None), 60)
        store.save_result(claim, Result(Status.CAPTIONED, caption=text))
        store.save_tag(claim, TagStatus.WRITTEN, text, None)
    monkeypatch.setattr(ranking, "vocabulary_words", lambda: ["cat", "kitten", "dog", "coffee"])
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    url = f"s3://{gallery.bucket}/pets/"
    exact = json.loads(ok(cli(gallery, "search", "tabby", "cat", url, "--json")))
    assert [r["key"] for r in exact] == []  # no caption has both words
    result = cli(gallery, "search", "tabby", "cat", url, "--meaning", "--json")
    ok(result)
    found = json.loads(result.stdout)
    assert [r["key"] for r in found][:2] == ["pets/cat.jpg", "pets/kitten.jpg"]
    assert all(0 < r["score"] <= 1 for r in found) and "pets/coffee.jpg" not in [
        r["key"] for r in found
    ]
    assert "embedding the search vocabulary" in result.stderr  # once, then cached
    again = cli(gallery, "search", "kitten", url, "--meaning")
    assert "pets/kitten.jpg" in ok(again) and "embedding" not in again.stderr
