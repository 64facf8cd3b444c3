"""The openai SDK's error for a refused request, made by the SDK itself.

Written for openai 2.54.0 (a private method called: ``AsyncOpenAI._make_status_error_from_response``).
Needed for correctness, so it cannot be switched off.

The lean model stream POSTs over aiohttp (``app/engine/openai_stream.py``; docs/performance.md,
sections 4 and 12), yet a refused request must fail as the SDK's own call would, so that
``GuardedModelClient`` classifies and retries it as before: ``RateLimitError`` for 429,
``InternalServerError`` for 5xx, Azure's subclasses, the body and message as the SDK reads them.
The response is turned back into an httpx one, and the SDK client makes its exception of it.
``tests/engine/test_openai_stream.py`` holds the lean client's refusals to the stock client's, and
``tests/patches/test_openai_private.py`` holds this to the SDK's own call.
"""

from __future__ import annotations

import httpx
import openai


def status_error(sdk: openai.AsyncOpenAI, response: httpx.Response) -> openai.APIStatusError:
    """The exception ``sdk`` raises for ``response``, a refused request's (status not 2xx)."""
    return sdk._make_status_error_from_response(response)
