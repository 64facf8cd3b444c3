"""Human in the loop: the one input request a run may be waiting on, from ask to answer.

A ``user_proxy`` agent asks from inside its turn (``input_func_for``); its request event comes down
the team's stream separately, and the two meet in ``pending_for``, in either order. A swarm's hand-off
to the user is asked from the consumer loop itself (``ask_person``). Either way ``input.requested``
is out before anyone may answer, and ``input.received`` before the answer's message is stored.

A run whose team can park (``parkable``) does not wait: the input function raises ``Park`` and a
hand-off to the user ends the team's stream; the request is kept as ``parked`` and the run parks
(``RunExecution``), its ``input.requested`` written with the parked row.

A tool's call that needs approval asks from inside the call (``approve``, the run's ``ApprovalGate``),
and waits live whatever the team (approvals do not park yet). Its request and the answer reach the
consumer loop as events of the run's own on the team's output queue (``ApprovalAsked``,
``ApprovalAnswered``), after the call's ``tool.call``, so the log keeps stream order; the decision is
stored as a message by `user` (``ToolApprovalMessage``). One request is asked at a time.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Iterable
from functools import partial
from typing import Any, TypeVar

from autogen_agentchat.agents import UserProxyAgent
from autogen_agentchat.messages import BaseAgentEvent
from autogen_core import CancellationToken
from pydantic import ConfigDict

from app.engine.approvals import ApprovalGate, ApprovalRequest, ToolApprovalMessage, ToolDecision
from app.engine.factory import InputFunc
from app.runs.answers import approval_received, approval_requested
from app.runs.repository import set_run_fields
from app.runtime.inputs import NotAwaitingInput, Park, PendingApproval, PendingInput
from app.runtime.outbox import TeamOutbox
from app.runtime.recorder import Apply
from app.runtime.run.journal import Journal
from app.runtime.run.state import RunState, Stop

T = TypeVar("T")


def run_status(run_id: str, status: str) -> Apply:
    """The change that sets a run's status, in its event's transaction."""
    return partial(set_run_fields, run_id=run_id, status=status)


class ApprovalAsked(BaseAgentEvent):
    """On the team's output queue: a call asks the person (the consumer loop writes ``input.requested``)."""

    model_config = ConfigDict(arbitrary_types_allowed=True)
    pending: PendingApproval

    def to_text(self) -> str:
        return self.pending.prompt


class ApprovalAnswered(BaseAgentEvent):
    """On the team's output queue: the person decided (``input.received``, then the decision's message)."""

    model_config = ConfigDict(arbitrary_types_allowed=True)
    pending: PendingApproval

    def to_text(self) -> str:
        return self.pending.prompt


class SeenCalls:
    """The tool calls whose ``tool.call`` the consumer loop has written (the last ``KEEP``), so that a call's
    approval request is written after it: the two meet here, in either order."""

    KEEP = 256
    __slots__ = ("_seen",)

    def __init__(self) -> None:
        self._seen: dict[str, asyncio.Future[None]] = {}

    def _future(self, call_id: str) -> asyncio.Future[None]:
        seen = self._seen.get(call_id)
        if seen is None:
            seen = self._seen[call_id] = asyncio.get_running_loop().create_future()
        return seen

    def handled(self, call_ids: Iterable[str]) -> None:
        for call_id in call_ids:
            seen = self._future(call_id)
            if not seen.done():
                seen.set_result(None)
        while len(self._seen) > self.KEEP:  # the oldest written ones; a call still waiting is kept
            oldest = next((k for k, f in self._seen.items() if f.done()), None)
            if oldest is None:
                break
            del self._seen[oldest]

    async def written(self, call_id: str) -> None:
        await self._future(call_id)


