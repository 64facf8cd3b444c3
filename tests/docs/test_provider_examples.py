"""The provider examples of docs/providers.md (the blocks marked ``# example: <name>``), tried.

Each example's settings are built into the endpoint the server would call (its URL and key), and
then, with only the host swapped for a loopback replay, answer a recorded stream of that provider
through both model clients. No request leaves the machine.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
from autogen_core.models import CreateResult, UserMessage

from app.engine.providers import ModelRegistry
from tests.conftest import make_settings
from tests.providers.replay import ReplayServer, transcripts

DOC = Path(__file__).resolve().parents[2] / "docs" / "providers.md"
EXAMPLE = re.compile(r"```sh\n# example: (\w+)\n(.*?)```", re.DOTALL)
# each example and the recorded stream of its provider it must read
STREAMS = {"gemini": "gemini__text", "openrouter": "openrouter__reasoning", "lmstudio": "lmstudio__text"}


def examples() -> dict[str, dict[str, str]]:
    found: dict[str, dict[str, str]] = {}
    for name, block in EXAMPLE.findall(DOC.read_text("utf-8")):
        env: dict[str, str] = {}
        for line in block.splitlines():
            words = shlex.split(line)
            if words[:1] == ["export"]:
                key, _, value = words[1].partition("=")
                env[key] = value
        found[name] = env
    return found


def settings_of(env: dict[str, str], tmp_path: Path, base_url: str | None = None) -> ModelRegistry:
    values = {
        "openai_compatible_base_url": base_url or env["SWARM_OPENAI_COMPATIBLE_BASE_URL"],
        "default_model": env["SWARM_DEFAULT_MODEL"],
    }
    if "SWARM_OPENAI_COMPATIBLE_API_KEY" in env:
        values["openai_compatible_api_key"] = env["SWARM_OPENAI_COMPATIBLE_API_KEY"]
    return ModelRegistry(make_settings(tmp_path, **values))


def test_the_doc_has_each_example() -> None:
    assert set(examples()) == set(STREAMS)


@pytest.mark.parametrize("name", sorted(STREAMS))
def test_an_example_is_the_endpoint_it_names(name: str, tmp_path: Path) -> None:
    env = examples()[name]
    models = settings_of(env, tmp_path)
    ref = models.parse(None)
    assert ref.provider == "openai_compatible" and f"openai_compatible/{ref.name}" == env["SWARM_DEFAULT_MODEL"]
    _, endpoint = models._sdk_client(ref)
    assert str(endpoint.url) == env["SWARM_OPENAI_COMPATIBLE_BASE_URL"].rstrip("/") + "/chat/completions"
    key = env.get("SWARM_OPENAI_COMPATIBLE_API_KEY")
    assert endpoint.headers["authorization"] == f"Bearer {key or 'not-needed'}"


@pytest.fixture
async def replay(request: pytest.FixtureRequest) -> AsyncIterator[ReplayServer]:
    async with ReplayServer(seed=3, serve=STREAMS[request.param]).running() as server:
        yield server


@pytest.mark.parametrize("lean", [True, False], ids=["lean", "stock"])
@pytest.mark.parametrize("replay", sorted(STREAMS), indirect=True)
async def test_an_example_reads_its_providers_stream(replay: ReplayServer, lean: bool, tmp_path: Path) -> None:
    name = next(n for n, stem in STREAMS.items() if stem == replay.serve)
    env = examples()[name]
    documented = urlsplit(env["SWARM_OPENAI_COMPATIBLE_BASE_URL"])
    local = urlunsplit(("http", f"127.0.0.1:{replay.port}", documented.path, "", ""))
    models = settings_of(env, tmp_path, local)
    client = models.build(models.parse(None), streaming=True, lean=lean)
    items = [i async for i in client.create_stream([UserMessage(content="Hello", source="user")])]
    await models.aclose()
    result = items[-1]
    expected = transcripts()[replay.serve or ""].expected
    assert isinstance(result, CreateResult) and result.content == expected["text"]
    target, headers = replay.heads[-1]
    assert target == documented.path.rstrip("/") + "/chat/completions"
    assert replay.requests[-1]["model"] == env["SWARM_DEFAULT_MODEL"].split("/", 1)[1]
    if "SWARM_OPENAI_COMPATIBLE_API_KEY" in env:
        assert headers["authorization"] == f"Bearer {env['SWARM_OPENAI_COMPATIBLE_API_KEY']}"
