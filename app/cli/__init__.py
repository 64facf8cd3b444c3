"""The `swarmdirector` command: one Typer app; each group of commands lives in its own module."""

from __future__ import annotations

import typer

from app.cli.dev import dev_cli
from app.cli.keys import keys_cli
from app.cli.run import run
from app.cli.serve import db_cli, serve
from app.cli.teams import teams_cli
from app.cli.worker import worker

cli = typer.Typer(
    help="SwarmDirector: a streaming API server for AutoGen multi-agent runs.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
cli.command()(serve)
cli.command()(worker)
cli.add_typer(db_cli, name="db")
cli.add_typer(keys_cli, name="keys")
cli.add_typer(teams_cli, name="teams")
cli.command()(run)
cli.add_typer(dev_cli, name="dev")


def main() -> None:
    cli()
