"""`swarmdirector run TEAM "task"`: start a run and watch it live in the terminal.

The run is started with ``POST /v1/runs`` and followed over SSE from its first
event; a dropped stream is resumed after the last seq seen. When an agent asks
for input, the question is shown and the next line typed is the answer, while
the stream goes on. The first Ctrl-C cancels the run on the server and waits
for its ``run.cancelled``; a second one stops waiting. With ``--local`` the
server runs inside this process on the embedded default, on a loopback port.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from pathlib import Path
from typing import IO, Annotated, Any

import httpx
import typer
from rich.console import Console

from app.cli.api import DEFAULT_URL, Api, ApiError, ApiKeyOption, ServerUnreachable, UrlOption
from app.cli.render import RunView

TERMINAL = frozenset({"run.completed", "run.failed", "run.cancelled"})
EXIT_INTERRUPTED = 130
RECONNECTS = 30  # attempts, a second apart, to resume a stream the server dropped


class LineReader:
    """Lines typed on stdin, read without blocking the event loop (the stream and Ctrl-C go on)."""

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream
        self.buffer = b""
        self.eof = False

    async def readline(self) -> str | None:
        """The next line without its newline; None once stdin is closed."""
        while b"\n" not in self.buffer and not self.eof:
            chunk = await self._read()
            if chunk:
                self.buffer += chunk
            else:
                self.eof = True
        if not self.buffer and self.eof:
            return None
        line, _, self.buffer = self.buffer.partition(b"\n")
        return line.decode(errors="replace").rstrip("\r")

    async def _read(self) -> bytes:
        loop = asyncio.get_running_loop()
        try:
            fd = self.stream.fileno()
        except (AttributeError, OSError, ValueError):
            fd = -1
        if fd < 0:
            return await self._read_in_thread()
        ready: asyncio.Future[None] = loop.create_future()

        def readable() -> None:
            if not ready.done():
                ready.set_result(None)

        try:
            loop.add_reader(fd, readable)
        except (NotImplementedError, PermissionError, ValueError):
            return await self._read_in_thread()
        try:
            await ready
        finally:
            loop.remove_reader(fd)
        return os.read(fd, 4096)

    async def _read_in_thread(self) -> bytes:
        # not pollable (a regular file, an in-memory stream, or Windows): a thread reads a line
        return (await asyncio.to_thread(self.stream.readline)).encode()


class RunSession:
    def __init__(self, api: Api, view: RunView, reader: LineReader) -> None:
        self.api = api
        self.view = view
        self.reader = reader
        self.interrupted = asyncio.Event()
        self.answering: asyncio.Task[None] | None = None
        self.answered: set[str] = set()  # input requests answered from this terminal

    async def execute(self, body: dict[str, Any]) -> int:
        """Start, follow and settle one run; the process's exit code."""
        main = asyncio.current_task()
        loop = asyncio.get_running_loop()
        presses = 0

        def on_interrupt() -> None:
            nonlocal presses
            presses += 1
            if presses == 1:
                self.interrupted.set()
            elif main is not None:
                main.cancel()

        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(signal.SIGINT, on_interrupt)
        try:
            run = await self.api.call("POST", "/v1/runs", json=body)
            self.view.header(run, self.api.url)
            return await self._watch(run["id"])
        finally:
            with contextlib.suppress(NotImplementedError):
                loop.remove_signal_handler(signal.SIGINT)

    async def _watch(self, run_id: str) -> int:
        follower = asyncio.create_task(self._follow(run_id))
        interrupt = asyncio.create_task(self.interrupted.wait())
        try:
            await asyncio.wait({follower, interrupt}, return_when=asyncio.FIRST_COMPLETED)
            if not follower.done():
                self.view.notice("cancelling the run… (Ctrl-C again to stop waiting)")
                try:
                    await self.api.call("POST", f"/v1/runs/{run_id}/cancel")
                except ApiError as exc:
                    if exc.code != "run_finished":  # it ended first: its terminal event is on the way
                        raise
            terminal = await follower
        finally:
            for task in (follower, interrupt, self.answering):
                if task is not None and not task.done():
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
        if terminal["type"] == "run.completed":
            return 0
        if terminal["type"] == "run.cancelled" and self.interrupted.is_set():
            return EXIT_INTERRUPTED
        return 1

    async def _follow(self, run_id: str) -> dict[str, Any]:
        """Every event of the run, shown in order; returns the terminal one."""
        last = 0
        attempts = 0
        while True:
            try:
                async for sse in self.api.events(run_id, after=last):
                    if sse.event == "stream.closing":
                        stopping = not sse.data or json.loads(sse.data).get("reason") != "storage_unavailable"
                        why = "the server is stopping" if stopping else "the server cannot read its database"
                        self.view.notice(f"{why}; resuming once it is back…")
                        break
                    if sse.event == "stream.lagged" or not sse.data:
                        # httpx-sse hands a `: ping` comment over as an event without data
                        continue
                    event: dict[str, Any] = json.loads(sse.data)
                    last = event["seq"]
                    attempts = 0
                    self._show(run_id, event)
                    if event["type"] in TERMINAL:
                        return event
            except (httpx.TransportError, ServerUnreachable):
                pass
            attempts += 1
            if attempts > RECONNECTS:
                raise ServerUnreachable(self.api.url)
            await asyncio.sleep(1)

    def _show(self, run_id: str, event: dict[str, Any]) -> None:
        kind, data = event["type"], event["data"]
        asking = self.answering is not None and not self.answering.done()
        if kind == "input.requested":
            self._stop_asking()
            self.answering = asyncio.create_task(self._answer(run_id, data))
        elif kind == "input.received" and asking and data["request_id"] not in self.answered:
            self._stop_asking()
            self.view.notice(f"(answered elsewhere: {data['content']})")
        else:
            self.view.show(event)

    def _stop_asking(self) -> None:
        if self.answering is not None and not self.answering.done():
            self.answering.cancel()

    async def _answer(self, run_id: str, request: dict[str, Any]) -> None:
        self.view.input_request(request)
        self.view.prompt()
        content = await self.reader.readline()
        self.view.prompt_answered()
        if content is None:
            self.view.notice(
                f"(no terminal input to answer from: answer with POST /v1/runs/{run_id}/input, or press Ctrl-C)"
            )
            return
        self.answered.add(request["request_id"])
        try:
            await self.api.call("POST", f"/v1/runs/{run_id}/input", json=answer_body(request, content))
        except (ApiError, ServerUnreachable, httpx.TransportError) as exc:
            self.view.notice(f"the answer was not taken: {exc or type(exc).__name__}")


