"""`swarmdirector dev`: tools for trying the server without a provider's key."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

dev_cli = typer.Typer(
    help="Tools for developers: a fake OpenAI-compatible model server, the OpenAPI document.", no_args_is_help=True
)


@dev_cli.command("fake-llm")
def fake_llm(
    host: Annotated[str, typer.Option(help="Bind address.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port (0 picks a free one).")] = 8090,
) -> None:
    """Serve a fast, deterministic OpenAI-compatible model on HOST:PORT (numbered words; see its module doc).

    Point the `openai_compatible` provider at it: SWARM_OPENAI_COMPATIBLE_BASE_URL=http://HOST:PORT/v1,
    then use models such as `openai_compatible/fake-t64-d20` (64 words, 20 ms apart).
    """
    from app.dev.fake_llm import main

    main(["--host", host, "--port", str(port)])


@dev_cli.command("openapi")
def openapi(
    path: Annotated[Path | None, typer.Argument(help="Where to write it (default: standard output).")] = None,
) -> None:
    """Write the API's OpenAPI document, as the server serves it (``make openapi`` writes docs/openapi.json)."""
    from app.core.openapi import render
    from app.core.settings import Settings
    from app.main import create_app

    # the document does not depend on settings; defaults keep it independent of the environment
    text = render(create_app(Settings(_env_file=None)).openapi())  # type: ignore[call-arg]
    if path is None:
        sys.stdout.write(text)
    else:
        path.write_text(text, encoding="utf-8")
