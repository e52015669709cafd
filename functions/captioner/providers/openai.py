"""OpenAI-compatible chat completions with an image (``POST {base}/chat/completions``).

Works with OpenAI itself and with self-hosted servers that speak the same API and accept
images (vLLM, Ollama, LM Studio): ``OPENAI_BASE_URL``, ``OPENAI_API_KEY`` (optional for
servers that need none) and ``OPENAI_MODEL``. The image goes as the presigned URL of the
version (``url``) or as a base64 data URL (``base64``, for servers that cannot reach S3).
Plain httpx: the SDK would add megabytes to the package for one request.

Every failure maps onto an ``errors.Provider*`` type; the key never appears in a message.
"""

from __future__ import annotations

import base64
import re
import time
from collections.abc import Callable
from typing import Any

import httpx

from captioner.errors import (
    NoTimeLeft,
    ProviderConfigError,
    ProviderError,
    ProviderImageError,
    ProviderTransientError,
)
from captioner.providers import httpclient
from captioner.providers.base import Caption, ImageSource, Length
from captioner.providers.redaction import redact as _redact
from captioner.providers.vision import MAX_TOKENS, caption_prompt, clean_caption, fit_image

NAME = "openai"
PRICE_USD = 0.0005  # gpt-4o-mini, detail low (~2,900 input tokens); OPENAI_PRICE_USD overrides
OPENAI_HOST = "https://api.openai.com/"  # needs a key; self-hosted servers may not
MIN_REQUEST_BUDGET = 2.0  # seconds; below this a request is not started
# Data URLs above this are re-encoded smaller (OpenAI takes up to 20 MB per image; servers
# often much less, and low detail sees 512 px).
DATA_URL_MAX_BYTES = 4 * 1024 * 1024
_MIME = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp"}

# The server could not get the image from its URL: it cannot reach S3, not the image's fault.
_URL_FAULT = re.compile(
    r"(download|fetch|retriev|reach)\w*\b.{0,40}\b(image|url|http)|image.{0,20}url",
    re.IGNORECASE,
)
# The model or server does not take images at all: configuration.
_NO_VISION = re.compile(
    r"(does not|doesn't|not) support(ed)? (image|vision|multimodal)|image input.{0,20}not supported"
    r"|image_url is only supported|not a (vision|multimodal) model",
    re.IGNORECASE,
)
# The image itself is at fault: undecodable, unsupported, too large or too small.
_IMAGE_FAULT = re.compile(
    r"invalid image|image (is )?(corrupt|invalid|unreadable|too large|too small)|could not (process|decode|read) (the )?image"
    r"|unsupported image|image_parse_error|invalid_image|not a valid image|cannot identify image",
    re.IGNORECASE,
)


class OpenAIProvider:
    name = NAME
    cpu_bound = False  # a remote service: ProviderConcurrency sets its slots (limits.py)
    formats = frozenset({"PNG", "JPEG", "WEBP"})

    def __init__(
        self,
        base_url: str,
        api_key: Callable[[], str | None],
        model: str,
        *,
        image_transport: str = "url",
        client: httpx.Client | None = None,
        timeout: float = 30.0,
        price_usd: float = PRICE_USD,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._url = base_url.rstrip("/") + "/chat/completions"
        self._api_key = api_key
        self.model = model
        self.image_transport = image_transport
        self.price_usd = price_usd
        self._client = client or httpclient.client(timeout)
        self._timeout = timeout
        self._clock = clock

    def caption(
        self,
        image: ImageSource,
        length: Length,
        *,
        deadline: float,
        job_id: str | None = None,
        on_job: Callable[[str], None] | None = None,
    ) -> Caption:
        # One synchronous request: no jobs to queue or poll, so job_id and on_job are unused.
        key = self._api_key() or ""
        if not key and self._url.startswith(OPENAI_HOST):
            raise ProviderConfigError("no OpenAI API key (OPENAI_API_KEY or its secret)")
        started = self._clock()
        if deadline - started < MIN_REQUEST_BUDGET:
            raise NoTimeLeft("not enough time left to call the OpenAI endpoint")
        body = {
            "model": self.model,
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": caption_prompt(length)},
                        {"type": "image_url", "image_url": {"url": self._image_url(image), "detail": "low"}},
                    ],
                }
            ],
            "max_tokens": MAX_TOKENS[length],
        }  # fmt: skip
        reply = self._post(body, key, deadline)
        text = _caption_text(reply, key)
        return Caption(
            text=text,
            provider=NAME,
            length=length,
            model=str(reply.get("model") or self.model),
            latency_ms=(self._clock() - started) * 1000,
        )

    def _image_url(self, image: ImageSource) -> str:
        if self.image_transport == "url" and image.url:
            return image.url
        data, fmt = fit_image(image.read(), image.info.format, DATA_URL_MAX_BYTES)
        mime = _MIME.get(fmt, "image/jpeg")
        return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"

    def _post(self, body: dict[str, Any], key: str, deadline: float) -> dict[str, Any]:
        # Never wait past the record's deadline: a request still open when Lambda times out
        # would fail the whole batch, not just this record.
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        resp = httpclient.post(
            self._client, self._url, body, seconds=deadline - self._clock(),
            timeout=self._timeout, who="the OpenAI endpoint",
            redact=lambda text: _redact(text, key), headers=headers,
        )  # fmt: skip
        try:
            payload = resp.json()
        except ValueError:
            payload = None
        if not isinstance(payload, dict):
            raise _error_for(resp, None, key)
        if resp.status_code >= 400 or (payload.get("error") and "choices" not in payload):
            raise _error_for(resp, payload, key)  # some servers send errors with HTTP 200
        return payload


