"""The proxy httpx would send a request through, by httpx's own reading of the environment.

Written for httpx 0.28.1 (private imports: ``httpx._utils.get_environment_proxies`` and
``URLPattern``). Needed for correctness, so it cannot be switched off.

The lean model stream goes over aiohttp, whose ``trust_env`` reads the environment's proxies (and
``~/.netrc``) in a thread on every request, and differs from httpx (it ignores ``ALL_PROXY``). Each
provider's endpoint now carries the proxy the SDK's httpx client would use, chosen once when the
endpoint is made (``env_proxy`` in ``app/engine/openai_stream.py``): two hand-overs to a thread and
back per model call gone, part of the 20 % of a one-token run's server CPU that docs/performance.md,
section 16 measured together. ``tests/engine/test_stream_proxy.py`` holds the choice to httpx's own
client's (schemes, ``ALL_PROXY``, ``NO_PROXY`` hosts, domains, addresses and ``*``).
"""

from __future__ import annotations

import httpx
from httpx._utils import URLPattern, get_environment_proxies


def environment_proxy(url: httpx.URL) -> str | None:
    """The proxy URL httpx (``trust_env``) sends a request for ``url`` through, or None for none.

    From ``HTTP_PROXY``, ``HTTPS_PROXY`` and ``ALL_PROXY``, the most specific pattern first, and
    ``NO_PROXY``, as httpx's client mounts them. Credentials in the proxy's URL stay in it.
    """
    mounts = sorted(((URLPattern(k), v) for k, v in get_environment_proxies().items()), key=lambda m: m[0])
    for pattern, proxy in mounts:
        if pattern.matches(url):
            return proxy
    return None
