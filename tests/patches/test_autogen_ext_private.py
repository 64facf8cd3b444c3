"""What is re-exported from autogen-ext's private modules (app/patches/autogen_ext_private.py) is what
AutoGen's own clients use."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from autogen_core.models import UserMessage
from autogen_ext.models.openai import AzureOpenAIChatCompletionClient, OpenAIChatCompletionClient

from app.patches import autogen_ext_private as private

CONFIG = {"model": "gpt-4o", "api_key": "sk-test", "base_url": "http://127.0.0.1:9/v1", "timeout": 7.0}
AZURE = {
    "model": "gpt-4o",
    "api_key": "az-test",
    "azure_endpoint": "https://example.openai.azure.com",
    "azure_deployment": "dep",
    "api_version": "2024-06-01",
}


def strings(headers: Mapping[str, object]) -> dict[str, object]:
    return {k: v for k, v in headers.items() if isinstance(v, str)}  # not the SDK's "omit" markers


def test_the_sdk_clients_are_made_as_autogens_clients_make_theirs() -> None:
    for ours, theirs in (
        (private.openai_client_from_config(CONFIG), OpenAIChatCompletionClient(**CONFIG)._client),  # type: ignore[arg-type]
        (private.azure_openai_client_from_config(AZURE), AzureOpenAIChatCompletionClient(**AZURE)._client),  # type: ignore[arg-type]
    ):
        assert type(ours) is type(theirs)
        assert (ours.base_url, ours.api_key, ours.timeout) == (theirs.base_url, theirs.api_key, theirs.timeout)
        assert strings(ours.default_headers) == strings(theirs.default_headers)
        assert ours.default_query == theirs.default_query


def test_the_model_info_and_base_urls_are_autogens() -> None:
    assert OpenAIChatCompletionClient(model="gpt-4o", api_key="sk-test").model_info == private.get_info("gpt-4o")
    gemini = OpenAIChatCompletionClient(model="gemini-1.5-flash", api_key="k")._client
    assert str(gemini.base_url) == private.GEMINI_OPENAI_BASE_URL
    assert all(url.startswith("https://") for url in (private.ANTHROPIC_OPENAI_BASE_URL, private.LLAMA_API_BASE_URL))


def test_create_params_are_what_autogens_client_makes_of_a_call() -> None:
    client = OpenAIChatCompletionClient(**CONFIG)  # type: ignore[arg-type]
    params = client._process_create_args([UserMessage(content="hi", source="u")], [], "auto", None, {})
    assert isinstance(params, private.CreateParams)
    assert {f.name for f in dataclasses.fields(params)} >= {"messages", "tools", "response_format", "create_args"}


def test_stop_reasons_are_read_as_autogen_reads_them() -> None:
    assert private.normalize_stop_reason("tool_calls") == "function_calls"
    assert private.normalize_stop_reason("end_turn") == "stop"
    assert private.normalize_stop_reason(None) == "unknown"
