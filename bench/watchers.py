"""The watcher client of W4 and W5: many SSE watchers of a run, held in one process.

W4 watches one streaming run with a thousand connections and W5 holds ten
thousand idle ones, on the two cores the server uses too, so this client must
cost far less per connection than the server. Each watcher is a bare
``asyncio.Protocol`` (uvloop when installed): no task, no stream reader. It
parses each frame's ``id`` and ``event`` lines and no JSON, except of the
events it must read (``input.requested``). Opening and holding 2,000 idle
watchers cost it 4.0 KiB and 0.23 ms of CPU each; ``asyncio.open_connection``
with a reader task each, 6.7 KiB and 0.25 ms; aiohttp, 15.9 KiB and 0.68 ms;
httpx, 31 KiB and 3.2 ms (docs/performance.md, section 23).

It keeps its event loop running between commands (stdin is read by the loop),
so the watchers it holds go on reading their pings while the orchestrator
measures the server. One JSON command per stdin line, one JSON answer per
stdout line, as ``bench/run.py``'s other workers: ``create``, ``attach``,
``answer``, ``finish``, ``probe``, ``release``, ``cancel``.

    watchers.py --port P
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections.abc import Callable
from typing import Any, cast

import httpx
from load import Dechunker
from servers import raise_fd_limit

TERMINAL = {b"run.completed", b"run.failed", b"run.cancelled"}
DELTA = b"message.delta"
clock = time.perf_counter


class Crowd:
    """What all watchers of a command share: counts, and one future for "every watcher is done"."""

    def __init__(self) -> None:
        self.watchers: list[Watcher] = []
        self.finished = 0
        self.all_finished: asyncio.Future[None] | None = None

    def finish(self) -> None:
        self.finished += 1
        if self.all_finished is not None and self.finished >= len(self.watchers) and not self.all_finished.done():
            self.all_finished.set_result(None)


class Watcher(asyncio.Protocol):
    """One ``GET /v1/runs/{id}/events`` connection: every run event's seq, and the arrival of each delta."""

    def __init__(self, crowd: Crowd, request: bytes, until: bytes) -> None:
        self.crowd = crowd
        self.request = request
        self.until = until  # the event type that shows the watcher is attached
        self.transport: asyncio.Transport | None = None
        self.head = b""  # the response's head, until it is whole
        self.dechunker: Dechunker | None = None
        self.pending = b""
        self.seqs: list[int] = []
        self.deltas: list[float] = []
        self.pings = 0
        self.lagged = 0
        self.terminal: str | None = None
        self.payload: dict[str, Any] | None = None  # the `until` event's envelope
        self.error: str | None = None
        self.attached: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.done = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports are not asyncio's classes
        self.transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        now = clock()
        if self.dechunker is None:
            self.head += data
            end = self.head.find(b"\r\n\r\n")
            if end < 0:
                return
            head, data = self.head[:end], self.head[end + 4 :]
            self.head = b""
            status = int(head.split(b" ", 2)[1])
            if status != 200:
                self._fail(f"http_{status}: {data[:300].decode(errors='replace')}")
                return
            self.dechunker = Dechunker()
        pending = (self.pending + self.dechunker.feed(data)).replace(b"\r\n", b"\n")
        *frames, self.pending = pending.split(b"\n\n")
        for frame in frames:
            self._frame(frame, now)

    def _frame(self, frame: bytes, now: float) -> None:
        kind = seq = payload = b""
        for line in frame.split(b"\n"):
            if line.startswith(b"id:"):
                seq = line[3:].strip()
            elif line.startswith(b"event:"):
                kind = line[6:].strip()
            elif line.startswith(b"data:"):
                payload = line[5:].strip()
        if not kind:
            self.pings += frame.startswith(b":")
            return
        if kind == b"stream.lagged":
            self.lagged += 1  # re-attached from storage: every event still comes, exactly once
            return
        if seq:
            self.seqs.append(int(seq))
        if kind == DELTA:
            self.deltas.append(now)
        elif kind == self.until and self.payload is None:
            self.payload = json.loads(payload)
            if not self.attached.done():
                self.attached.set_result(None)
        if kind in TERMINAL:
            self.terminal = kind.decode()
            self._finish()

    def _fail(self, error: str) -> None:
        if self.error is None and self.terminal is None:
            self.error = error
        if not self.attached.done():
            self.attached.set_exception(ConnectionError(self.error or error))
        self._finish()
        if self.transport is not None:
            self.transport.close()

    def _finish(self) -> None:
        if not self.done:
            self.done = True
            self.crowd.finish()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.terminal is None and not self.done:
            self._fail(f"closed before the terminal event ({exc!r})" if exc else "closed before the terminal event")


