"""Keeping secrets out of provider messages: one rule for every provider."""

from __future__ import annotations

import json
import re
from urllib.parse import quote

# Anything shaped like an API key (OpenAI's "sk-…", and the like), even when it is not ours.
_SECRETS = re.compile(r"\b(sk|key|tok)-[A-Za-z0-9_*\-]{6,}")
_URL_QUERY = re.compile(r"(https?://[^\s?\"'<>]+)\?[^\s\"'<>]*")


def redact(text: str, key: str) -> str:
    """Remove the key (also JSON- or URL-escaped), anything shaped like a key, and URL query
    strings: a provider message may echo the presigned URL, whose query holds a temporary
    credential. Redact before truncating, or a key across the cut would leak a prefix."""
    if key:
        for form in {key, json.dumps(key)[1:-1], quote(key, safe="")}:
            text = text.replace(form, "***")
    return _URL_QUERY.sub(r"\1?…", _SECRETS.sub("***", text))
