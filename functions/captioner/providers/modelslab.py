"""ModelsLab Image-Caption client (``POST {base}/image_editing/caption``).

The contract it relies on is written down in docs/modelslab.md: the same fault arrives as a
real HTTP status or as HTTP 200 with ``status: error``, messages are sometimes spelled
``messege`` or nested, and queued jobs are polled at ``/image_editing/fetch/{id}`` (free)
rather than resubmitted (paid).
Every failure maps onto one of the ``errors.Provider*`` types; the API key never appears
in any message this module produces.
"""

from __future__ import annotations

import base64
import io
import json
import math
import random
import re
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import httpx

from captioner.errors import (
    NoTimeLeft,
    ProviderConfigError,
    ProviderError,
    ProviderImageError,
    ProviderJobGone,
    ProviderPending,
    ProviderTransientError,
)
from captioner.providers import httpclient
from captioner.providers.base import Caption, ImageSource, Length
from captioner.providers.redaction import redact as _redact

NAME = "modelslab"
PRICE_USD = 0.0047  # per caption (pay as you go); MODELSLAB_PRICE_USD overrides it
# A queued job whose eta is longer than this is not waited for in the function: the caller
# parks the message and polls the job when it comes back (README: Long jobs).
PARK_ETA_S = 10.0
_TEXT_OUTPUT_LIMIT = 64 * 1024
_UPLOAD_LIMIT = 5 * 1024 * 1024  # ModelsLab's base64_to_url cap
MIN_REQUEST_BUDGET = 2.0  # seconds; below this a request is not started
MAX_CAPTION_CHARS = 16_000  # a caption is text for people; keeps the row far below 400 KB
# Configuration faults: the account, not the image. Specific phrases only, so that e.g.
# "could not process image, no credits were deducted" is not read as "no credit".
_CONFIG_FAULT = re.compile(
    r"invalid api ?key|api ?key (is )?(invalid|missing|required|expired|wrong)|unauthori[sz]ed"
    r"|insufficient (credit|balance|fund)|no credits? (left|remaining|available)"
    r"|(out of|not enough|exhausted|zero) credits?|credits? (exhausted|expired)"
    r"|(credit )?balance is (empty|zero|insufficient|too low)|low balance"
    r"|subscription (expired|inactive|required)|upgrade your plan|account (suspended|disabled|blocked)"
)
_KEY_FAULT = re.compile(
    r"\bkey\b.*\b(invalid|wrong|expired|revoked)\b|\b(invalid|wrong|expired)\b.*\bkey\b"
)
_TRANSIENT_WORDS = ("rate limit", "too many", "busy", "try again", "timeout", "timed out",
                    "overload", "server error", "queue", "unavailable", "maintenance")  # fmt: skip
# The image itself is at fault: the provider could not get or read it.
_IMAGE_FAULT = re.compile(
    r"(could ?n[o']t|cannot|can't|unable to|failed to) (download|fetch|load|open|read|decode|process|identify)"
    r"( the)? (init_)?image|invalid (init_)?image|image (is )?(corrupt|invalid|unreadable|too small|too large)"
    r"|unsupported (image|file)|not a valid image|cannot identify image|invalid image url|corrupt"
)


