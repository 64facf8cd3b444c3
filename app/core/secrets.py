"""Scrubbing credentials out of text that may reach a client or a log.

Provider errors sometimes repeat what they were sent; an error message is
shown to clients and logged, so credentials are removed first: the values
this server is configured with, and anything that looks like a bearer token
or an API key.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

_PATTERNS = (
    re.compile(r"(?i)\b(bearer)\s+[A-Za-z0-9._~+/=-]{8,}"),
    re.compile(r"\b(?:sk-[A-Za-z0-9_-]{16,}|sd_[A-Za-z0-9_-]{20,})"),
    re.compile(r"(?i)(api[-_ ]?key[\"']?\s*[:=]\s*[\"']?)[^\s\"',]{6,}"),
)


def scrub_credentials(text: str, secrets: Iterable[str] = ()) -> str:
    for secret in secrets:
        if len(secret) >= 4:
            text = text.replace(secret, "[redacted]")
    text = _PATTERNS[0].sub(r"\1 [redacted]", text)
    text = _PATTERNS[1].sub("[redacted]", text)
    return _PATTERNS[2].sub(r"\1[redacted]", text)
