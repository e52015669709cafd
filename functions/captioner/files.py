"""Caption local image files without S3: the same image checks and provider code as the
pipeline, for trying a provider, comparing providers and scripting (``captioner caption``)."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from captioner.config import Config
from captioner.errors import (
    ImageRejected,
    ProviderConfigError,
    ProviderImageError,
    ProviderTransientError,
)
from captioner.images import ImageLimits, check_image
from captioner.providers.base import Caption, CaptionProvider, ImageSource, Length
from captioner.retry import Backoff, call_with_retries

PER_FILE_SECONDS = 120.0


@dataclass
class FileCaption:
    path: str
    status: str  # CAPTIONED | REJECTED | FAILED
    caption: str | None = None
    provider: str | None = None
    reason: str | None = None
    format: str | None = None
    width: int | None = None
    height: int | None = None
    model: str | None = None
    labels: list[dict[str, Any]] = field(default_factory=list)
    latency_ms: float | None = None

    def as_dict(self) -> dict[str, Any]:
        """The JSON of ``captioner caption --json``: path, status, caption and provider are
        always there (null when there is none); the rest only when known."""
        always = ("path", "status", "caption", "provider")
        return {k: v for k, v in self.__dict__.items() if k in always or v not in (None, [])}


def expand(paths: Iterable[Path]) -> Iterator[Path]:
    """Files as given, and the files of folders (recursively, sorted, hidden ones skipped)."""
    for path in paths:
        if path.is_dir():
            yield from sorted(
                p
                for p in path.rglob("*")
                if p.is_file()
                and not any(part.startswith(".") for part in p.relative_to(path).parts)
            )
        else:
            yield path


def caption_file(
    path: Path,
    provider: CaptionProvider,
    length: Length,
    config: Config,
    backoff: Backoff = Backoff(),  # noqa: B008
) -> FileCaption:
    """Caption one file. Image problems become REJECTED/FAILED results; a configuration
    problem (no key, bad key) raises ProviderConfigError: it would fail every file."""
    name = str(path)
    try:
        size = path.stat().st_size
    except OSError as exc:
        return FileCaption(name, "FAILED", reason=f"cannot read the file: {exc.strerror or exc}")
    limits = ImageLimits(provider.formats, config.max_image_bytes, config.max_image_pixels,
                         config.header_bytes, config.max_header_bytes)  # fmt: skip
    try:
        info = check_image(lambda n: _read_prefix(path, n), size, limits)
    except ImageRejected as exc:
        return FileCaption(
            name, "REJECTED", provider=provider.name, reason=exc.reason, format=exc.format
        )
    except OSError as exc:
        return FileCaption(name, "FAILED", reason=f"cannot read the file: {exc.strerror or exc}")
    image = ImageSource(info=info, read=path.read_bytes, url=None, name=name)
    deadline = time.monotonic() + PER_FILE_SECONDS
    result = FileCaption(name, "FAILED", provider=provider.name, format=info.format,
                         width=info.width, height=info.height)  # fmt: skip
    jobs: list[str] = []  # a queued job is polled by the next try, never paid again

    def once() -> Caption:
        return provider.caption(
            image, length, deadline=deadline, job_id=jobs[-1] if jobs else None,
            on_job=jobs.append,
        )  # fmt: skip

    try:
        cap = call_with_retries(once, deadline=deadline, backoff=backoff)
    except ProviderConfigError:
        raise
    except (ProviderImageError, ProviderTransientError) as exc:
        result.reason = str(exc)
        return result
    result.status, result.caption, result.model = "CAPTIONED", cap.text, cap.model
    result.labels = [{"label": lb.name, "score": round(lb.score, 4)} for lb in cap.labels]
    result.latency_ms = round(cap.latency_ms, 1)
    return result


def _read_prefix(path: Path, n: int) -> bytes:
    with path.open("rb") as fh:
        return fh.read(n)
