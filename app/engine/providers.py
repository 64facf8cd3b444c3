"""Model providers: parse ``provider/model`` references and build AutoGen model clients.

Keys come from settings only; a built client is used by one agent of one run
and thrown away with it. Nothing here ever returns or logs a secret.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import httpx
import openai
from autogen_core.models import ChatCompletionClient, ModelFamily, ModelInfo
from autogen_ext.models.openai import AzureOpenAIChatCompletionClient, OpenAIChatCompletionClient
from autogen_ext.models.openai._model_info import get_info

from app.core.settings import Settings
from app.engine.fake import FakeChatCompletionClient, FakeStats, parse_fake_variant

if TYPE_CHECKING:
    from app.agents.schemas import ModelOptions

ProviderName = Literal["fake", "openai", "azure_openai", "openai_compatible"]
PROVIDERS: tuple[ProviderName, ...] = ("openai", "azure_openai", "openai_compatible", "fake")


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
        self.fake_stats = FakeStats()
        self._http: httpx.AsyncClient | None = None

    def http_client(self) -> httpx.AsyncClient:
        """One HTTP client for every provider call of this server.

        Each OpenAI client would otherwise build its own, with a new SSL context (about 16 ms of CPU
        and 800 KB apiece) for every agent of every run, and no connection would ever be reused.
        """
        if self._http is None:
            self._http = openai.DefaultAsyncHttpxClient()
        return self._http

    async def aclose(self) -> None:
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
        self, ref: ModelRef, options: ModelOptions | None = None, *, streaming: bool = False
    ) -> ChatCompletionClient:
        s = self._settings
        if ref.provider == "fake":
            script = options.script if options and options.script else ()
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
        args["http_client"] = self.http_client()
        # the guarded client retries (with our backoff and timeout); the SDK's own retries would nest under it
        args["max_retries"] = 0
        if ref.provider == "openai":
            assert s.openai_api_key is not None
            if s.openai_base_url:
                args["base_url"] = s.openai_base_url
            return OpenAIChatCompletionClient(
                model=ref.name,
                api_key=s.openai_api_key.get_secret_value(),
                model_info=known_or_generic_model_info(ref.name),
                **args,
            )
        if ref.provider == "azure_openai":
            assert s.azure_openai_api_key is not None and s.azure_openai_endpoint
            return AzureOpenAIChatCompletionClient(
                model=ref.name,
                azure_deployment=ref.name,
                azure_endpoint=s.azure_openai_endpoint,
                api_version=s.azure_openai_api_version,
                api_key=s.azure_openai_api_key.get_secret_value(),
                model_info=known_or_generic_model_info(ref.name),
                **args,
            )
        key = s.openai_compatible_api_key.get_secret_value() if s.openai_compatible_api_key else "not-needed"
        return OpenAIChatCompletionClient(
            model=ref.name,
            api_key=key,
            base_url=s.openai_compatible_base_url or "",
            model_info=ModelInfo(
                vision=False,
                function_calling=s.openai_compatible_function_calling,
                json_output=False,
                family=ModelFamily.UNKNOWN,
                structured_output=False,
            ),
            **args,
        )


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
