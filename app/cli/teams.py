"""`swarmdirector teams list | export | import`: a server's team specs as JSON files.

``export`` writes the specs exactly as ``POST /v1/teams`` takes them (the
server's own fields dropped), so ``import`` of an export recreates the teams
on another server. ``import`` takes one spec or a list, from a file or ``-``
(stdin); a name that exists is refused unless ``--replace`` is given.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from rich.console import Console
from rich.table import Table

from app.cli.api import DEFAULT_URL, ApiError, ApiKeyOption, ServerUnreachable, UrlOption, check, sync_client

teams_cli = typer.Typer(help="List, export and import team specs on a server.", no_args_is_help=True)

SERVER_FIELDS = ("id", "object", "created_at", "updated_at")


def _all_teams(client: httpx.Client) -> list[dict[str, Any]]:
    teams: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": 200, **({"cursor": cursor} if cursor else {})}
        page = check(client.get("/v1/teams", params=params))
        teams.extend(page["data"])
        cursor = page.get("next_cursor")
        if not cursor:
            return teams


def as_spec(team: dict[str, Any]) -> dict[str, Any]:
    """A team as ``POST /v1/teams`` takes it: the server's own fields dropped."""
    return {k: v for k, v in team.items() if k not in SERVER_FIELDS}


def _error(message: str) -> None:
    Console(stderr=True, highlight=False).print(f"error: {message}", style="red", markup=False)


def _fail(exc: Exception, url: str) -> typer.Exit:
    _error(str(ServerUnreachable(url)) if isinstance(exc, httpx.TransportError) else str(exc))
    return typer.Exit(1)


def _connect(url: str, api_key: str | None) -> httpx.Client:
    return sync_client(url, api_key)


@teams_cli.command("list")
def list_teams(
    url: UrlOption = DEFAULT_URL,
    api_key: ApiKeyOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the teams as JSON.")] = False,
) -> None:
    """List the server's teams."""
    try:
        with _connect(url, api_key) as client:
            teams = _all_teams(client)
    except (ApiError, httpx.TransportError) as exc:
        raise _fail(exc, url) from None
    if as_json:
        typer.echo(json.dumps(teams, indent=2))
        return
    table = Table("name", "kind", "members", "termination", "id", box=None, header_style="bold")
    for team in teams:
        members = ", ".join(m if isinstance(m, str) else m["name"] for m in team["members"])
        termination = ", ".join(f"{k}={v}" for k, v in (team.get("termination") or {}).items() if v is not None)
        table.add_row(team["name"], team["kind"], members, termination, team["id"])
    Console(highlight=False).print(table)


@teams_cli.command("export")
def export_teams(
    names: Annotated[list[str] | None, typer.Argument(help="Teams to export, by name or id; none: all.")] = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write to this file instead of stdout.", show_default=False)
    ] = None,
    url: UrlOption = DEFAULT_URL,
    api_key: ApiKeyOption = None,
) -> None:
    """Export team specs as JSON: one object for one name, otherwise a list."""
    try:
        with _connect(url, api_key) as client:
            teams = [check(client.get(f"/v1/teams/{name}")) for name in names] if names else _all_teams(client)
    except (ApiError, httpx.TransportError) as exc:
        raise _fail(exc, url) from None
    specs = [as_spec(t) for t in teams]
    text = json.dumps(specs[0] if names and len(names) == 1 else specs, indent=2, ensure_ascii=False) + "\n"
    if output is None:
        sys.stdout.write(text)
    else:
        output.write_text(text, encoding="utf-8")
        Console(stderr=True, highlight=False).print(f"exported {len(specs)} team(s) to {output}", style="dim")


def _read_specs(source: str) -> list[dict[str, Any]]:
    text = sys.stdin.read() if source == "-" else Path(source).read_text(encoding="utf-8")
    loaded = json.loads(text)
    specs = loaded if isinstance(loaded, list) else [loaded]
    if not all(isinstance(s, dict) for s in specs):
        raise ValueError("expected a team spec (a JSON object) or a list of them")
    return [as_spec(s) for s in specs]


@teams_cli.command("import")
def import_teams(
    source: Annotated[str, typer.Argument(help="A JSON file with a team spec or a list of them; `-` for stdin.")],
    replace: Annotated[bool, typer.Option("--replace", help="Replace teams whose name exists.")] = False,
    url: UrlOption = DEFAULT_URL,
    api_key: ApiKeyOption = None,
) -> None:
    """Create teams from JSON specs (as `teams export` writes them)."""
    try:
        specs = _read_specs(source)
    except (OSError, ValueError) as exc:
        _error(f"cannot read {source}: {exc}")
        raise typer.Exit(1) from None
    out = Console(highlight=False)
    failed = 0
    try:
        with _connect(url, api_key) as client:
            for spec in specs:
                name = str(spec.get("name", "?"))
                try:
                    out.print(_import_one(client, spec, name, replace=replace), markup=False)
                except ApiError as exc:
                    hint = " (pass --replace to overwrite it)" if exc.code == "already_exists" else ""
                    _error(f"team {name}: {exc}{hint}")
                    failed += 1
    except httpx.TransportError as exc:
        raise _fail(exc, url) from None
    if failed:
        raise typer.Exit(1)


def _import_one(client: httpx.Client, spec: dict[str, Any], name: str, *, replace: bool) -> str:
    try:
        team = check(client.post("/v1/teams", json=spec))
        return f"created {name} ({team['id']})"
    except ApiError as exc:
        if exc.code != "already_exists" or not replace:
            raise
    team = check(client.put(f"/v1/teams/{name}", json=spec))
    return f"replaced {name} ({team['id']})"