class Humans:
    __slots__ = (
        "_approving",
        "_journal",
        "_state",
        "_stop",
        "approvals_park",
        "calls",
        "decided",
        "on_park",
        "parkable",
        "parked",
        "parked_kind",
        "pending",
    )

    def __init__(self, state: RunState, journal: Journal, stop: Stop) -> None:
        self._state = state
        self._journal = journal
        self._stop = stop
        self.pending: PendingInput | PendingApproval | None = None
        self.calls = SeenCalls()  # the consumer loop tells it each tool call it has written
        self._approving = asyncio.Lock()  # one approval request at a time
        self.parkable = False  # the run parks when a person is needed, instead of waiting
        self.parked: PendingInput | PendingApproval | None = None  # the request the run parks on
        # input: a user proxy's turn; handoff: a swarm's hand-off to the user; approval: a tool's call
        self.parked_kind = "input"
        # a tool's call may park the run now: its team has the state from before the turn (``RunExecution``)
        self.approvals_park = False
        self.decided: dict[str, ToolDecision] = {}  # a parked approval's decision, by call id, for its resume
        self.on_park: Callable[[], None] | None = None  # told when the run starts to park
        stop.on_request(self._stopped)

    def park(self, pending: PendingInput | PendingApproval, kind: str) -> None:
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
        if not isinstance(pending, PendingInput) or pending.request_id != request_id:
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
            return await self._answer(pending.answer)

        return ask

    async def _answer(self, answer: asyncio.Future[T]) -> T:
        try:
            async with asyncio.timeout(self._state.input_timeout_s):
                return await answer
        except TimeoutError:
            self._stop.request("input_timeout")
            raise

    async def announce(self, pending: PendingInput | PendingApproval, tags: dict[str, Any] | None = None) -> None:
        data = {"request_id": pending.request_id, "agent": pending.agent, "prompt": pending.prompt}
        data.update(approval_requested(pending.call) if isinstance(pending, PendingApproval) else {"kind": "input"})
        data.update(tags or {})
        await self._journal.append("input.requested", data, run_status(self._state.run_id, "awaiting_input"))
        pending.announced = True

    async def received_before(self, agent: str) -> None:
        """``agent``'s answered request is confirmed before the message its answer became is stored."""
        pending = self.pending
        if (
            isinstance(pending, PendingInput)
            and pending.agent == agent
            and pending.answer.done()
            and not pending.received
        ):
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
        content = await self._answer(pending.answer)
        await self._confirm(pending)
        return content

    # -- tool approval -----------------------------------------------------------------------------

    def approvals_for(self, outbox: TeamOutbox) -> ApprovalGate:
        """The approval gate of a team's tools: its requests go out through the team's ``outbox``."""

        async def ask(request: ApprovalRequest) -> ToolDecision:
            return await self.approve(request, outbox)

        return ask

    async def approve(self, request: ApprovalRequest, outbox: TeamOutbox) -> ToolDecision:
        """Ask the person about a tool's call, from inside the call, and wait live for their decision."""
        if request.call_id is not None and (decided := self.decided.pop(request.call_id, None)) is not None:
            return decided  # the run parked on this call, and resumed with the decision
        async with self._approving:
            if request.call_id is not None:
                await self.calls.written(request.call_id)  # its `tool.call` first
            if self.approvals_park and self.parked is None:
                # the run parks instead: the team is stopped, and rebuilt with the answer from the state
                # before this turn, the turn played again from the log up to this call (``RunExecution``)
                self.park(PendingApproval(str(uuid.uuid4()), request), "approval")
                self._stop.token.cancel()
                await asyncio.get_running_loop().create_future()  # cancelled with the team
            pending = self.pending = PendingApproval(str(uuid.uuid4()), request)
            outbox.put_event(ApprovalAsked(source=request.agent, pending=pending))
            decision = await self._answer(pending.answer)
            outbox.put_event(ApprovalAnswered(source=request.agent, pending=pending))
            return decision

    async def approval_received(self, pending: PendingApproval, tags: dict[str, Any] | None) -> ToolApprovalMessage:
        """``input.received`` for a decision; the message that keeps it in the history, to store next."""
        pending.received = True
        call, decision = pending.call, pending.answer.result()
        answer = approval_received(decision, call.tool, call.arguments)
        data = {"request_id": pending.request_id, "agent": call.agent, **answer, **(tags or {})}
        await self._journal.append("input.received", data, run_status(self._state.run_id, "running"))
        if self.pending is pending:
            self.pending = None
        return ToolApprovalMessage(
            source="user",
            content=answer["content"],
            tool=call.tool,
            call_id=call.call_id,
            decision=decision.decision,
            arguments=decision.arguments,
        )