def _caption_text(reply: dict[str, Any], key: str) -> str:
    choices = reply.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise _billed("the OpenAI endpoint answered without choices")
    choice = choices[0]
    raw_message = choice.get("message")
    message: dict[str, Any] = raw_message if isinstance(raw_message, dict) else {}
    refusal = message.get("refusal")
    if choice.get("finish_reason") == "content_filter" or refusal:
        why = _redact(str(refusal), key)[:300] if refusal else "content filter"
        raise ProviderImageError(f"the OpenAI model refused to caption this image: {why}")
    content = message.get("content")
    if isinstance(content, list):  # some servers answer with content parts
        content = " ".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    text = clean_caption(content) if isinstance(content, str) else ""
    if not text:
        raise _billed("the OpenAI endpoint answered with an empty caption")
    return text


def _billed(message: str) -> ProviderTransientError:
    """A reply that came back 200 without a usable caption: the tokens were billed."""
    exc = ProviderTransientError(message)
    exc.maybe_charged = exc.charged_reply = True
    return exc


def _error_for(resp: httpx.Response, payload: dict[str, Any] | None, key: str) -> ProviderError:
    """Classify an error reply: configuration, transient, or the image's own fault."""
    code = resp.status_code
    error = (payload or {}).get("error")
    if isinstance(error, dict):
        raw = " ".join(str(error.get(k) or "") for k in ("message", "code", "type"))
    else:
        raw = str(error or (payload or {}).get("message") or resp.text[:500])
    message = _redact(" ".join(raw.split()), key)[:500]
    where = f"(HTTP {code}) {message}".strip()
    exc: ProviderError
    if code == 429 and "insufficient_quota" in raw:
        exc = ProviderConfigError(f"OpenAI endpoint: no credit left {where}")
    elif code == 429:
        exc = ProviderTransientError(
            f"OpenAI endpoint rate limit {where}", retry_after=_retry_after(resp), http_status=code
        )
    elif code in (401, 403):
        what = "invalid API key" if code == 401 else "forbidden"
        exc = ProviderConfigError(f"OpenAI endpoint: {what} {where}")
    elif code == 404:
        exc = ProviderConfigError(f"OpenAI endpoint: model or path not found {where}")
    elif code >= 500 or payload is None:
        exc = ProviderTransientError(f"OpenAI endpoint error {where}", http_status=code)
    elif _NO_VISION.search(raw):
        exc = ProviderConfigError(f"OpenAI endpoint: the model does not take images {where}")
    elif _URL_FAULT.search(raw):
        exc = ProviderConfigError(
            f"OpenAI endpoint cannot fetch the image URL (OPENAI_IMAGE_TRANSPORT=base64 "
            f"sends the bytes instead) {where}"
        )
    elif _IMAGE_FAULT.search(raw):
        exc = ProviderImageError(f"the OpenAI endpoint cannot caption this image {where}")
    else:  # any other refusal of the request will not heal by itself: the configuration
        exc = ProviderConfigError(f"OpenAI endpoint refused the request {where}")
    exc.http_status = code
    return exc


def _retry_after(resp: httpx.Response) -> float | None:
    for header, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        try:
            return float(resp.headers[header]) * scale
        except (KeyError, ValueError):
            continue
    return None
