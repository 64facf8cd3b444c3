"""The SDK's error for a refused request (app/patches/openai_private.py) is the one the SDK's own call
raises."""

from __future__ import annotations

import httpx
import openai
import pytest

from app.patches.openai_private import status_error

URL = "http://provider.test/v1/chat/completions"


def refusing(status: int, body: bytes) -> httpx.MockTransport:
    headers = {"content-type": "application/json"}
    return httpx.MockTransport(lambda request: httpx.Response(status, content=body, headers=headers))


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (429, b'{"error": {"message": "slow down", "type": "rate_limit"}}'),
        (500, b'{"error": {"message": "boom"}}'),
        (401, b'{"error": {"message": "bad key"}}'),
        (404, b"not here"),
        (503, b""),
    ],
)
async def test_the_error_is_the_sdks_own(status: int, body: bytes) -> None:
    http = httpx.AsyncClient(transport=refusing(status, body))
    sdk = openai.AsyncOpenAI(api_key="sk-test", base_url="http://provider.test/v1", http_client=http, max_retries=0)
    with pytest.raises(openai.APIStatusError) as raised:
        await sdk.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
    request = httpx.Request("POST", URL)
    ours = status_error(sdk, httpx.Response(status, content=body, request=request))
    theirs = raised.value
    assert type(ours) is type(theirs)
    assert (ours.status_code, ours.message, ours.body) == (theirs.status_code, theirs.message, theirs.body)
    await http.aclose()
