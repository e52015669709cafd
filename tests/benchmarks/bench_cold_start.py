"""Cold start of the Lambda function, each sample in a fresh Python process.

    .venv/bin/python tests/benchmarks/bench_cold_start.py [-n 5] [--no-pyc]
    .venv/bin/python tests/benchmarks/bench_cold_start.py --packages .aws-sam/build

measures, N times each (min / median / max):

- ``import captioner.handler`` (what Lambda's init phase pays before the first event);
- the biggest import contributors, parsed from ``python -X importtime``;
- the first invocation as a user pays it: import + ``App.from_env()`` + one
  ``lambda_handler`` call on an SQS-wrapped S3 event, against moto (in-process ``mock_aws``)
  and the fake ModelsLab on 127.0.0.1 (run by this parent process), for
  ``CAPTION_PROVIDER=modelslab`` and ``local`` (the offline ONNX model);
- peak RSS of each process (``resource.getrusage``).

``--packages BUILD_DIR`` (a ``sam build`` output, e.g. ``.aws-sam/build``) measures instead what
each deployment downloads before that: every built package's size unzipped and zipped (as
``sam package`` uploads it) and the time to unpack it, which Lambda pays on every cold start
after fetching the zip. A ``local`` deployment gets CaptionFunction and OfflineModelLayer,
every other one CaptionFunction alone.

Bytecode comes from a private cache filled by untimed runs; ``--no-pyc`` keeps only the
standard library's there, so everything else is compiled in every process, as in Lambda
(``sam build`` ships no ``.pyc`` and /var/task is read-only).

The measured child runs this same file with ``--child``; until its timed import is done it
has only touched the standard library. It imports moto only after that import, and never
``tests.conftest`` (which would preload pytest and httpx, the ModelsLab client's import):
the parent builds the event and the context with the conftest helpers and passes them on.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
KEY = "photos/cold start.jpg"
VERSION_MARK = "__VERSION_ID__"  # moto picks the version id; the child fills it in
PROVIDERS = ("modelslab", "local")
# Installed here by the `cli` extra but not in the function's package (functions/
# requirements.txt). httpx imports its command line tool, and with it these, when they are
# importable: hide them so the first ModelsLab call imports what it would in Lambda.
NOT_IN_PACKAGE = ("click", "rich", "pygments")


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def ms_since(start: float) -> float:
    return (time.perf_counter() - start) * 1000


# -- the child: one cold process -----------------------------------------------------------


def child(mode: str, job_path: str | None, out_path: str) -> None:
    for name in NOT_IN_PACKAGE:
        sys.modules[name] = None  # type: ignore[assignment]  # makes `import name` fail
    if mode == "baseline":
        Path(out_path).write_text(json.dumps(baseline()))
        return
    start = time.perf_counter()
    from captioner import handler

    result = {"import_ms": ms_since(start), "rss_import_mb": peak_rss_mb()}
    if mode == "init":
        result |= {"from_env_ms": _from_env_ms(handler)}
    if mode == "invoke" and job_path:
        result |= first_invocation(handler, json.loads(Path(job_path).read_text()))
    Path(out_path).write_text(json.dumps(result))


def _from_env_ms(handler: Any) -> float:
    start = time.perf_counter()
    handler.get_app()
    return ms_since(start)


def baseline() -> dict[str, float]:
    """The least any such function pays: import boto3 and httpx, make the clients it
    captions with (S3, DynamoDB, EventBridge, an HTTP client), as ``App.from_env`` configures
    them."""
    start = time.perf_counter()
    import boto3
    import httpx
    from botocore.config import Config as BotoConfig

    import_ms = ms_since(start)
    start = time.perf_counter()
    session = boto3.session.Session()
    cfg = BotoConfig(max_pool_connections=10, retries={"mode": "standard", "max_attempts": 3})
    session.client("s3", config=cfg)
    session.client("dynamodb", config=cfg)
    session.client("events", config=cfg)  # "Caption Status Changed" events (on by default)
    httpx.Client(timeout=httpx.Timeout(30.0, connect=5.0))
    return {"import_ms": import_ms, "clients_ms": ms_since(start)}


def first_invocation(handler: Any, job: dict[str, Any]) -> dict[str, Any]:
    from moto import mock_aws

    with mock_aws():
        version_id = put_fixture(job)
        rss_harness = peak_rss_mb()
        event = json.loads(job["event"].replace(VERSION_MARK, version_id))
        fields = job["context"]
        context = SimpleNamespace(
            **fields, get_remaining_time_in_millis=lambda: fields["remaining_ms"]
        )
        start = time.perf_counter()
        handler.get_app()  # App.from_env(), as the first invocation builds it
        from_env_ms = ms_since(start)
        start = time.perf_counter()
        response = handler.lambda_handler(event, context)
        call_ms = ms_since(start)
        status = row_status(job)
    if response != {"batchItemFailures": []} or status != "CAPTIONED":
        raise SystemExit(f"first invocation did not caption: {response}, row {status}")
    return {
        "from_env_ms": from_env_ms,
        "call_ms": call_ms,
        "rss_harness_mb": rss_harness,
        "rss_peak_mb": peak_rss_mb(),
    }


def put_fixture(job: dict[str, Any]) -> str:
    """The bucket, table and object the event names, in moto. Returns the version id."""
    import boto3

    s3 = boto3.client("s3", region_name="us-east-1")
    s3.create_bucket(Bucket=job["bucket"])
    s3.put_bucket_versioning(Bucket=job["bucket"], VersioningConfiguration={"Status": "Enabled"})
    ddb = boto3.client("dynamodb", region_name="us-east-1")
    ddb.create_table(TableName=job["table"], **job["table_definition"])
    body = Path(job["body_path"]).read_bytes()
    return s3.put_object(Bucket=job["bucket"], Key=KEY, Body=body)["VersionId"]


def row_status(job: dict[str, Any]) -> str | None:
    import boto3

    key = {"bucket": {"S": job["bucket"]}, "key": {"S": KEY}}
    item = boto3.client("dynamodb").get_item(TableName=job["table"], Key=key).get("Item")
    return item["status"]["S"] if item else None


# -- the parent: set up, spawn, summarise --------------------------------------------------


def bench_env(modelslab_url: str, table: str, api_key: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "POWERTOOLS_"))}
    return env | {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_REGION": "us-east-1",
        "POWERTOOLS_TRACE_DISABLED": "true",
        "POWERTOOLS_METRICS_NAMESPACE": "CaptionerBench",
        "CAPTIONS_TABLE": table,
        "MODELSLAB_API_URL": modelslab_url,
        "MODELSLAB_API_KEY": api_key,
        "PYTHONPATH": os.pathsep.join([str(ROOT / "functions"), str(ROOT)]),
    }


def bytecode_env(env: dict[str, str], job: Path, workdir: Path, *, cached: bool) -> dict[str, str]:
    """Children read bytecode from a private cache (``PYTHONPYCACHEPREFIX``) and never write
    it. ``cached``: it holds every module a run imports. Otherwise only the standard
    library's, as in Lambda: ``sam build`` ships no ``.pyc`` and /var/task is read-only, so
    every cold start compiles the function's and its dependencies' sources."""
    import shutil
    import sysconfig

    prefix = workdir / "pycache"
    warm = env | {"PYTHONPYCACHEPREFIX": str(prefix)}
    warm.pop("PYTHONDONTWRITEBYTECODE", None)
    for provider in PROVIDERS:  # untimed runs that write the cache
        spawn("invoke", job, warm | {"CAPTION_PROVIDER": provider}, workdir)
    if not cached:
        stdlib = prefix / Path(sysconfig.get_paths()["stdlib"]).resolve().relative_to("/")
        shutil.move(stdlib, workdir / "stdlib")
        shutil.rmtree(prefix)
        stdlib.parent.mkdir(parents=True)
        shutil.move(workdir / "stdlib", stdlib)
    return warm | {"PYTHONDONTWRITEBYTECODE": "1"}


def make_job(workdir: Path) -> Path:
    """Event, context, table schema and image for the child, built with the test helpers."""
    from dataclasses import asdict

    from captioner_tools.local.template import table_definition
    from tests import images
    from tests.conftest import BUCKET, TABLE, LambdaContext, notification, s3_record, sqs_event

    body = images.jpeg(640, 480)
    (workdir / "image.jpg").write_bytes(body)
    sequencer = "0066A1B2C3D4E5F601"
    record = s3_record(
        KEY, version_id=VERSION_MARK, etag=md5(body), size=len(body), sequencer=sequencer
    )
    job = {
        "bucket": BUCKET,
        "table": TABLE,
        "table_definition": table_definition(),
        "body_path": str(workdir / "image.jpg"),
        "event": json.dumps(sqs_event(notification(record))),
        "context": asdict(LambdaContext(aws_request_id="req-cold")),
    }
    path = workdir / "job.json"
    path.write_text(json.dumps(job))
    return path


def md5(body: bytes) -> str:
    import hashlib

    return hashlib.md5(body).hexdigest()  # S3's ETag of a single-part upload


def spawn(mode: str, job: Path, env: dict[str, str], workdir: Path) -> dict[str, float]:
    import subprocess

    out = workdir / "result.json"
    out.unlink(missing_ok=True)
    cmd = [sys.executable, __file__, "--child", mode, "--job", str(job), "--out", str(out)]
    # Through a shell that forks: a process started straight from this (large) one starts
    # with its peak RSS as ru_maxrss, which Linux keeps across exec.
    cmd = ["/bin/sh", "-c", '"$@"; exit $?', "sh", *cmd]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0 or not out.exists():
        raise RuntimeError(
            f"child {mode} failed ({done.returncode}):\n{done.stdout[-3000:]}{done.stderr[-3000:]}"
        )
    return json.loads(out.read_text())


def import_times(env: dict[str, str]) -> list[tuple[str, int, float, float]]:
    """``-X importtime`` of the handler: (module, depth, self ms, cumulative ms) per line."""
    import subprocess

    cmd = [sys.executable, "-X", "importtime", "-c", "import captioner.handler"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
    rows = []
    for line in done.stderr.splitlines():
        if not line.startswith("import time:") or "[us]" in line:
            continue
        self_us, cum_us, name = line.removeprefix("import time:").split("|")
        depth = (len(name) - len(name.lstrip())) // 2
        rows.append((name.strip(), depth, int(self_us) / 1000, int(cum_us) / 1000))
    return rows


def top_contributors(runs: list[list[tuple[str, int, float, float]]], k: int = 10) -> list:
    """The ``k`` slowest imports of the handler by median cumulative time, outside
    ``captioner`` and not nested in one already listed (so nothing is counted twice)."""
    import statistics

    medians: dict[str, tuple[float, float]] = {}
    for name in {row[0] for row in runs[0]}:
        rows = [row for run in runs for row in run if row[0] == name]
        medians[name] = (
            statistics.median(row[2] for row in rows),
            statistics.median(row[3] for row in rows),
        )
    parents = import_parents(runs[0])
    picked: list[str] = []
    for name in sorted(medians, key=lambda n: -medians[n][1]):
        chain = ancestors(name, parents)
        if name.startswith("captioner") or "captioner.handler" not in chain:
            continue
        if not set(chain) & set(picked):
            picked.append(name)
    return [(name, *medians[name]) for name in picked[:k]]


def import_parents(rows: list[tuple[str, int, float, float]]) -> dict[str, str]:
    """``-X importtime`` prints children before their parent, one indent level deeper."""
    parents: dict[str, str] = {}
    pending: list[tuple[str, int]] = []
    for name, depth, *_ in rows:
        while pending and pending[-1][1] > depth:
            parents[pending.pop()[0]] = name
        pending.append((name, depth))
    return parents


def ancestors(name: str, parents: dict[str, str]) -> list[str]:
    chain = []
    while name in parents:
        name = parents[name]
        chain.append(name)
    return chain


def summary(label: str, values: list[float], unit: str = "ms") -> str:
    import statistics

    low, mid, high = min(values), statistics.median(values), max(values)
    return f"{label:44} {low:8.0f} {mid:8.0f} {high:8.0f}  {unit}"


def report_runs(n: int, imports: list[dict], invokes: dict[str, list[dict]]) -> None:
    print(f"\ncold start, {n} fresh processes each{'':14} {'min':>8} {'median':>8} {'max':>8}")
    print(summary("import captioner.handler", [r["import_ms"] for r in imports]))
    print(summary("  peak RSS after the import", [r["rss_import_mb"] for r in imports], "MB"))
    for provider, runs in invokes.items():
        print(f"{provider} provider, first invocation:")
        print(summary("  import", [r["import_ms"] for r in runs]))
        print(summary("  App.from_env()", [r["from_env_ms"] for r in runs]))
        print(summary("  first lambda_handler call", [r["call_ms"] for r in runs]))
        totals = [r["import_ms"] + r["from_env_ms"] + r["call_ms"] for r in runs]
        print(summary("  cold start (sum of the three)", totals))
        print(summary("  peak RSS (includes moto's)", [r["rss_peak_mb"] for r in runs], "MB"))
        own = [r["rss_import_mb"] + r["rss_peak_mb"] - r["rss_harness_mb"] for r in runs]
        print(summary("  peak RSS without moto (estimate)", own, "MB"))


def report_baseline(inits: list[dict], bases: list[dict]) -> None:
    """Import + set-up of the handler against a bare process that imports boto3 and httpx
    and makes its clients (both modelslab, tracing off, the same bytecode)."""
    import statistics

    handler_ms = [r["import_ms"] + r["from_env_ms"] for r in inits]
    base_ms = [r["import_ms"] + r["clients_ms"] for r in bases]
    print(
        "\nagainst a bare process (import boto3 + httpx; S3, DynamoDB, EventBridge, HTTP clients):"
    )
    print(summary("  handler: import + App.from_env()", handler_ms))
    print(summary("  bare: import boto3, httpx", [r["import_ms"] for r in bases]))
    print(summary("  bare: make the clients", [r["clients_ms"] for r in bases]))
    print(summary("  bare: both", base_ms))
    ratio = statistics.median(handler_ms) / statistics.median(base_ms)
    print(f"  handler / bare (medians) = {ratio:.2f}")


def report_imports(n: int, runs: list[list[tuple[str, int, float, float]]]) -> None:
    import statistics

    total = statistics.median(r[3] for run in runs for r in run if r[0] == "captioner.handler")
    own = statistics.median(sum(r[2] for r in run if r[0].startswith("captioner")) for run in runs)
    print(f"\nslowest imports (-X importtime, median of {n}){'':10} {'self':>8} {'cumul.':>8}")
    for name, self_ms, cum_ms in top_contributors(runs):
        print(f"  {name:52} {self_ms:8.1f} {cum_ms:8.1f}  ms")
    print(f"  {'captioner.* modules themselves':52} {own:8.1f} {'':8}  ms")
    print(f"  {'all of captioner.handler':52} {'':8} {total:8.1f}  ms")


def run(n: int, *, cached: bool, compare_only: bool = False) -> None:
    import tempfile

    from tests.conftest import API_KEY, TABLE
    from tests.fakes.modelslab import FakeModelsLab

    fake = FakeModelsLab().start()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            workdir = Path(tmp)
            job = make_job(workdir)
            env = bytecode_env(bench_env(fake.url, TABLE, API_KEY), job, workdir, cached=cached)
            if not compare_only:
                imports = [spawn("import", job, env, workdir) for _ in range(n)]
                invokes = {}
                for provider in PROVIDERS:
                    provider_env = env | {"CAPTION_PROVIDER": provider}
                    invokes[provider] = [
                        spawn("invoke", job, provider_env, workdir) for _ in range(n)
                    ]
                import_runs = [import_times(env) for _ in range(n)]
            inits = [spawn("init", job, env, workdir) for _ in range(n)]
            bases = [spawn("baseline", job, env, workdir) for _ in range(n)]
    finally:
        fake.stop()
    if not compare_only:
        report_runs(n, imports, invokes)
        report_imports(n, import_runs)
    report_baseline(inits, bases)
    print(f"\nbytecode: {'cached' if cached else 'compiled in every process (--no-pyc)'}")


def package_figures(directory: Path, n: int) -> dict[str, float]:
    """Size of one built package unzipped and zipped, and the median time to unpack it."""
    import shutil
    import statistics
    import tempfile
    import zipfile

    files = [f for f in sorted(directory.rglob("*")) if f.is_file()]
    with tempfile.TemporaryDirectory() as tmp:
        archive = Path(tmp) / "package.zip"
        with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
            for f in files:
                zf.write(f, f.relative_to(directory).as_posix())
        times = []
        for i in range(n):
            target = Path(tmp) / f"unpacked-{i}"
            start = time.perf_counter()
            with zipfile.ZipFile(archive) as zf:
                zf.extractall(target)
            times.append(ms_since(start))
            shutil.rmtree(target)
        return {
            "files": len(files),
            "unzipped_mib": sum(f.stat().st_size for f in files) / 2**20,
            "zipped_mib": archive.stat().st_size / 2**20,
            "unpack_ms": statistics.median(times),
        }


def report_packages(build_dir: Path, n: int) -> None:
    figures = {d.name: package_figures(d, n) for d in sorted(build_dir.iterdir()) if d.is_dir()}
    for name, f in figures.items():
        print(
            f"{name:<20} {f['files']:>6} files  {f['unzipped_mib']:7.1f} MiB unzipped  "
            f"{f['zipped_mib']:6.1f} MiB zipped  unpack {f['unpack_ms']:6.0f} ms (median of {n})"
        )
    fn, layer = figures.get("CaptionFunction"), figures.get("OfflineModelLayer")
    if fn and layer:
        for label, parts in (("other providers", [fn]), ("local provider", [fn, layer])):
            print(
                f"deployment, {label:<16} {sum(p['unzipped_mib'] for p in parts):7.1f} MiB "
                f"unzipped  {sum(p['zipped_mib'] for p in parts):6.1f} MiB zipped  unpack "
                f"{sum(p['unpack_ms'] for p in parts):6.0f} ms"
            )


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description="Cold start of captioner.handler.")
    parser.add_argument("-n", type=int, default=5, help="fresh processes per measurement")
    parser.add_argument(
        "--no-pyc", action="store_true", help="no cached bytecode outside the stdlib, as in Lambda"
    )
    parser.add_argument(
        "--compare", action="store_true", help="only handler vs a bare boto3 + httpx process"
    )
    parser.add_argument(
        "--packages",
        type=Path,
        metavar="BUILD_DIR",
        help="sizes and unpack time of sam build's output",
    )
    args = parser.parse_args()
    if args.packages:
        report_packages(args.packages, args.n)
        return
    sys.path[:0] = [str(ROOT / "functions"), str(ROOT)]  # this checkout, installed or not
    run(args.n, cached=not args.no_pyc, compare_only=args.compare)


def child_main(argv: list[str]) -> None:
    """``--child MODE --job PATH --out PATH``, parsed by hand: argparse is not yet imported."""
    opts = dict(zip(argv[1::2], argv[2::2], strict=False))
    child(opts["--child"], opts.get("--job"), opts["--out"])


if __name__ == "__main__":
    if "--child" in sys.argv:
        child_main(sys.argv)
    else:
        main()
