"""Provider keys never appear in a response, a stored event, an exported spec, an error or a log line.

Tested by scanning everything a client and an operator can see while runs use every configured
provider, including one that echoes the credentials it was sent back in its error messages.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.conftest import Backend, serve_app
from tests.faults.provider import SECRET_ECHO, FaultyProvider
from tests.fixtures.specs import agent, run_body, team

SECRETS = {
    "openai_api_key": "sk-proj-SECRETopenaiA1b2C3d4E5f6",
    "azure_openai_api_key": "SECRETazure0123456789abcdef",
    "openai_compatible_api_key": "SECRETcompatibleXyZ987",
}


async def test_no_secret_in_responses_events_exports_errors_or_logs(
    backend: Backend, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    await scan_for_secrets(backend, tmp_path, capfd, echo_credentials=False)


async def test_no_secret_even_when_a_provider_echoes_it_in_an_error(
    backend: Backend, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    await scan_for_secrets(backend, tmp_path, capfd, echo_credentials=True)


async def scan_for_secrets(
    backend: Backend, tmp_path: Path, capfd: pytest.CaptureFixture[str], *, echo_credentials: bool
) -> None:
    async with FaultyProvider(echo_credentials=echo_credentials).running() as provider:
        settings = backend.settings(
            tmp_path,
            log_level="DEBUG",
            openai_base_url=provider.base_url,
            azure_openai_endpoint=provider.base_url.removesuffix("/v1"),
            openai_compatible_base_url=provider.base_url,
            model_timeout_s=5,
            model_max_retries=0,
            **SECRETS,
        )
        seen: list[str] = []
        async with serve_app(settings) as (_, client):

            async def get(path: str, **kwargs: object) -> httpx.Response:
                r = await client.get(path, **kwargs)  # type: ignore[arg-type]
                seen.append(r.text + repr(r.headers))
                return r

            for path in ("/v1/models", "/openapi.json", "/readyz", "/healthz"):
                assert (await get(path)).status_code == 200
            members = [
                agent("writer", "fake/t3"),
                agent("critic", "openai_compatible/err401"),
                agent("reviewer", "openai/err500"),
            ]
            made = await client.post("/v1/teams", json=team("leaky", members=members))
            assert made.status_code == 201, made.text
            seen.append(made.text)
            exported = await get(f"/v1/teams/{made.json()['id']}/component")
            assert exported.status_code == 200
            for model in ("openai_compatible/err401", "openai/err500", "azure_openai/err403"):
                body = run_body(team=team(members=[agent("writer", "fake/t3"), agent("critic", model)]))
                r = await client.post("/v1/runs/wait", json=body)
                seen.append(r.text)
                run = r.json()
                assert run["status"] == "failed", run
                assert run["error"]["message"], "the failure is explained"
                await get(f"/v1/runs/{run['id']}")
                await get(f"/v1/runs/{run['id']}/events", headers={"accept": "application/json"})
                await get(f"/v1/runs/{run['id']}/events")
                await get(f"/v1/conversations/{run['conversation_id']}/messages")
            # the provider really was sent the keys (and echoed them), so the scan below can fail
            assert provider.requests >= 3
        logs = capfd.readouterr()
        everything = "\n".join([*seen, logs.out, logs.err])
        assert "run_failed" in everything  # the logs were captured
        assert (SECRET_ECHO in everything) is echo_credentials  # and the provider's words reached them
        for name, secret in SECRETS.items():
            assert secret not in everything, f"{name} leaked"
            assert secret[6:-4] not in everything, f"part of {name} leaked"
