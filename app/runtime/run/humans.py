"""Human in the loop: the one input request a run may be waiting on, from ask to answer.

A ``user_proxy`` agent asks from inside its turn (``input_func_for``); its request event comes down
the team's stream separately, and the two meet in ``pending_for``, in either order. A swarm's hand-off
to the user is asked from the consumer loop itself (``ask_person``). Either way ``input.requested``
is out before anyone may answer, and ``input.received`` before the answer's message is stored.

A run whose team can park (``parkable``) does not wait: the input function raises ``Park`` and a
hand-off to the user ends the team's stream; the request is kept as ``parked`` and the run parks
(``RunExecution``), its ``input.requested`` written with the parked row.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from functools import partial
from typing import Any

from autogen_agentchat.agents import UserProxyAgent
from autogen_core import CancellationToken

from app.engine.factory import InputFunc
from app.runs.repository import set_run_fields
from app.runtime.inputs import NotAwaitingInput, Park, PendingInput
from app.runtime.recorder import Apply
from app.runtime.run.journal import Journal
from app.runtime.run.state import RunState, Stop


def run_status(run_id: str, status: str) -> Apply:
    """The change that sets a run's status, in its event's transaction."""
    return partial(set_run_fields, run_id=run_id, status=status)


class Humans:
    __slots__ = ("_journal", "_state", "_stop", "on_park", "parkable", "parked", "parked_kind", "pending")

    def __init__(self, state: RunState, journal: Journal, stop: Stop) -> None:
        self._state = state
        self._journal = journal
        self._stop = stop
        self.pending: PendingInput | None = None
        self.parkable = False  # the run parks when a person is needed, instead of waiting
        self.parked: PendingInput | None = None  # the request the run parks on
        self.parked_kind = "input"  # input: a user proxy's turn; handoff: a swarm's hand-off to the user
        self.on_park: Callable[[], None] | None = None  # told when the run starts to park
        stop.on_request(self._stopped)

    def park(self, pending: PendingInput, kind: str) -> None:
        """The run parks on ``pending`` (its ``input.requested`` goes out with the parked row)."""
        self.parked = pending
        self.parked_kind = kind
        if self.on_park is not None:
            self.on_park()

    def _stopped(self) -> None:
        if self.pending is not None and not self.pending.answer.done():
            self.pending.answer.cancel()

    def provide(self, request_id: str, content: str) -> None:
        if self.pending is None:
            raise NotAwaitingInput("The run is not waiting for input.")
        self.pending.provide(request_id, content)

    def pending_for(self, request_id: str, agent: str) -> PendingInput:
        """The request ``request_id`` of ``agent``: the input call and the stream's request event may
        come in either order; they meet here."""
        pending = self.pending
        if pending is None or pending.request_id != request_id:
            pending = self.pending = PendingInput(request_id, agent)
        return pending

    def input_func_for(self, agent: str) -> InputFunc:
        """What a user proxy calls for its turn."""

        async def ask(prompt: str, cancellation_token: CancellationToken | None) -> str:
            pending = self.pending_for(UserProxyAgent.InputRequestContext.request_id(), agent)
            pending.prompt = prompt or pending.prompt
            if self.parkable:
                self.park(pending, "input")
                raise Park(pending.request_id)
            return await self._answer(pending)

        return ask

    async def _answer(self, pending: PendingInput) -> str:
        try:
            async with asyncio.timeout(self._state.input_timeout_s):
                return await pending.answer
        except TimeoutError:
            self._stop.request("input_timeout")
            raise

    async def announce(self, pending: PendingInput, tags: dict[str, Any] | None = None) -> None:
        data = {"request_id": pending.request_id, "agent": pending.agent, "prompt": pending.prompt, **(tags or {})}
        await self._journal.append("input.requested", data, run_status(self._state.run_id, "awaiting_input"))
        pending.announced = True

    async def received_before(self, agent: str) -> None:
        """``agent``'s answered request is confirmed before the message its answer became is stored."""
        pending = self.pending
        if pending is not None and pending.agent == agent and pending.answer.done() and not pending.received:
            await self._confirm(pending)

    async def _confirm(self, pending: PendingInput) -> None:
        pending.received = True
        data = {"request_id": pending.request_id, "agent": pending.agent, "content": pending.answer.result()}
        await self._journal.append("input.received", data, run_status(self._state.run_id, "running"))
        self.pending = None

    async def ask_person(self, agent: str, prompt: str) -> str:
        """Ask outside any agent call (a swarm's hand-off to the user), from the consumer loop."""
        pending = self.pending = PendingInput(str(uuid.uuid4()), agent, prompt)
        await self.announce(pending)
        content = await self._answer(pending)
        await self._confirm(pending)
        return content
