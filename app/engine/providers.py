"""Model providers: parse ``provider/model`` references and build AutoGen model clients.

Keys come from settings only; a built client is used by one agent of one run
and thrown away with it. What a client is built from and holds no state of a
run is made once per provider and shared: the HTTP clients, the openai SDK
client, the endpoint of the lean stream, the model's info. Nothing here ever
returns or logs a secret.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import httpx
import openai
from autogen_core.models import ChatCompletionClient, ModelFamily, ModelInfo

from app.core.settings import Settings
from app.engine.fake import FakeChatCompletionClient, FakeStats, ScriptStep, parse_fake_variant
from app.engine.openai_stream import (
    ChatEndpoint,
    LeanOpenAIChatCompletionClient,
    StockAzureOpenAIChatCompletionClient,
    StockOpenAIChatCompletionClient,
    StreamTransport,
)
from app.patches import autogen_ext_private
from app.patches.autogen_ext_private import azure_openai_client_from_config, get_info, openai_client_from_config

if TYPE_CHECKING:
    from app.engine.specs import ModelOptionsSpec

ProviderName = Literal["fake", "openai", "azure_openai", "openai_compatible"]
PROVIDERS: tuple[ProviderName, ...] = ("openai", "azure_openai", "openai_compatible", "fake")
# SDK clients kept for lean model clients, one per provider endpoint (Azure: per deployment)
SDK_CLIENTS_KEPT = 64
# where AutoGen's OpenAIChatCompletionClient sends these models when no base URL is given
AUTOGEN_BASE_URLS = {
    "gemini-": autogen_ext_private.GEMINI_OPENAI_BASE_URL,
    "claude-": autogen_ext_private.ANTHROPIC_OPENAI_BASE_URL,
    "Llama-": autogen_ext_private.LLAMA_API_BASE_URL,
}


class ModelConfigError(ValueError):
    """A model reference that cannot be used: unknown provider, bad name, or provider not configured."""


@dataclass(frozen=True)
class ModelRef:
    provider: ProviderName
    name: str

    def __str__(self) -> str:
        return f"{self.provider}/{self.name}"


@dataclass(frozen=True)
class ProviderStatus:
    provider: ProviderName
    configured: bool
    base_url: str | None
    hint: str


class ModelRegistry:
    """Knows which providers are configured and builds a fresh client per agent per run."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self.fake_stats = FakeStats(prompt_log=settings.fake_prompt_log)
        self._http: httpx.AsyncClient | None = None
        # the lean streams' HTTP client (aiohttp); the SDK's calls keep the httpx one
        self.stream_transport = StreamTransport()
        self._sdk_clients: OrderedDict[tuple[str, str], tuple[openai.AsyncOpenAI, ChatEndpoint]] = OrderedDict()
        self._model_infos: dict[tuple[str, str], ModelInfo] = {}

    def http_client(self) -> httpx.AsyncClient:
        """One httpx client for every SDK call of this server (the lean streams use ``stream_transport``).

        Each OpenAI client would otherwise build its own, with a new SSL context (about 16 ms of CPU
        and 800 KB apiece) for every agent of every run, and no connection would ever be reused.
        """
        if self._http is None:
            self._http = openai.DefaultAsyncHttpxClient()
        return self._http

    async def aclose(self) -> None:
        # the SDK clients kept here only hold the shared HTTP client: closing it closes them
        self._sdk_clients.clear()
        await self.stream_transport.aclose()
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    @property
    def default_model(self) -> str:
        return self._settings.resolved_default_model

    def providers(self) -> list[ProviderStatus]:
        s = self._settings
        return [
            ProviderStatus(
                "openai",
                s.openai_api_key is not None,
                s.openai_base_url,
                "set SWARM_OPENAI_API_KEY (or OPENAI_API_KEY)",
            ),
            ProviderStatus(
                "azure_openai",
                s.azure_openai_api_key is not None and bool(s.azure_openai_endpoint),
                s.azure_openai_endpoint,
                "set SWARM_AZURE_OPENAI_API_KEY and SWARM_AZURE_OPENAI_ENDPOINT; the model is the deployment name",
            ),
            ProviderStatus(
                "openai_compatible",
                bool(s.openai_compatible_base_url),
                s.openai_compatible_base_url,
                "set SWARM_OPENAI_COMPATIBLE_BASE_URL (Ollama, vLLM, llama.cpp, LM Studio)",
            ),
            ProviderStatus("fake", True, None, "deterministic; always available"),
        ]

    def parse(self, ref: str | None) -> ModelRef:
        """Resolve ``ref`` (None means the default model) or raise ModelConfigError."""
        text = ref or self.default_model
        provider, sep, name = text.partition("/")
        if not sep or not name:
            raise ModelConfigError(f"'{text}' is not a model reference of the form provider/model.")
        if provider not in PROVIDERS:
            raise ModelConfigError(f"Unknown model provider '{provider}'; known: {', '.join(PROVIDERS)}.")
        status = next(p for p in self.providers() if p.provider == provider)
        if not status.configured:
            raise ModelConfigError(f"Model provider '{provider}' is not configured: {status.hint}.")
        if provider == "fake":
            try:
                parse_fake_variant(name)
            except ValueError as exc:
                raise ModelConfigError(str(exc)) from exc
        return ModelRef(provider, name)  # type: ignore[arg-type]

    def supports_tools(self, ref: ModelRef) -> bool:
        if ref.provider == "openai_compatible":
            return self._settings.openai_compatible_function_calling
        return True

    def build(
        self, ref: ModelRef, options: ModelOptionsSpec | None = None, *, streaming: bool = False, lean: bool = False
    ) -> ChatCompletionClient:
        """A fresh client for one agent of one run.

        ``lean``: AutoGen's client with the lean stream (``app/engine/openai_stream.py``), built on the
        provider's shared SDK client; otherwise AutoGen's stock client, as AutoGen builds it. Both read
        their answers with ``ChunkAssembler`` (``app/engine/chunks.py``).
        """
        if ref.provider == "fake":
            script = [ScriptStep.of(step) for step in options.script] if options and options.script else ()
            return FakeChatCompletionClient(parse_fake_variant(ref.name), script=script, stats=self.fake_stats)
        args: dict[str, Any] = {}
        if options is not None:
            if options.temperature is not None:
                args["temperature"] = options.temperature
            if options.max_tokens is not None:
                args["max_tokens"] = options.max_tokens
        if streaming:
            # without this, streamed responses report zero tokens
            args["stream_options"] = {"include_usage": True}
        if lean:
            sdk, endpoint = self._sdk_client(ref)
            create_args = {"model": ref.name, **args}
            return LeanOpenAIChatCompletionClient(
                sdk, endpoint, self.stream_transport, create_args=create_args, model_info=self.model_info(ref)
            )
        args.update(self._sdk_config(ref))
        if ref.provider == "azure_openai":
            return StockAzureOpenAIChatCompletionClient(model=ref.name, model_info=self.model_info(ref), **args)
        return StockOpenAIChatCompletionClient(model=ref.name, model_info=self.model_info(ref), **args)

    def _sdk_config(self, ref: ModelRef) -> dict[str, Any]:
        """What AutoGen's client passes on to the openai SDK client for ``ref``: endpoint, key, HTTP client."""
        s = self._settings
        # the guarded client retries (with our backoff and timeout); the SDK's own retries would nest under it
        config: dict[str, Any] = {"http_client": self.http_client(), "max_retries": 0}
        if ref.provider == "openai":
            assert s.openai_api_key is not None
            if s.openai_base_url:
                config["base_url"] = s.openai_base_url
            config["api_key"] = s.openai_api_key.get_secret_value()
        elif ref.provider == "azure_openai":
            assert s.azure_openai_api_key is not None and s.azure_openai_endpoint
            config.update(
                azure_deployment=ref.name,
                azure_endpoint=s.azure_openai_endpoint,
                api_version=s.azure_openai_api_version,
                api_key=s.azure_openai_api_key.get_secret_value(),
            )
        else:
            key = s.openai_compatible_api_key.get_secret_value() if s.openai_compatible_api_key else "not-needed"
            config.update(api_key=key, base_url=s.openai_compatible_base_url or "")
        return config

    def _sdk_client(self, ref: ModelRef) -> tuple[openai.AsyncOpenAI, ChatEndpoint]:
        """The provider's SDK client (built by AutoGen's own helpers, as its clients build theirs) and endpoint.

        An SDK client holds configuration and the shared HTTP client, nothing of a call, so every model
        client of the provider can use one: that saves building one per agent per run.
        """
        config = self._sdk_config(ref)
        if ref.provider == "openai" and "base_url" not in config:
            # AutoGen's OpenAIChatCompletionClient sends these families to their own OpenAI-compatible APIs
            prefix = next((p for p in AUTOGEN_BASE_URLS if ref.name.startswith(p)), None)
            if prefix is not None:
                config["base_url"] = AUTOGEN_BASE_URLS[prefix]
        key = (ref.provider, ref.name if ref.provider == "azure_openai" else str(config.get("base_url")))
        kept = self._sdk_clients.get(key)
        if kept is not None:
            self._sdk_clients.move_to_end(key)
            return kept
        sdk: openai.AsyncOpenAI
        if ref.provider == "azure_openai":
            sdk = azure_openai_client_from_config(config)
            auth = {"api-key": config["api_key"]}
        else:
            sdk = openai_client_from_config(config)
            auth = sdk.auth_headers
        kept = self._sdk_clients[key] = (sdk, ChatEndpoint.of(sdk, auth, self.http_client()))
        if len(self._sdk_clients) > SDK_CLIENTS_KEPT:
            self._sdk_clients.popitem(last=False)
        return kept

    def model_info(self, ref: ModelRef) -> ModelInfo:
        key = (ref.provider, ref.name)
        info = self._model_infos.get(key)
        if info is None:
            if ref.provider == "openai_compatible":
                info = ModelInfo(
                    vision=False,
                    function_calling=self._settings.openai_compatible_function_calling,
                    json_output=False,
                    family=ModelFamily.UNKNOWN,
                    structured_output=False,
                )
            else:
                info = known_or_generic_model_info(ref.name)
            if len(self._model_infos) < SDK_CLIENTS_KEPT * 4:
                self._model_infos[key] = info
        return info


def known_or_generic_model_info(name: str) -> ModelInfo:
    try:
        return get_info(name)
    except (KeyError, ValueError):
        return ModelInfo(
            vision=False,
            function_calling=True,
            json_output=True,
            family=ModelFamily.UNKNOWN,
            structured_output=True,
        )