def answer_body(request: dict[str, Any], line: str) -> dict[str, Any]:
    """The answer to ``request`` a typed line makes: for a tool's approval, `y`/`yes` approves and
    anything else declines (its text, other than `n`/`no`, the reason); an edit needs the API."""
    body: dict[str, Any] = {"request_id": request["request_id"]}
    if request.get("kind") != "approval":
        return {**body, "content": line}
    said = line.strip()
    if said.lower() in ("y", "yes"):
        return {**body, "decision": "approve"}
    if said.lower() in ("", "n", "no"):
        return {**body, "decision": "reject"}
    return {**body, "decision": "reject", "content": said}


def _team_body(team: str) -> dict[str, Any]:
    path = Path(team)
    if path.suffix == ".json" and path.is_file():
        return {"team": json.loads(path.read_text(encoding="utf-8"))}
    return {"team_id": team}


def run(
    team: Annotated[str, typer.Argument(help="A stored team, by name or id (e.g. `demo`), or a team spec JSON file.")],
    task: Annotated[str, typer.Argument(help="What the team should do.")],
    url: UrlOption = DEFAULT_URL,
    api_key: ApiKeyOption = None,
    local: Annotated[
        bool,
        typer.Option(
            "--local", help="Run the team in this process on the embedded default (SWARM_* settings), no server."
        ),
    ] = False,
    conversation: Annotated[
        str | None, typer.Option("--conversation", "-c", help="Continue this conversation.", show_default=False)
    ] = None,
    timeout: Annotated[
        float | None, typer.Option("--timeout", help="The run's time limit in seconds.", show_default=False)
    ] = None,
) -> None:
    """Start a run and stream it live: one colour per agent, tool calls, hand-offs, questions for you.

    Ctrl-C cancels the run on the server. Exit code: 0 succeeded, 1 failed or timed out, 130 cancelled.
    """
    body: dict[str, Any] = {**_team_body(team), "task": task}
    if conversation:
        body["conversation_id"] = conversation
    if timeout:
        body["timeout_s"] = timeout
    console = Console(highlight=False)
    errors = Console(stderr=True, highlight=False)
    try:
        if local:
            from app.cli.local import LocalServer

            with LocalServer.from_environment() as server:
                if server.notice:
                    errors.print(server.notice, style="dim", markup=False)
                code = _session(server.url, api_key, body, console)
        else:
            code = _session(url, api_key, body, console)
    except (ApiError, ServerUnreachable) as exc:
        errors.print(f"error: {exc}", style="red", markup=False)
        raise typer.Exit(1) from None
    except asyncio.CancelledError:
        errors.print("stopped waiting; the run is being cancelled on the server", style="yellow")
        raise typer.Exit(EXIT_INTERRUPTED) from None
    except KeyboardInterrupt:  # where the event loop cannot take Ctrl-C itself (Windows)
        errors.print("interrupted; the run goes on on the server (cancel it with POST /v1/runs/{id}/cancel)")
        raise typer.Exit(EXIT_INTERRUPTED) from None
    raise typer.Exit(code)


def _session(url: str, api_key: str | None, body: dict[str, Any], console: Console) -> int:
    async def main() -> int:
        async with Api(url, api_key) as api:
            return await RunSession(api, RunView(console), LineReader(sys.stdin)).execute(body)

    return asyncio.run(main())
