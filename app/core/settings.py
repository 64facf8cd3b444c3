"""All configuration, read once from the environment (prefix ``SWARM_``) or ``.env``.

One class, built by the caller and injected; nothing imports a global settings
object. Validators refuse values that would be unsafe in production.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """SwarmDirector settings. Every field is read from ``SWARM_<FIELD>``."""

    model_config = SettingsConfigDict(
        env_prefix="SWARM_",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
    )

    environment: Literal["development", "test", "production"] = Field(
        default="development", description="`production` turns on the strict checks."
    )
    host: str = Field(default="127.0.0.1", description="Address `swarmdirector serve` binds to.")
    port: int = Field(default=8000, ge=1, le=65535, description="Port `swarmdirector serve` binds to.")

    # -- storage ---------------------------------------------------------------------------------
    database_url: str = Field(
        default="sqlite+aiosqlite:///./swarmdirector.db",
        description="SQLAlchemy async URL. SQLite (aiosqlite) by default; PostgreSQL via asyncpg.",
    )
    auto_migrate: bool = Field(default=True, description="Run `alembic upgrade head` at start.")
    seed_demo: bool = Field(default=True, description="Create the `demo` team on first start.")
    delta_retention_s: float = Field(
        default=7 * 24 * 3600,
        ge=0,
        description="How long `message.delta` events of a finished run are kept (0 = forever).",
    )

    # -- models ----------------------------------------------------------------------------------
    default_model: str | None = Field(
        default=None,
        description=(
            "`provider/model` used by every agent that names none. Unset: `openai/gpt-4o-mini` when an "
            "OpenAI key is configured, otherwise the deterministic `fake/default`."
        ),
    )
    openai_api_key: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("SWARM_OPENAI_API_KEY", "OPENAI_API_KEY")
    )
    openai_base_url: str | None = Field(default=None, description="Override the OpenAI API base URL.")
    azure_openai_api_key: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("SWARM_AZURE_OPENAI_API_KEY", "AZURE_OPENAI_API_KEY")
    )
    azure_openai_endpoint: str | None = Field(
        default=None, validation_alias=AliasChoices("SWARM_AZURE_OPENAI_ENDPOINT", "AZURE_OPENAI_ENDPOINT")
    )
    azure_openai_api_version: str = Field(default="2024-10-21")
    openai_compatible_base_url: str | None = Field(
        default=None, description="Base URL of an OpenAI-compatible server (Ollama, vLLM, llama.cpp)."
    )
    openai_compatible_api_key: SecretStr | None = Field(default=None)
    openai_compatible_function_calling: bool = Field(
        default=True, description="Whether models behind `openai_compatible` support tool calls."
    )
    tools: list[str] = Field(
        default_factory=list,
        description='Extra tools as `module:function` entry points, e.g. `["mytools:lookup_order"]` (JSON).',
    )
    tool_timeout_s: float = Field(default=30.0, gt=0, description="Longest a tool call may take.")
    tools_require_approval: list[str] = Field(
        default_factory=list,
        description=(
            "Registered tools (built-in or from `SWARM_TOOLS`) whose every call waits for a person's approval, "
            'e.g. `["send_email"]` (JSON); agents may ask it of more (`approve_tools`). An unknown name stops '
            "the server at start."
        ),
    )
    tools_idempotent: list[str] = Field(
        default_factory=list,
        description=(
            "Tools from `SWARM_TOOLS` that may run again when a crash interrupted a call (they change nothing, "
            'or the same twice), e.g. `["lookup_order"]` (JSON); the built-in tools are. A resumed run gives '
            "any other interrupted call an error result instead. An unknown name stops the server at start."
        ),
    )
    fast_tokens: bool = Field(
        default=True,
        description="Stream tokens from the model client straight to watchers, around AutoGen's runtime.",
    )
    gc_tuning: bool = Field(
        default=True,
        description="Freeze startup's objects and make full garbage collections rare and idle-time (see docs).",
    )
    selector_max_tokens: int | None = Field(
        default=64,
        ge=1,
        description="Cap on the reply of a selector team's speaker choice (a name); unset for none "
        "(a reasoning model may need more).",
    )
    model_timeout_s: float = Field(
        default=120.0, gt=0, description="Longest wait for a model's first token, or between two tokens."
    )
    model_max_retries: int = Field(
        default=2, ge=0, le=10, description="Retries of a model call after a rate limit or transient error."
    )
    model_retry_backoff_s: float = Field(
        default=0.5, ge=0, description="First retry delay; it doubles (with jitter) up to 8 s."
    )

    # -- runs ------------------------------------------------------------------------------------
    run_timeout_s: float = Field(default=600.0, gt=0, description="Default hard time limit of a run.")
    max_run_timeout_s: float = Field(default=3600.0, gt=0, description="Largest `timeout_s` a run may ask.")
    default_max_messages: int = Field(default=10, ge=1, description="Termination for a team that sets none of its own.")
    max_task_chars: int = Field(default=32_000, ge=1, description="Longest task accepted.")
    max_body_bytes: int = Field(default=1_048_576, ge=1024, description="Largest request body accepted.")
    shutdown_grace_s: float = Field(default=10.0, ge=0, description="How long live runs get on stop.")
    input_timeout_s: float = Field(
        default=24 * 3600,
        gt=0,
        description=(
            "How long a run waits for a person's input before it ends `timed_out` (`input_timeout`). A parked "
            "run's deadline is stored and enforced by a sweeper, so it holds across restarts."
        ),
    )
    fake_prompt_log: Path | None = Field(
        default=None,
        description=(
            "A testing aid: the `fake` model appends each call's prompt and reply to this file, a JSON line "
            "apiece (what a model was sent, visible across processes and restarts). Unset: nothing is written."
        ),
    )
    run_retries: int = Field(
        default=0,
        ge=0,
        le=5,
        description=(
            "The `retries` of a run whose request gives none: how many times a run whose process died while it "
            "was executing (an embedded restart, a lost worker) resumes from its last whole turn. 0: such a run "
            "ends `failed` (`server_restarted`, `worker_lost`)."
        ),
    )
    max_parked_runs_per_principal: int = Field(
        default=1000,
        ge=1,
        description=(
            "Parked runs (waiting for a person with no process holding them) one principal may have at once; "
            "past it, a new run is refused `429 too_many_parked_runs`. They do not count as live runs."
        ),
    )
    parked_sweep_s: float = Field(
        default=5.0, gt=0, description="How often a process looks for parked runs whose input has expired."
    )
    max_input_chars: int = Field(default=32_000, ge=1, description="Longest answer to an input request.")
    idempotency_window_s: float = Field(
        default=24 * 3600,
        gt=0,
        description="How long a run start's `Idempotency-Key` is kept: a repeat within it gets the same run.",
    )

    # -- streaming -------------------------------------------------------------------------------
    watcher_buffer: int = Field(
        default=2048, ge=16, description="Events a watcher may fall behind before it is cut loose."
    )
    sse_ping_s: float = Field(
        default=15.0, gt=0, description="An SSE stream with no event for this long gets a `: ping` comment."
    )
    sse_send_timeout_s: float = Field(
        default=30.0, gt=0, description="A stalled SSE or WebSocket client is disconnected after this."
    )
    ws_max_frame_bytes: int = Field(default=65_536, ge=1024, description="Largest WebSocket frame accepted.")
    ws_max_subscriptions: int = Field(default=100, ge=1, description="Runs one WebSocket may follow at once.")

    # -- scale-out -------------------------------------------------------------------------------
    redis_url: str | None = Field(
        default=None,
        description=(
            "Redis URL (`redis://host:6379/0`). Set: the distributed mode, where the event bus and the "
            "cancel/input signals go through Redis and runs are claimed from the database by executors "
            "under a lease, so any number of API replicas and workers share the work."
        ),
    )
    redis_prefix: str = Field(default="swarm", min_length=1, description="Prefix of every Redis key and channel.")
    execute_runs: bool = Field(
        default=True,
        description="Whether `swarmdirector serve` executes runs itself; false leaves them to workers (needs Redis).",
    )
    worker_concurrency: int = Field(default=100, ge=1, description="Runs one process executes at once.")
    processes: int = Field(
        default=1,
        ge=1,
        le=64,
        description=(
            "API processes `swarmdirector serve` runs on this machine, sharing its port (SO_REUSEPORT), "
            "each executing runs too: set it to the number of cores. Above 1 it needs SWARM_REDIS_URL."
        ),
    )
    lease_s: float = Field(
        default=15.0,
        ge=0.5,
        description="A run's lease: renewed every third of it; a run whose lease lapses has lost its worker.",
    )
    sweep_interval_s: float = Field(
        default=2.0, gt=0, description="How often lapsed leases are looked for (and queued runs polled)."
    )
    stream_retention_s: float = Field(
        default=3600.0,
        gt=0,
        description="How long a finished run's Redis stream (every event, deltas included) is kept.",
    )

    # -- security --------------------------------------------------------------------------------
    auth_required: bool = Field(
        default=False,
        description=(
            "Require an API key on every `/v1` request even on loopback before any key exists. Keys are "
            "always required when the server listens beyond loopback, in production, or once a key exists."
        ),
    )
    allowed_hosts: list[str] = Field(
        default_factory=list,
        description=(
            "Host names, besides `localhost` and loopback addresses, that a server which may answer without a "
            'key (on loopback) answers to (JSON, e.g. `["swarm.internal"]`); a request whose `Host` names '
            "another gets `400` (DNS rebinding). Not checked where keys are always required (see above)."
        ),
    )
    allowed_origins: list[str] = Field(
        default_factory=list,
        description=(
            "Web origins, besides the server's own, whose pages may call `/v1` and open its WebSocket "
            '(JSON, e.g. `["https://app.example"]`); a request with another `Origin` header gets `403`.'
        ),
    )
    max_live_runs_per_principal: int = Field(
        default=20, ge=1, description="Runs one principal may have queued, running or awaiting input at once."
    )
    max_runs_per_minute: int = Field(
        default=60, ge=1, description="Runs one principal may start in any 60 s (per server process)."
    )
    storage_retry_s: float = Field(
        default=5.0,
        ge=0,
        description=(
            "How long a write rides out an unreachable database before the run fails `storage_error` "
            "(or, for a run being started, the request is refused `503 storage_unavailable` and nothing is written); "
            "a live stream's reads ride it out as long before the stream ends with `stream.closing` "
            "(`storage_unavailable`)."
        ),
    )
    readyz_timeout_s: float = Field(default=2.0, gt=0, description="How long `/readyz` waits for the database.")

    # -- logging ---------------------------------------------------------------------------------
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_json: bool = Field(default=True, description="JSON log lines (false: human-readable).")

    @field_validator("allowed_hosts")
    @classmethod
    def _host_names(cls, names: list[str]) -> list[str]:
        for name in names:
            if not re.fullmatch(r"[\w.-]+|\[[0-9a-f:.]+\]", name, re.IGNORECASE):
                raise ValueError(f"{name!r} is not a host name (no scheme, port, path or wildcard)")
        return names

    @field_validator("allowed_origins")
    @classmethod
    def _web_origins(cls, origins: list[str]) -> list[str]:
        for origin in origins:
            found = re.fullmatch(r"https?://(?:[\w.-]+|\[[0-9a-f:.]+\])(?::(\d{1,5}))?/?", origin, re.IGNORECASE)
            if found is None or int(found.group(1) or 0) > 65535:
                raise ValueError(f"{origin!r} is not a web origin (`https://host[:port]`)")
        return origins

    @model_validator(mode="after")
    def _refuse_unsafe(self) -> Settings:
        if not self.execute_runs and self.redis_url is None:
            raise ValueError("SWARM_EXECUTE_RUNS=false needs SWARM_REDIS_URL: without workers no run would ever start")
        if self.processes > 1 and self.redis_url is None:
            raise ValueError("SWARM_PROCESSES above 1 needs SWARM_REDIS_URL: the processes share runs through it")
        if self.run_timeout_s > self.max_run_timeout_s:
            raise ValueError("SWARM_RUN_TIMEOUT_S must not exceed SWARM_MAX_RUN_TIMEOUT_S")
        if self.environment == "production":
            if self.database_url.startswith("sqlite") and ":memory:" in self.database_url:
                raise ValueError("an in-memory database loses everything; not allowed in production")
            if self.resolved_default_model.startswith("fake/"):
                raise ValueError("production with the fake model: configure a provider key or SWARM_DEFAULT_MODEL")
        return self

    def secret_values(self) -> list[str]:
        """Every configured credential, to scrub from any text that may reach a client or a log."""
        secrets = (self.openai_api_key, self.azure_openai_api_key, self.openai_compatible_api_key)
        return [s.get_secret_value() for s in secrets if s is not None and s.get_secret_value()]

    @property
    def resolved_default_model(self) -> str:
        if self.default_model:
            return self.default_model
        if self.openai_api_key is not None:
            return "openai/gpt-4o-mini"
        return "fake/default"

    @property
    def distributed(self) -> bool:
        """Redis is configured: runs are queued in the database and claimed under leases."""
        return self.redis_url is not None

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @property
    def migrations_dir(self) -> Path:
        return Path(__file__).resolve().parents[2] / "migrations"