class Healthz:
    """``GET /healthz`` probes, each on a new connection (as a load balancer's): connect to last byte."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.request = f"GET /healthz HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n".encode()
        self.latencies: list[float] = []
        self.errors: list[str] = []

    async def every(self, interval_s: float, count: int | None = None) -> None:
        """A probe every ``interval_s``, ``count`` times (or until cancelled)."""
        done = 0
        while count is None or done < count:
            if done:
                await asyncio.sleep(interval_s)
            await self.once()
            done += 1

    async def once(self) -> None:
        t0 = clock()
        try:
            async with asyncio.timeout(30):
                reader, writer = await asyncio.open_connection(self.host, self.port)
                writer.write(self.request)
                body = await reader.read()
                writer.close()
            if not body.startswith(b"HTTP/1.1 200"):
                raise ConnectionError(body[:100].decode(errors="replace"))
            self.latencies.append(clock() - t0)
        except (OSError, ConnectionError, TimeoutError) as exc:
            self.errors.append(f"{type(exc).__name__}: {exc}")


class Client:
    """The commands; ``self.crowd`` holds the watchers between them."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.http = httpx.AsyncClient(base_url=f"http://{host}:{port}", timeout=60)
        self.crowd = Crowd()
        self.fd_limit = raise_fd_limit()

    async def create(self, body: dict[str, Any]) -> dict[str, Any]:
        """Start a run (``POST /v1/runs``); its id."""
        response = await self.http.post("/v1/runs", json=body)
        if response.status_code != 202:
            raise RuntimeError(f"POST /v1/runs: {response.status_code} {response.text[:300]}")
        return {"run_id": response.json()["id"]}

    async def attach(
        self, run_id: str, count: int, until: str, in_flight: int, timeout_s: float, probe_s: float = 0.0
    ) -> dict[str, Any]:
        """``count`` more watchers of the run from its first event, ``in_flight`` connecting at once,
        each counted once it has read an event of type ``until`` (it is subscribed); with ``probe_s``,
        a ``GET /healthz`` every ``probe_s`` meanwhile."""
        loop = asyncio.get_running_loop()
        request = (
            f"GET /v1/runs/{run_id}/events HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
            "Accept: text/event-stream\r\n\r\n"
        ).encode()
        todo = iter(range(count))
        errors: list[str] = []
        new: list[Watcher] = []
        cpu0, started = process_cpu_s(), clock()

        async def connect_some() -> None:
            for _ in todo:
                watcher = Watcher(self.crowd, request, until.encode())
                self.crowd.watchers.append(watcher)
                new.append(watcher)
                try:
                    await loop.create_connection(lambda w=watcher: w, self.host, self.port)  # type: ignore[misc]
                    await watcher.attached
                except (OSError, ConnectionError) as exc:
                    watcher.error = watcher.error or f"{type(exc).__name__}: {exc}"
                    watcher._finish()
                    errors.append(watcher.error)

        healthz = Healthz(self.host, self.port)
        prober = asyncio.ensure_future(healthz.every(probe_s)) if probe_s else None
        try:
            async with asyncio.timeout(timeout_s):
                await asyncio.gather(*(connect_some() for _ in range(min(in_flight, count))))
        except TimeoutError:
            errors.append(f"not all attached within {timeout_s:g} s")
        finally:
            if prober is not None:
                prober.cancel()
        attached = sum(w.payload is not None for w in new)
        first = next((w.payload for w in new if w.payload is not None), None)
        return {
            "attached": attached,
            "held": len(self.crowd.watchers),
            "attach_s": clock() - started,
            "client_cpu_s": process_cpu_s() - cpu0,
            "client_rss_kb": rss_kb(),
            "errors": len(errors),
            "error_samples": sorted(set(errors))[:5],
            "until_event": first,
            "probe_latencies_s": healthz.latencies,
            "probe_errors": healthz.errors,
        }

    async def answer(self, run_id: str, request_id: str, content: str) -> dict[str, Any]:
        """Answer the run's input request; from now on its watchers' deltas are timed."""
        self.crowd.all_finished = asyncio.get_running_loop().create_future()
        if self.crowd.finished >= len(self.crowd.watchers):
            self.crowd.all_finished.set_result(None)
        self.answered_at = clock()
        response = await self.http.post(f"/v1/runs/{run_id}/input", json={"request_id": request_id, "content": content})
        if response.status_code != 202:
            raise RuntimeError(f"POST input: {response.status_code} {response.text[:300]}")
        return {}

    async def finish(self, timeout_s: float) -> dict[str, Any]:
        """Wait for every watcher's terminal event (or its end); what each one got, its deltas'
        arrivals counted from the answer."""
        assert self.crowd.all_finished is not None, "answer first"
        try:
            async with asyncio.timeout(timeout_s):
                await self.crowd.all_finished
        except TimeoutError:
            pass
        t0 = self.answered_at
        watchers = [
            {
                "seqs": w.seqs,
                "deltas": [round(t - t0, 6) for t in w.deltas],
                "terminal": w.terminal,
                "lagged": w.lagged,
                "error": w.error or (None if w.terminal else f"no terminal event within {timeout_s:g} s"),
            }
            for w in self.crowd.watchers
        ]
        return {"watchers": watchers}

    async def probe(self, count: int, interval_s: float) -> dict[str, Any]:
        """``count`` ``GET /healthz``, ``interval_s`` apart: their latencies (s), and what the watchers
        held meanwhile got."""
        healthz = Healthz(self.host, self.port)
        pings = sum(w.pings for w in self.crowd.watchers)
        cpu0, started = process_cpu_s(), clock()
        await healthz.every(interval_s, count)
        return {
            "latencies_s": healthz.latencies,
            "errors": healthz.errors,
            "wall_s": clock() - started,
            "client_cpu_s": process_cpu_s() - cpu0,
            "pings": sum(w.pings for w in self.crowd.watchers) - pings,
            "open": sum(not w.done for w in self.crowd.watchers),
        }

    async def release(self) -> dict[str, Any]:
        """Close every watcher; how many were still open."""
        still = sum(not w.done for w in self.crowd.watchers)
        for w in self.crowd.watchers:
            w.done = True  # its end is ours, not a failure
            if w.transport is not None:
                w.transport.close()
        self.crowd = Crowd()
        await asyncio.sleep(0)
        return {"closed": still}

    async def cancel(self, run_id: str) -> dict[str, Any]:
        response = await self.http.post(f"/v1/runs/{run_id}/cancel")
        return {"status": response.status_code}


def process_cpu_s() -> float:
    t = os.times()
    return t.user + t.system


def rss_kb() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


async def serve(client: Client) -> None:
    """One command per stdin line, one answer per stdout line; the loop runs between them."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=2**20)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    out = os.fdopen(os.dup(sys.stdout.fileno()), "w", buffering=1)
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    out.write(json.dumps({"ready": True, "pid": os.getpid(), "fd_limit": client.fd_limit}) + "\n")
    while line := await reader.readline():
        if not line.strip():
            continue
        command = json.loads(line)
        name = command.pop("cmd")
        try:
            answer = await getattr(client, name)(**command)
        except Exception as exc:  # the orchestrator says what went wrong and stops
            answer = {"error": f"{name}: {type(exc).__name__}: {exc}"}
        out.write(json.dumps(answer) + "\n")
    await client.release()
    await client.http.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    factory: Callable[[], asyncio.AbstractEventLoop] | None
    try:
        import uvloop

        factory = uvloop.new_event_loop
    except ImportError:
        factory = None
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(serve(Client(args.host, args.port)))


if __name__ == "__main__":
    main()
