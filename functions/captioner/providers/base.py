"""The provider interface: what every caption provider takes and returns."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal, Protocol

Length = Literal["short", "normal", "long"]
LENGTHS: tuple[Length, ...] = ("short", "normal", "long")


@dataclass(frozen=True)
class ImageInfo:
    """What the header check learned about an image, without decoding its pixels."""

    format: str  # Pillow's name: "PNG", "JPEG", "GIF", "WEBP", ...
    width: int
    height: int
    size: int  # bytes


@dataclass(frozen=True)
class ImageSource:
    """An image to caption.

    ``url`` is a short-lived link the provider can fetch (a presigned S3 GET of one object
    version) or None for a local file; ``read`` returns the bytes, for providers that run
    the model themselves. Providers use whichever they need.
    """

    info: ImageInfo
    read: Callable[[], bytes]
    url: str | None = None
    name: str = ""  # for logs and error messages only


@dataclass(frozen=True)
class Label:
    name: str
    score: float


@dataclass(frozen=True)
class Caption:
    text: str
    provider: str
    length: Length
    model: str | None = None
    job_id: str | None = None
    labels: tuple[Label, ...] = field(default_factory=tuple)
    latency_ms: float = 0.0


class CaptionProvider(Protocol):
    """A caption provider. Implementations raise the ``errors.Provider*`` types on failure."""

    name: str
    #: Pillow format names this provider accepts; the image check rejects anything else.
    formats: frozenset[str]
    #: What one caption costs (USD): the spend figures, and what is reserved against the
    #: daily budget before each paid request (``budget.py``); 0 for the offline model.
    price_usd: float
    #: True when captions are computed in the function (its vCPUs limit them), False when
    #: they wait on a remote service (the account's concurrency limit does): ``limits.py``.
    cpu_bound: bool

    def caption(
        self,
        image: ImageSource,
        length: Length,
        *,
        deadline: float,
        job_id: str | None = None,
        on_job: Callable[[str], None] | None = None,
    ) -> Caption:
        """Caption one image before ``deadline`` (a ``time.monotonic()`` value).

        ``job_id`` is a job this provider queued earlier for the same image: poll it instead
        of paying again; when it is gone, raise ``ProviderJobGone`` (never pay inside a poll:
        the caller reserves the spend of a new request first). ``on_job`` is called as soon
        as the provider queues a job so the caller can store its id.
        """
        ...
