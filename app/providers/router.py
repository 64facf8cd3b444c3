"""`/v1/models`: which providers are configured and which model agents get by default. Never a key."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel, Field

from app.api.deps import ModelsDep, ServicesDep

router = APIRouter(prefix="/v1/models", tags=["models"])


class ProviderRead(BaseModel):
    provider: str = Field(description="`openai`, `azure_openai`, `openai_compatible` or `fake`.")
    configured: bool = Field(description="Whether agents may use this provider now.")
    base_url: str | None = Field(default=None, description="The endpoint used, where one is set.")
    how_to_configure: str = Field(description="Which settings turn the provider on.")


class ModelsRead(BaseModel):
    default_model: str = Field(description="The model of every agent that names none.", examples=["fake/default"])
    default_is_fake: bool = Field(description="True when no real provider is configured and replies are canned.")
    notice: str | None = Field(default=None, description="A plain warning about the default, if any.")
    providers: list[ProviderRead]
    tools: list[str] = Field(description="Tools registered on this server, usable by name in agent specs.")


FAKE_NOTICE = (
    "No model provider key is configured: agents without a model use the deterministic fake model, "
    "whose replies are generated placeholder text. Set SWARM_OPENAI_API_KEY (or another provider) "
    "to use a real model."
)


@router.get("", name="list_models", summary="List model providers and the default model")
async def list_models(models: ModelsDep, services: ServicesDep) -> ModelsRead:
    default = models.default_model
    fake = default.startswith("fake/")
    return ModelsRead(
        default_model=default,
        default_is_fake=fake,
        notice=FAKE_NOTICE if fake else None,
        providers=[
            ProviderRead(provider=p.provider, configured=p.configured, base_url=p.base_url, how_to_configure=p.hint)
            for p in models.providers()
        ],
        tools=services.tools.names(),
    )
