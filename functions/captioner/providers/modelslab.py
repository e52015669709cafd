"""ModelsLab Image-Caption client (``POST {base}/image_editing/caption``).

See shared/modelslab-api.md: the same fault arrives as a real HTTP status or as HTTP 200
with ``status: error``, messages are sometimes spelled ``messege`` or nested, and queued
jobs are polled at ``/image_editing/fetch/{id}`` (free) rather than resubmitted (paid).
Every failure maps onto one of the ``errors.Provider*`` types; the API key never appears
in any message this module produces.
"""

from __future__ import annotations

import base64
import io
import json
import random
import re
import time
from collections.abc import Callable
from typing import Any

import httpx

from captioner.errors import (
    ProviderConfigError,
    ProviderImageError,
    ProviderPending,
    ProviderTransientError,
)
from captioner.providers.base import Caption, ImageSource, Length

NAME = "modelslab"
_TEXT_OUTPUT_LIMIT = 64 * 1024
_UPLOAD_LIMIT = 5 * 1024 * 1024  # ModelsLab's base64_to_url cap
_CONFIG_WORDS = ("api key", "apikey", "invalid key", "unauthori", "credit", "balance",
                 "subscription", "forbidden", "not allowed", "upgrade your plan")  # fmt: skip
_KEY_FAULT = re.compile(
    r"\bkey\b.*\b(invalid|wrong|expired|revoked)\b|\b(invalid|wrong|expired)\b.*\bkey\b"
)
_TRANSIENT_WORDS = ("rate limit", "too many", "busy", "try again", "timeout", "timed out",
                    "overload", "server error", "queue", "unavailable", "maintenance")  # fmt: skip
_IMAGE_WORDS = ("image", "invalid url", "download", "decode", "corrupt", "unsupported",
                "cannot identify", "invalid file", "not a valid", "unreadable")  # fmt: skip


