"""The gallery's routes: pages (server-rendered, escaped by Jinja2), thumbnails, originals,
the JSON API and the writes (edit, re-caption). Every view's state lives in its URL."""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import (
    HTMLResponse,
    JSONResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from captioner.config import Config
from captioner.images import sniff_format
from captioner.objects import ObjectMissing, ObjectStore
from captioner.store import STATUSES, Status
from captioner_tools.cli.target import Deployment
from captioner_tools.errors import CliError
from captioner_tools.review import (
    EXPORT_FORMATS,
    Reviewer,
    caption_source,
    clean_caption,
    export_lines,
)
from captioner_tools.ui.guard import TOKEN_HEADER, Guard, GuardMiddleware
from captioner_tools.ui.rows import BadView, View, read_page
from captioner_tools.ui.thumbnails import Limits, NotAThumbnail, Thumbnails

HERE = Path(__file__).parent
WAITING = frozenset({Status.FAILED, Status.REJECTED, Status.PENDING})
# Original images are served only as these types (from the bytes' own magic), never as what
# the object's metadata claims: an HTML "image" in the bucket must not run on this origin.
IMAGE_TYPES = {"JPEG": "image/jpeg", "PNG": "image/png", "GIF": "image/gif", "WEBP": "image/webp"}
DETAIL_FIELDS = (
    "status", "caption", "caption_source", "edited_at", "reason", "last_error", "provider",
    "model", "fallback_reason", "version_id", "etag", "size", "format", "width", "height",
    "tag_status", "tag_value", "provider_latency_ms", "attempts", "created_at", "updated_at",
    "deleted_at",
)  # fmt: skip

log = logging.getLogger(__name__)


class Gallery:
    """What the routes share: the deployment, the thumbnails, the guard."""

    def __init__(self, deployment: Deployment, guard: Guard) -> None:
        self.deployment = deployment
        self.guard = guard
        self.objects = ObjectStore(deployment.client("s3"))
        self.thumbnails = Thumbnails(self.objects, self._limits())
        self.reviewer = Reviewer(deployment)
        self._price: float | None = None
        self.env = Environment(
            loader=FileSystemLoader(HERE / "templates"),
            autoescape=select_autoescape(default=True, default_for_string=True),
        )
        self.env.filters["age"] = age
        self.env.globals.update(statuses=STATUSES, waiting=WAITING, source=caption_source,
                                alt=alt_text, urlencode=urlencode,
                                where=deployment.describe())  # fmt: skip
        for name in ("index.html", "detail.html"):  # compiled once, before the first page
            self.env.get_template(name)

    def _limits(self) -> Limits:
        config = Config.from_env({"CAPTIONS_TABLE": "-"})
        return Limits(max_bytes=config.max_image_bytes, max_pixels=config.max_image_pixels)

    def price_usd(self) -> float:
        """One caption's price with the deployment's provider (read once per run)."""
        if self._price is None:
            try:
                provider = self.deployment.parameters().get("CaptionProvider") or "modelslab"
            except CliError:
                provider = "modelslab"
            self._price = Config.from_env({"CAPTIONS_TABLE": "-"}).price_usd(provider)
        return self._price

    def render(self, name: str, request: Request, status: int = 200, **context: Any) -> Response:
        token = request.query_params.get("token")
        context["token"] = token if self.guard.token_ok(token) else ""
        html = self.env.get_template(name).render(request=request, **context)
        return HTMLResponse(html, status_code=status)


def age(value: str | None) -> str:
    if not value:
        return ""
    try:
        then = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return ""
    seconds = int((datetime.now(UTC) - then).total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size} {unit} ago"
    return f"{max(seconds, 0)} s ago"


def alt_text(row: dict[str, Any]) -> str:
    """Every image gets a non-empty alt: the caption, else the key, status and reason."""
    if row.get("caption"):
        return str(row["caption"])
    parts = [str(row.get("key")), str(row.get("status", ""))]
    if row.get("reason"):
        parts.append(str(row["reason"]))
    return " · ".join(p for p in parts if p)


def create_app(deployment: Deployment, guard: Guard) -> Starlette:
    gallery = Gallery(deployment, guard)

    async def run(fn: Any, *args: Any, **kwargs: Any) -> Any:
        return await asyncio.to_thread(partial(fn, *args, **kwargs))

    def view_of(request: Request) -> View:
        return View.parse(request.query_params, deployment.bucket)

    async def index(request: Request) -> Response:
        try:
            view = view_of(request)
            page = await run(read_page, deployment.captions(), deployment.client("dynamodb"), view)
        except BadView as exc:
            return gallery.render("index.html", request, 400, view=None, rows=[], next=None,
                                  error=str(exc))  # fmt: skip
        return gallery.render("index.html", request, view=view, rows=page.rows, next=page.next,
                              error=None, price=gallery.price_usd())  # fmt: skip

    async def api_rows(request: Request) -> Response:
        try:
            page = await run(
                read_page, deployment.captions(), deployment.client("dynamodb"), view_of(request)
            )
        except BadView as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        return JSONResponse(_jsonable({"rows": page.rows, "next": page.next}))

    def object_of(request: Request) -> tuple[str, str]:
        bucket = request.query_params.get("bucket") or deployment.bucket
        key = request.query_params.get("key")
        if not key:
            raise BadView("key is required")
        return bucket, key

    async def detail(request: Request) -> Response:
        try:
            bucket, key = object_of(request)
        except BadView as exc:
            return PlainTextResponse400(str(exc))
        row = await run(deployment.captions().get, bucket, key)
        if row is None:
            return gallery.render("detail.html", request, 404, row=None, bucket=bucket, key=key,
                                  tags=[], fields=DETAIL_FIELDS)  # fmt: skip
        try:
            tags = await run(gallery.objects.get_tags, bucket, key, row.get("version_id"))
        except Exception:  # a deleted object, a tag read refused: the row still shows
            tags = []
        row = {**row, "caption_source": caption_source(row)}
        return gallery.render("detail.html", request, row=row, bucket=bucket, key=key, tags=tags,
                              fields=DETAIL_FIELDS, price=gallery.price_usd())  # fmt: skip

    async def thumb(request: Request) -> Response:
        try:
            bucket, key = object_of(request)
        except BadView as exc:
            return PlainTextResponse400(str(exc))
        version = request.query_params.get("v", "")
        size = request.query_params.get("size")
        try:
            data = gallery.thumbnails.cached(bucket, key, version) if version else None
            data = data or await run(gallery.thumbnails.get, bucket, key, version,
                             int(size) if size and size.isdigit() else None)  # fmt: skip
        except NotAThumbnail:
            return Response(
                (HERE / "static" / "placeholder.svg").read_bytes(),
                media_type="image/svg+xml",
                headers={"Cache-Control": "private, max-age=60"},
            )
        cache = "private, max-age=31536000, immutable" if version else "private, max-age=60"
        return Response(data, media_type="image/jpeg", headers={"Cache-Control": cache})

    async def original(request: Request) -> Response:
        try:
            bucket, key = object_of(request)
        except BadView as exc:
            return PlainTextResponse400(str(exc))
        version = request.query_params.get("v") or None
        limit = gallery.thumbnails._limits.max_bytes
        try:
            data = await run(gallery.objects.read_all, bucket, key, version, limit)
        except (ObjectMissing, ValueError):
            return PlainTextResponse400("that object version is gone or too large", 404)
        kind = IMAGE_TYPES.get(sniff_format(data[:64]) or "")
        if kind is None:
            return PlainTextResponse400("not an image this gallery shows", 415)
        return Response(data, media_type=kind, headers={
            "Content-Disposition": "inline", "Cache-Control": "private, max-age=3600",
        })  # fmt: skip

    async def api_caption(request: Request) -> Response:
        try:
            body = await request.json()
            bucket, key = str(body["bucket"]), str(body["key"])
            caption = clean_caption(str(body["caption"]))
            version = body["version_id"]  # required: it is what makes a stale edit a 409
            if version is not None and (not isinstance(version, str) or not version):
                raise ValueError("version_id")
        except CliError as exc:  # the caption itself: empty or too long
            return JSONResponse({"error": str(exc)}, status_code=400)
        except (ValueError, KeyError, TypeError):
            return JSONResponse(
                {"error": "expected JSON with bucket, key, version_id (a string) and caption"},
                status_code=400,
            )
        try:
            if version is None:  # only an object without versions (an unversioned bucket)
                current = await run(gallery.reviewer.row, bucket, key)
                if current is not None and current.get("version_id"):
                    raise CliError("the object is versioned: give the version_id being edited")
            row = await run(gallery.reviewer.edit, bucket, key, caption, version)
        except CliError as exc:
            return JSONResponse({"error": str(exc)}, status_code=409)
        return JSONResponse(_jsonable({"row": row}))

    async def api_recaption(request: Request) -> Response:
        """``{"objects": [{"bucket", "key"}...]}`` or ``{"status", "prefix"}`` (every row of
        that view); ``confirm`` false only plans (count and price), true enqueues."""
        try:
            body = await request.json()
            if not isinstance(body, dict):
                raise ValueError
        except ValueError:
            return JSONResponse({"error": "expected a JSON object"}, status_code=400)
        rows = await run(_selection, deployment, body)
        if isinstance(rows, str):
            return JSONResponse({"error": rows}, status_code=400)
        replace_human = body.get("replace_human") is True
        price = gallery.price_usd()
        if body.get("confirm") is not True:
            humans = sum(1 for r in rows if caption_source(r) == "human")
            paid = len(rows) - (0 if replace_human else humans)
            return JSONResponse({"planned": paid, "human": humans, "price_usd": price,
                                 "cost_usd": round(paid * price, 4)})  # fmt: skip
        plan = await run(gallery.reviewer.recaption, rows, replace_human=replace_human)
        return JSONResponse(plan.as_dict() | {"cost_usd": round(plan.enqueued * price, 4)})

    async def export(request: Request) -> Response:
        fmt = request.query_params.get("format", "csv")
        if fmt not in EXPORT_FORMATS:
            return PlainTextResponse400(f"format must be one of {', '.join(EXPORT_FORMATS)}")
        try:
            view = view_of(request)
        except BadView as exc:
            return PlainTextResponse400(str(exc))
        rows = _export_rows(deployment, view)
        media = {"csv": "text/csv", "json": "application/json", "jsonl": "application/x-ndjson"}
        return StreamingResponse(
            _iterate_in_thread(export_lines(rows, fmt)),
            media_type=media[fmt] + "; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="captions.{fmt}"'},
        )

    routes = [
        Route("/", index),
        Route("/object", detail),
        Route("/thumb", thumb),
        Route("/original", original),
        Route("/export", export),
        Route("/api/rows", api_rows),
        Route("/api/caption", api_caption, methods=["POST"]),
        Route("/api/recaption", api_recaption, methods=["POST"]),
        Mount("/static", app=StaticFiles(directory=HERE / "static"), name="static"),
    ]
    app = Starlette(routes=routes)
    app.state.gallery = gallery
    app.add_middleware(GuardMiddleware, guard=guard)
    return app


def PlainTextResponse400(text: str, status: int = 400) -> Response:
    return Response(text + "\n", status_code=status, media_type="text/plain")


def _export_rows(deployment: Deployment, view: View) -> Any:
    from captioner.store import RowQuery

    captions = deployment.captions()
    if view.status:
        query = RowQuery(bucket=view.bucket, prefix=view.prefix, status=view.status, limit=None)
        return iter(captions.list_rows(query))
    return captions.iter_rows(view.bucket, view.prefix)


async def _iterate_in_thread(lines: Any) -> Any:
    done = object()
    while True:
        line = await asyncio.to_thread(next, lines, done)
        if line is done:
            return
        yield line


def _selection(deployment: Deployment, body: dict[str, Any]) -> list[dict[str, Any]] | str:
    from captioner.store import RowQuery

    captions = deployment.captions()
    objects = body.get("objects")
    if isinstance(objects, list):
        wanted = []
        for obj in objects[:1000]:
            if not isinstance(obj, dict) or not obj.get("key"):
                return "objects must be a list of {bucket, key}"
            wanted.append((str(obj.get("bucket") or deployment.bucket), str(obj["key"])))
        return list(captions.rows_at(wanted).values())
    status = str(body.get("status") or "").upper() or None
    if status is not None and status not in STATUSES:
        return f"status must be one of {', '.join(STATUSES)}"
    bucket = str(body.get("bucket") or deployment.bucket)
    prefix = str(body.get("prefix") or "")
    if status:
        query = RowQuery(bucket=bucket, prefix=prefix, status=status, limit=None)
        return captions.list_rows(query)
    return list(captions.iter_rows(bucket, prefix))


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


__all__ = ["TOKEN_HEADER", "create_app"]
