"""Amazon Bedrock's Converse API with the image bytes (``bedrock-runtime``).

No key: the function role's ``bedrock:InvokeModel`` on the one model (``BEDROCK_MODEL_ID``,
default Amazon Nova Lite, a small vision model), in the function's region. The bytes go in
the request (Converse takes no URLs), re-encoded when over its 3.75 MB image limit.

botocore's timeouts are set per client, not per request, so the provider keeps one client per
timeout step and picks the longest that ends before the record's deadline: a call still open
when Lambda times out would fail the whole batch. botocore's own retries are off; the
pipeline retries transient faults with backoff inside the record's time.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectTimeoutError,
    NoCredentialsError,
    ReadTimeoutError,
)

from captioner.errors import (
    NoTimeLeft,
    ProviderConfigError,
    ProviderError,
    ProviderImageError,
    ProviderTransientError,
)
from captioner.providers.base import Caption, ImageSource, Length
from captioner.providers.vision import MAX_TOKENS, caption_prompt, clean_caption, fit_image

NAME = "bedrock"
PRICE_USD = 0.0002  # Nova Lite: ~1,300 input and ~40 output tokens; BEDROCK_PRICE_USD overrides
IMAGE_MAX_BYTES = 3_750_000  # Converse's limit per image
IMAGE_MAX_SIDE = 8000
TIMEOUT_STEPS = (30.0, 15.0, 8.0, 4.0, 2.0)  # read timeouts of the clients, longest first
# Converse calls run here so the caller can stop waiting at its deadline (``_converse``).
_CALLS = ThreadPoolExecutor(max_workers=16, thread_name_prefix="bedrock")
_FORMATS = {"PNG": "png", "JPEG": "jpeg", "GIF": "gif", "WEBP": "webp"}

_TRANSIENT_CODES = {
    "ThrottlingException", "ServiceUnavailableException", "InternalServerException",
    "ModelTimeoutException", "ModelNotReadyException", "ModelErrorException",
    "ServiceQuotaExceededException", "RequestTimeout", "RequestTimeoutException",
    "TooManyRequestsException",
}  # fmt: skip
_CONFIG_CODES = {
    "AccessDeniedException", "ResourceNotFoundException", "UnrecognizedClientException",
    "ExpiredTokenException", "InvalidSignatureException", "ValidationException",
    "UnauthorizedException",
}  # fmt: skip
_IMAGE_WORDS = ("could not process image", "unable to process", "invalid image", "image is",
                "image format", "image exceeds", "image data", "malformed image", "corrupt")  # fmt: skip
_NO_VISION_WORDS = ("doesn't support", "does not support", "not supported")

ClientFor = Callable[[float], Any]  # read timeout → a bedrock-runtime client


class BedrockProvider:
    name = NAME
    cpu_bound = False  # a remote service: ProviderConcurrency sets its slots (limits.py)
    formats = frozenset(_FORMATS)

    def __init__(
        self,
        model_id: str,
        client_for: ClientFor | None = None,
        *,
        price_usd: float = PRICE_USD,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.model_id = model_id
        self.price_usd = price_usd
        self._client_for = client_for or _ClientCache()
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
        started = self._clock()
        timeout = next((t for t in TIMEOUT_STEPS if started + t <= deadline), None)
        if timeout is None:
            raise NoTimeLeft("not enough time left to call Bedrock")
        data, fmt = self._image_bytes(image)
        request = {
            "modelId": self.model_id,
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"text": caption_prompt(length)},
                        {"image": {"format": _FORMATS[fmt], "source": {"bytes": data}}},
                    ],
                }
            ],
            "inferenceConfig": {"maxTokens": MAX_TOKENS[length]},
        }
        try:
            reply = self._converse(request, timeout, deadline)
        except ConnectTimeoutError:
            raise ProviderTransientError("Bedrock timed out connecting") from None
        except (ReadTimeoutError, FutureTimeout):
            timed_out = ProviderTransientError("Bedrock timed out")
            timed_out.maybe_charged = True  # the request was sent: it may have been billed
            raise timed_out from None
        except NoCredentialsError:
            raise ProviderConfigError("Bedrock: no AWS credentials") from None
        except ClientError as exc:
            raise _error_for(exc) from None
        except BotoCoreError as exc:  # endpoint unreachable, connection closed, ...
            raise ProviderTransientError(f"cannot reach Bedrock: {type(exc).__name__}") from None
        return Caption(
            text=_caption_text(reply),
            provider=NAME,
            length=length,
            model=self.model_id,
            latency_ms=(self._clock() - started) * 1000,
        )

    def _converse(self, request: dict[str, Any], timeout: float, deadline: float) -> Any:
        """Converse, answered by ``deadline`` or abandoned: botocore's read timeout applies
        to each read, so a reply that trickles in would outlive the record (and Lambda's
        timeout). An abandoned call ends in its own thread at its next read timeout."""
        future = _CALLS.submit(self._client_for(timeout).converse, **request)
        return future.result(timeout=max(deadline - self._clock(), 0.0))

    def _image_bytes(self, image: ImageSource) -> tuple[bytes, str]:
        oversized = max(image.info.width, image.info.height) > IMAGE_MAX_SIDE
        return fit_image(image.read(), image.info.format, IMAGE_MAX_BYTES, force=oversized)


def _caption_text(reply: dict[str, Any]) -> str:
    stop = reply.get("stopReason")
    if stop in ("content_filtered", "guardrail_intervened"):
        raise ProviderImageError(f"Bedrock refused to caption this image ({stop})")
    content = (reply.get("output") or {}).get("message", {}).get("content") or []
    text = clean_caption(" ".join(str(part.get("text", "")) for part in content if "text" in part))
    if not text:
        empty = ProviderTransientError("Bedrock answered with an empty caption")
        empty.maybe_charged = empty.charged_reply = True  # an answer: its tokens were billed
        raise empty
    return text


def _error_for(exc: ClientError) -> ProviderError:
    error = exc.response.get("Error", {})
    code = str(error.get("Code", ""))
    message = " ".join(str(error.get("Message", "")).split())[:500]
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    where = f"{code}: {message}"
    low = message.lower()
    result: ProviderError
    if code in _TRANSIENT_CODES or (isinstance(status, int) and status >= 500):
        result = ProviderTransientError(f"Bedrock: {where}", http_status=status)
    elif (
        code == "ValidationException"
        and any(w in low for w in _IMAGE_WORDS)
        and not any(w in low for w in _NO_VISION_WORDS)
    ):
        result = ProviderImageError(f"Bedrock cannot caption this image: {where}")
    elif code in _CONFIG_CODES:
        result = ProviderConfigError(
            f"Bedrock: {where} (check BEDROCK_MODEL_ID, the model's access in this region "
            "and the function role)"
        )
    else:  # unknown: not clearly the image's fault, so retry and dead-letter at worst
        result = ProviderTransientError(f"Bedrock: {where}", http_status=status)
    result.http_status = status
    return result


class _ClientCache:
    """bedrock-runtime clients per read timeout, made on first use (thread-safe: boto3
    sessions are not)."""

    def __init__(self) -> None:
        self._clients: dict[float, Any] = {}
        self._lock = threading.Lock()

    def __call__(self, timeout: float) -> Any:
        with self._lock:
            if timeout not in self._clients:
                import boto3
                from botocore.config import Config as BotoConfig

                self._clients[timeout] = boto3.session.Session().client(
                    "bedrock-runtime",
                    config=BotoConfig(
                        connect_timeout=min(5.0, timeout),
                        read_timeout=timeout,
                        retries={"total_max_attempts": 1},
                        max_pool_connections=16,
                    ),
                )
            return self._clients[timeout]
