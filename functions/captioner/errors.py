"""Error types. The batch code decides retry vs record from the type, never from a message."""

import math


class CaptionerError(Exception):
    """Base class for every error this package raises on purpose."""


class ConfigError(CaptionerError):
    """The deployment is misconfigured (bad environment variable, missing secret)."""


class ImageRejected(CaptionerError):
    """The object is not an image we can caption; record REJECTED and consume the message."""

    def __init__(self, reason: str, *, format: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.format = format


class ProviderError(CaptionerError):
    """Base class for provider failures. ``http_status`` is the HTTP status when there was one.

    ``maybe_charged``: the request reached the provider and its fate is unknown (a reply that
    timed out), so the spend reserved for it is kept; any other failure was not charged.
    ``charged_reply``: the provider answered and took the request on, but the answer is of no
    use (a success without a caption, a job without an id, a body cut off after a 200):
    charged, and trying again at once would pay again (``retry.call_with_retries`` leaves
    it to the message's next delivery)."""

    http_status: int | None = None
    maybe_charged: bool = False
    charged_reply: bool = False


class ProviderImageError(ProviderError):
    """The provider says the image itself is at fault: permanent, record FAILED, no retry."""


class ProviderTransientError(ProviderError):
    """Busy, rate limited, timed out, 5xx, malformed reply: retry with backoff.

    ``retry_after`` is the provider's own hint in seconds, when it gave one.
    """

    def __init__(
        self,
        message: str,
        *,
        retry_after: float | None = None,
        http_status: int | None = None,
        rate_limited: bool = False,
    ) -> None:
        super().__init__(message)
        # a hint from a reply: NaN, infinite or negative means none (math would crash on it)
        finite = retry_after is not None and math.isfinite(retry_after) and retry_after >= 0
        self.retry_after = retry_after if finite else None
        self.http_status = http_status
        # the provider refused for the account's request rate or queue (HTTP 429 or its
        # words for it): a wait, not a failure, and not charged
        self.rate_limited = rate_limited or http_status == 429


class NoTimeLeft(ProviderTransientError):
    """The record's time ran out before the provider could be called: says nothing about the
    provider's health (its circuit breaker ignores it)."""


class ProviderConfigError(ProviderError):
    """Invalid API key, no credit, forbidden: not the image's fault.

    Never retried in-process (it will not fix itself in seconds) and never marks the image
    REJECTED; the message fails so SQS retries and dead-letters it for a redrive after the fix.
    """


class ProviderJobGone(ProviderTransientError):
    """The job queued earlier is gone (expired, failed): only a new, paid request helps.

    Raised instead of paying inside a poll, so the caller decides (and reserves the spend)."""


class ProviderPending(ProviderTransientError):
    """The provider queued the job and it was not done in time; retry polls ``job_id``."""

    def __init__(
        self, message: str, *, job_id: str, retry_after: float | None = None, park: bool = False
    ) -> None:
        super().__init__(message, retry_after=retry_after)
        self.job_id = job_id
        # the job will take long (its eta): do not wait for it here, come back later
        self.park = park