class ModelsLabProvider:
    name = NAME
    formats = frozenset({"PNG", "JPEG"})

    def __init__(
        self,
        api_url: str,
        api_key: Callable[[], str | None],
        *,
        client: httpx.Client | None = None,
        timeout: float = 30.0,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._base = api_url.rstrip("/")
        self._api_key = api_key
        self._client = client or httpx.Client(
            timeout=httpx.Timeout(timeout, connect=5.0),
            limits=httpx.Limits(max_connections=32, max_keepalive_connections=16),
            headers={"Accept": "application/json"},
        )
        self._sleep = sleep
        self._clock = clock
        self.poll_initial = 1.0  # seconds before the first poll of a queued job (or its eta)
        self.poll_max = 10.0

    def caption(
        self,
        image: ImageSource,
        length: Length,
        *,
        deadline: float,
        job_id: str | None = None,
        on_job: Callable[[str], None] | None = None,
    ) -> Caption:
        key = self._key()
        started = self._clock()
        if job_id:
            reply = self._post(f"{self._base}/image_editing/fetch/{job_id}", {"key": key}, key)
            if _status(reply) in ("error", "failed") and not _is_transient(_message(reply)):
                reply = None  # the old job is gone; pay for a fresh one
        else:
            reply = None
        if reply is None:
            url = image.url or self._upload(image, key)
            body = {"key": key, "init_image": url, "length": length, "base64": False}
            reply = self._post(f"{self._base}/image_editing/caption", body, key)
        text, job = self._settle(reply, key, deadline, on_job)
        latency = (self._clock() - started) * 1000
        return Caption(text=text, provider=NAME, length=length, job_id=job, latency_ms=latency)

    # -- the request/response cycle -------------------------------------------------------

    def _settle(
        self, reply: dict[str, Any], key: str, deadline: float, on_job: Callable[[str], None] | None
    ) -> tuple[str, str | None]:
        """Follow a reply to a caption: poll ``processing`` jobs with backoff until done."""
        job: str | None = None
        delay = self.poll_initial
        while True:
            status = _status(reply)
            if status == "success":
                return self._caption_text(reply, key), job or _job_id(reply)
            if status != "processing":
                raise _error_for(reply, key)
            new_job = _job_id(reply)
            if new_job and new_job != job:
                job = new_job
                if on_job:
                    on_job(job)
            if not job:
                raise ProviderTransientError("ModelsLab queued the job without an id to poll")
            eta = _number(reply.get("eta"))
            wait = min(max(delay, eta or 0.0), 3 * self.poll_max) * (0.8 + 0.4 * random.random())  # noqa: S311
            if self._clock() + wait >= deadline:
                raise ProviderPending(
                    f"ModelsLab job {job} still processing", job_id=job, retry_after=eta
                )
            self._sleep(wait)
            delay = min(delay * 2, self.poll_max)
            fetch_url = reply.get("fetch_result")
            if not (isinstance(fetch_url, str) and fetch_url.startswith(("http://", "https://"))):
                fetch_url = f"{self._base}/image_editing/fetch/{job}"
            reply = self._post(fetch_url, {"key": key}, key)

    def _post(self, url: str, body: dict[str, Any], key: str) -> dict[str, Any]:
        try:
            resp = self._client.post(url, json=body)
        except httpx.TimeoutException:
            raise ProviderTransientError("ModelsLab timed out") from None
        except httpx.TransportError as exc:
            raise ProviderTransientError(
                f"cannot reach ModelsLab: {_redact(type(exc).__name__ + ': ' + str(exc), key)}"
            ) from None
        payload = _json(resp)
        code = resp.status_code
        if code == 429:
            raise ProviderTransientError(
                "ModelsLab rate limit (HTTP 429)", retry_after=_retry_after(resp, payload)
            )
        if code in (401, 402, 403):
            what = {401: "invalid API key", 402: "insufficient credits", 403: "forbidden"}[code]
            detail = _redact(_message(payload), key) if payload else ""
            raise ProviderConfigError(f"ModelsLab: {what} (HTTP {code}) {detail}".strip())
        if code >= 500:
            raise ProviderTransientError(f"ModelsLab server error (HTTP {code})")
        if payload is None:
            raise ProviderTransientError(f"ModelsLab sent malformed JSON (HTTP {code})")
        if code >= 400:
            raise _error_for(payload, key, http=code)
        return payload

    def _caption_text(self, reply: dict[str, Any], key: str) -> str:
        output = reply.get("output")
        first = output[0] if isinstance(output, list) and output else output
        if isinstance(first, str) and first.startswith(("http://", "https://")):
            first = self._fetch_text(first)
        if not isinstance(first, str) or not first.strip():
            raise ProviderTransientError("ModelsLab reported success with an empty output")
        return " ".join(first.split())

    def _fetch_text(self, url: str) -> str:
        """Some ModelsLab endpoints answer with a link to the result instead of the text."""
        try:
            with self._client.stream("GET", url) as resp:
                if resp.status_code != 200:
                    raise ProviderTransientError(f"caption link answered HTTP {resp.status_code}")
                chunks, size = [], 0
                for chunk in resp.iter_bytes():
                    chunks.append(chunk)
                    size += len(chunk)
                    if size > _TEXT_OUTPUT_LIMIT:
                        raise ProviderTransientError("caption link is larger than 64 KB")
        except httpx.HTTPError as exc:
            raise ProviderTransientError(
                f"cannot fetch the caption link: {type(exc).__name__}"
            ) from None
        text = b"".join(chunks).decode("utf-8", errors="replace")
        try:  # a JSON document with the caption inside, or the text itself
            doc = json.loads(text)
            if isinstance(doc, dict):
                text = str(doc.get("caption") or doc.get("text") or doc.get("output") or "")
        except ValueError:
            pass
        return text

    def _upload(self, image: ImageSource, key: str) -> str:
        """A URL for a local file (the CLI's ``caption``): ModelsLab's base64_to_url helper."""
        data = _shrink_for_upload(image.read(), image.info.format)
        mime = "image/png" if image.info.format == "PNG" else "image/jpeg"
        b64 = base64.b64encode(data).decode("ascii")
        reply = self._post(
            f"{self._base}/base64_to_url",
            {"key": key, "base64_string": f"data:{mime};base64,{b64}"},
            key,
        )
        output = reply.get("output")
        url = output[0] if isinstance(output, list) and output else output
        if _status(reply) != "success" or not isinstance(url, str) or not url.startswith("http"):
            raise _error_for(reply, key)
        return url

    def _key(self) -> str:
        key = self._api_key()
        if not key:
            raise ProviderConfigError(
                "no ModelsLab API key: set MODELSLAB_API_KEY_SECRET (Secrets Manager) or, "
                "locally, MODELSLAB_API_KEY"
            )
        return key


# -- reading replies -------------------------------------------------------------------------


def _json(resp: httpx.Response) -> dict[str, Any] | None:
    try:
        payload = resp.json()
    except ValueError:
        return None
    return payload if isinstance(payload, dict) else None


def _status(reply: dict[str, Any]) -> str:
    return str(reply.get("status", "")).strip().lower()


def _message(reply: dict[str, Any] | None) -> str:
    if not reply:
        return ""
    msg = reply.get("message", reply.get("messege", reply.get("error", "")))
    if isinstance(msg, dict | list):
        msg = json.dumps(msg, ensure_ascii=False)
    return str(msg)[:500]


def _job_id(reply: dict[str, Any]) -> str | None:
    job = reply.get("id")
    return str(job) if job not in (None, "") else None


def _number(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _retry_after(resp: httpx.Response, payload: dict[str, Any] | None) -> float | None:
    return _number((payload or {}).get("retry_after")) or _number(resp.headers.get("Retry-After"))


def _is_transient(message: str) -> bool:
    low = message.lower()
    return any(w in low for w in _TRANSIENT_WORDS)


def _error_for(reply: dict[str, Any], key: str, http: int | None = None) -> Exception:
    """Classify an error reply: configuration, transient, or the image's own fault.

    A message that does not clearly blame the image is treated as transient, so the worst
    case of an unknown message is a retry and a dead letter, never a wrongly REJECTED image.
    """
    message = _redact(_message(reply), key) or f"status {_status(reply) or 'missing'}"
    where = f" (HTTP {http})" if http else ""
    low = message.lower()
    if any(w in low for w in _CONFIG_WORDS) or _KEY_FAULT.search(low):
        return ProviderConfigError(f"ModelsLab: {message}{where}")
    if _is_transient(message):
        retry = _number(reply.get("retry_after"))
        return ProviderTransientError(f"ModelsLab: {message}{where}", retry_after=retry)
    if any(w in low for w in _IMAGE_WORDS):
        return ProviderImageError(f"ModelsLab cannot caption this image: {message}{where}")
    return ProviderTransientError(f"ModelsLab: {message}{where}")


def _redact(text: str, key: str) -> str:
    return text.replace(key, "***") if key else text


def _shrink_for_upload(data: bytes, fmt: str) -> bytes:
    """Keep uploads under ModelsLab's 5 MB cap by re-encoding large files as JPEG."""
    if len(data) * 4 // 3 + 64 <= _UPLOAD_LIMIT:
        return data
    from PIL import Image  # only the CLI's local-file path gets here

    with Image.open(io.BytesIO(data)) as im:
        im = im.convert("RGB")
        im.thumbnail((2048, 2048))
        out = io.BytesIO()
        im.save(out, "JPEG", quality=88)
    return out.getvalue()