class ModelsLabProvider:
    name = NAME
    formats = frozenset({"PNG", "JPEG"})
    price_usd = PRICE_USD
    cpu_bound = False  # requests wait on the network: the account's limit sets the slots

    def __init__(
        self,
        api_url: str,
        api_key: Callable[[], str | None],
        *,
        client: httpx.Client | None = None,
        timeout: float = 30.0,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        price_usd: float = PRICE_USD,
    ) -> None:
        self.price_usd = price_usd
        self._base = api_url.rstrip("/")
        self._api_key = api_key
        self._client = client or httpclient.client(timeout)
        self._timeout = timeout
        self._sleep = sleep
        self._clock = clock
        self.poll_initial = 1.0  # seconds before the first poll of a queued job (or its eta)
        self.poll_max = 10.0
        self.park_eta = PARK_ETA_S

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
        self._check_budget(deadline)
        if job_id:
            reply = self._poll_existing(job_id, key, deadline)
            if reply is None:  # the caller pays for a new job (and reserves its spend) first
                raise ProviderJobGone(f"ModelsLab job {job_id} is gone")
        else:
            url = image.url or self._upload(image, key, deadline)
            body = {"key": key, "init_image": url, "length": length, "base64": False}
            reply = self._post(f"{self._base}/image_editing/caption", body, key, deadline)
        text, job = self._settle(reply, key, deadline, on_job or (lambda _job: None), job_id)
        latency = (self._clock() - started) * 1000
        return Caption(text=text, provider=NAME, length=length, job_id=job, latency_ms=latency)

    def _poll_existing(self, job_id: str, key: str, deadline: float) -> dict[str, Any] | None:
        """The reply for a job queued earlier, or None when it is gone and must be paid again.

        A fetch that answers error/failed (ModelsLab's "Failed, Try Again" for a failed job) or
        HTTP 4xx means the job is dead; only rate limiting and outages keep it worth polling.
        """
        url = f"{self._base}/image_editing/fetch/{job_id}"
        try:
            reply = self._post(url, {"key": key}, key, deadline)
        except ProviderConfigError:
            raise
        except ProviderTransientError as exc:
            if getattr(exc, "http_status", None) in (400, 404, 410):
                return None
            raise ProviderPending(str(exc), job_id=job_id, retry_after=exc.retry_after) from None
        except ProviderImageError:
            return None
        if _status(reply) in ("error", "failed") and not _is_rate_limit(_message(reply)):
            return None
        return reply

    def _check_budget(self, deadline: float) -> None:
        if deadline - self._clock() < MIN_REQUEST_BUDGET:
            raise NoTimeLeft("not enough time left to call ModelsLab")

    # -- the request/response cycle -------------------------------------------------------

    def _settle(
        self,
        reply: dict[str, Any],
        key: str,
        deadline: float,
        on_job: Callable[[str], None],
        job: str | None,
    ) -> tuple[str, str | None]:
        """Follow a reply to a caption: poll ``processing`` jobs with backoff until done.

        Once a job is paid for, its id is handed to ``on_job`` before anything else can fail
        (a poll, the GET of a caption link), and every transient failure after that is a
        ``ProviderPending`` carrying the id, so the next attempt polls (free) instead of
        paying again."""
        delay = self.poll_initial
        while True:
            status = _status(reply)
            new_job = _job_id(reply) or self._job_in_fetch_url(reply)
            if status in ("success", "processing") and new_job and new_job != job:
                job = new_job
                # a job whose text is not in this reply (queued, a link, an empty output
                # that arrives later at the fetch endpoint) is polled from now on, never paid
                if status == "processing" or not _is_text(_first_output(reply)):
                    on_job(job)
            if status == "success":
                try:
                    return _keep_job(job, self._caption_text, reply, deadline), job
                except ProviderTransientError as exc:
                    exc.maybe_charged = exc.charged_reply = True  # a success is paid for
                    raise
            if status != "processing":
                error = _error_for(reply, key)
                if job and isinstance(error, ProviderTransientError):
                    # e.g. "Rate limit exceeded" answered to a poll: the job is still queued
                    raise ProviderPending(str(error), job_id=job, retry_after=error.retry_after)
                raise error
            if not job:
                lost = ProviderTransientError("ModelsLab queued the job without an id to poll")
                lost.maybe_charged = lost.charged_reply = True  # queued, with nothing to poll
                raise lost
            eta = _number(reply.get("eta"))
            wait = min(max(delay, eta or 0.0), 3 * self.poll_max) * (0.8 + 0.4 * random.random())  # noqa: S311
            park = (eta or 0.0) > self.park_eta
            if park or self._clock() + wait + MIN_REQUEST_BUDGET >= deadline:
                raise ProviderPending(
                    f"ModelsLab job {job} still processing", job_id=job, retry_after=eta,
                    park=park,
                )  # fmt: skip
            self._sleep(wait)
            delay = min(delay * 2, self.poll_max)
            url = self._fetch_url(reply, job)
            reply = _keep_job(job, self._post, url, {"key": key}, key, deadline)

    def _job_in_fetch_url(self, reply: dict[str, Any]) -> str | None:
        """The job a reply without an ``id`` names in its ``fetch_result`` URL on the API host
        (``…/image_editing/fetch/{id}``), so that it too is polled instead of paid again."""
        url = reply.get("fetch_result")
        if not (isinstance(url, str) and _same_origin(url, self._base)):
            return None
        head, _, job = urlsplit(url).path.rstrip("/").rpartition("/")
        return job if head.endswith("/fetch") and job else None

    def _fetch_url(self, reply: dict[str, Any], job: str) -> str:
        """The reply's ``fetch_result`` only when it is on the configured API host: the key is
        posted to it, and a reply must not be able to send the key elsewhere."""
        url = reply.get("fetch_result")
        if isinstance(url, str) and _same_origin(url, self._base):
            return url
        return f"{self._base}/image_editing/fetch/{job}"

    def _post(self, url: str, body: dict[str, Any], key: str, deadline: float) -> dict[str, Any]:
        self._check_budget(deadline)
        # Never wait past the record's deadline: a request still open when Lambda times out
        # would fail the whole batch, not just this record.
        resp = httpclient.post(
            self._client, url, body, seconds=deadline - self._clock(), timeout=self._timeout,
            who="ModelsLab", redact=lambda text: _redact(text, key),
        )  # fmt: skip
        payload = _json(resp)
        code = resp.status_code
        if code == 429:
            raise ProviderTransientError(
                "ModelsLab rate limit (HTTP 429)",
                retry_after=_retry_after(resp, payload),
                http_status=429,
            )
        if code in (401, 402, 403):
            what = {401: "invalid API key", 402: "insufficient credits", 403: "forbidden"}[code]
            detail = _redact(_message(payload), key) if payload else ""
            raise ProviderConfigError(f"ModelsLab: {what} (HTTP {code}) {detail}".strip())
        if code >= 500:
            raise ProviderTransientError(f"ModelsLab server error (HTTP {code})", http_status=code)
        if payload is None:
            raise ProviderTransientError(
                f"ModelsLab sent malformed JSON (HTTP {code})", http_status=code
            )
        if code >= 400:
            raise _error_for(payload, key, http=code)
        return payload

    def _caption_text(self, reply: dict[str, Any], deadline: float) -> str:
        first = _first_output(reply)
        if _is_link(first):
            first = self._fetch_text(str(first), deadline)
        if not isinstance(first, str) or not first.strip():
            empty = ProviderTransientError("ModelsLab reported success with an empty output")
            empty.maybe_charged = True  # a success is a paid request, whatever it carried
            raise empty
        return _clip(" ".join(first.split()), MAX_CAPTION_CHARS)

    def _fetch_text(self, url: str, deadline: float) -> str:
        """Some ModelsLab endpoints answer with a link to the result instead of the text.
        Only https links (or links on the configured API host) are followed, and never past
        the record's deadline: a GET still open when Lambda times out loses the whole batch."""
        url = url.strip()
        if not (url.lower().startswith("https://") or _same_origin(url, self._base)):
            raise ProviderTransientError("ModelsLab answered with a non-https caption link")
        self._check_budget(deadline)
        budget = min(self._timeout, deadline - self._clock())
        try:
            with (
                httpclient.within(deadline - self._clock()),
                self._client.stream(
                    "GET", url, timeout=httpx.Timeout(budget, connect=min(5.0, budget))
                ) as resp,
            ):
                if resp.status_code != 200:
                    raise ProviderTransientError(f"caption link answered HTTP {resp.status_code}")
                chunks, size = [], 0
                for chunk in resp.iter_bytes():
                    chunks.append(chunk)
                    size += len(chunk)
                    if size > _TEXT_OUTPUT_LIMIT:
                        raise ProviderTransientError("caption link is larger than 64 KB")
                    if self._clock() > deadline:
                        raise ProviderTransientError("caption link is too slow")
        except httpx.TimeoutException:
            raise ProviderTransientError("caption link timed out") from None
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

    def _upload(self, image: ImageSource, key: str, deadline: float) -> str:
        """A URL for a local file (the CLI's ``caption``): ModelsLab's base64_to_url helper."""
        data = _shrink_for_upload(image.read(), image.info.format)
        mime = "image/png" if image.info.format == "PNG" else "image/jpeg"
        b64 = base64.b64encode(data).decode("ascii")
        reply = self._post(
            f"{self._base}/base64_to_url",
            {"key": key, "base64_string": f"data:{mime};base64,{b64}"},
            key,
            deadline,
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
    """The reply's message, wherever this endpoint put it (``messege`` is a real spelling),
    untruncated: redact before cutting, or a key across the cut would leak a prefix."""
    if not reply:
        return ""
    for field in ("message", "messege", "error"):
        msg = reply.get(field)
        if msg not in (None, "", [], {}):
            if isinstance(msg, dict | list):
                return json.dumps(msg, ensure_ascii=False)
            return str(msg)
    return ""


def _keep_job[**P, T](
    job: str | None, step: Callable[P, T], *args: P.args, **kwargs: P.kwargs
) -> T:
    """Run a step that follows a paid request: a transient failure keeps the job to poll."""
    try:
        return step(*args, **kwargs)
    except ProviderTransientError as exc:
        if not job or isinstance(exc, ProviderPending):
            raise
        raise ProviderPending(str(exc), job_id=job, retry_after=exc.retry_after) from None


def _first_output(reply: dict[str, Any]) -> Any:
    output = reply.get("output")
    return output[0] if isinstance(output, list) and output else output


def _is_text(value: Any) -> bool:
    """A caption in the reply itself: non-blank text that is not a link."""
    return isinstance(value, str) and bool(value.strip()) and not _is_link(value)


_URL = re.compile(r"[a-z][a-z0-9+.-]*://\S+", re.IGNORECASE)


def _is_link(value: Any) -> bool:
    """A bare URL (any scheme, any case: ``HTTPS://`` is https), never a caption."""
    return isinstance(value, str) and bool(_URL.fullmatch(value.strip()))


def _job_id(reply: dict[str, Any]) -> str | None:
    job = reply.get("id")
    return str(job) if job not in (None, "") else None


def _number(value: Any) -> float | None:
    """A finite, non-negative number of seconds (an eta, a retry_after), or None: a reply
    may say NaN, Infinity, -5 or "soon"."""
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        return None
    return number if math.isfinite(number) and number >= 0 else None


def _retry_after(resp: httpx.Response, payload: dict[str, Any] | None) -> float | None:
    return _number((payload or {}).get("retry_after")) or _number(resp.headers.get("Retry-After"))


def _is_transient(message: str) -> bool:
    low = message.lower()
    return any(w in low for w in _TRANSIENT_WORDS)


def _is_rate_limit(message: str) -> bool:
    low = message.lower()
    return "rate limit" in low or "too many" in low


def _same_origin(url: str, base: str) -> bool:
    a, b = urlsplit(url), urlsplit(base)
    return (a.scheme.lower(), a.netloc.lower()) == (b.scheme.lower(), b.netloc.lower())


def _clip(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    cut = text[:limit]
    return cut[: cut.rfind(" ")] if " " in cut[limit // 2 :] else cut


def _error_for(reply: dict[str, Any], key: str, http: int | None = None) -> Exception:
    """Classify an error reply: configuration, transient, or the image's own fault.

    A message that does not clearly blame the image is treated as transient, so the worst
    case of an unknown message is a retry and a dead letter, never a wrongly REJECTED image.
    """
    raw = _message(reply)
    low = raw.lower()
    message = _clip(_redact(raw, key), 500) or f"status {_status(reply) or 'missing'}"
    where = f" (HTTP {http})" if http else ""
    if _CONFIG_FAULT.search(low) or _KEY_FAULT.search(low):
        exc: ProviderError = ProviderConfigError(f"ModelsLab: {message}{where}")
    elif _is_transient(raw):
        retry = _number(reply.get("retry_after"))
        exc = ProviderTransientError(
            f"ModelsLab: {message}{where}", retry_after=retry, rate_limited=_is_rate_limit(raw)
        )
    elif _IMAGE_FAULT.search(low):
        exc = ProviderImageError(f"ModelsLab cannot caption this image: {message}{where}")
    else:
        exc = ProviderTransientError(f"ModelsLab: {message}{where}")
    exc.http_status = http
    return exc


def _shrink_for_upload(data: bytes, fmt: str) -> bytes:
    """Keep uploads under ModelsLab's 5 MB cap by re-encoding large files as JPEG."""
    if len(data) * 4 // 3 + 64 <= _UPLOAD_LIMIT:
        return data
    from PIL import Image  # only the CLI's local-file path gets here

    with Image.open(io.BytesIO(data)) as original:
        im = original.convert("RGB")
        im.thumbnail((2048, 2048))
        out = io.BytesIO()
        im.save(out, "JPEG", quality=88)
    return out.getvalue()
