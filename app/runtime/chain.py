"""Chain teams (the MultiAgentChain): steps in order; a step's branches run concurrently on one input.

Each branch is a fresh AutoGen team (a single agent, or a stored team) with
its own cancellation token, linked to the run's. Branch tasks only produce:
they put their stream items on one queue, and the run's consumer loop emits
them (tagged ``step`` and ``branch``), so events keep one producer and seq
order stays publish order. A failing branch cancels its siblings and fails
the run, unless the chain tolerates failures: then it is reported
(``branch.failed``) and the others' outputs go on.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from autogen_agentchat.base import TaskResult
from autogen_agentchat.messages import BaseChatMessage, ModelClientStreamingChunkEvent, TextMessage
from autogen_core import CancellationToken

from app.engine.calls import ModelCall
from app.engine.events import is_stored_message, message_text
from app.engine.tools import ToolContext
from app.runtime.outbox import TeamOutbox
from app.teams.schemas import ChainBranch, ResolvedTeamSpec, TeamSpec

if TYPE_CHECKING:
    from app.runtime.execution import Outcome, RunExecution

QUEUE_SIZE = 1024


@dataclass(slots=True)
class _Branch:
    label: str
    spec: ResolvedTeamSpec
    token: CancellationToken = field(default_factory=CancellationToken)
    failure: ModelCall | None = None


@dataclass(frozen=True, slots=True)
class _Message:
    kind: Literal["item", "done", "failed"]
    label: str
    payload: Any
    outbox: TeamOutbox | None = None  # an item's: told once the item is handled


class ChainRunner:
    def __init__(self, execution: RunExecution) -> None:
        self.x = execution
        self.spec = execution.spec
        self.agents = frozenset(
            [m.name for m in self.spec.members] + [m.name for sub in self.spec.subteams.values() for m in sub.members]
        )

    async def run(self) -> Outcome:
        from app.runtime.execution import Outcome

        x = self.x
        await x._store_message(TextMessage(content=x.task_text, source="user"))
        steps = self.spec.steps or []
        text = x.task_text
        for number, step in enumerate(steps, 1):
            task = step.template.format(input=text, task=x.task_text)
            outcome = await self._step(number, step.branches, task)
            if not isinstance(outcome, dict):
                return outcome
            text = outcome[step.branches[0].label] if len(outcome) == 1 else _combine(outcome)
        if self.spec.synthesizer is not None:
            task = f"{x.task_text}\n\nThe work so far:\n\n{text}"
            outcome = await self._step(len(steps) + 1, [ChainBranch(agent=self.spec.synthesizer)], task)
            if not isinstance(outcome, dict):
                return outcome
        count = len(steps) + (1 if self.spec.synthesizer else 0)
        return Outcome("succeeded", stop_reason=f"The chain completed its {count} steps.")

    def _branch(self, branch: ChainBranch) -> _Branch:
        if branch.team is not None:
            return _Branch(branch.label, self.spec.subteams[branch.team])
        member = next(m for m in self.spec.members if m.name == branch.agent)
        single = TeamSpec(name=member.name, kind="single", members=[member.name])
        return _Branch(branch.label, ResolvedTeamSpec.model_validate({**single.model_dump(), "members": [member]}))

    async def _step(self, number: int, branches: list[ChainBranch], task: str) -> dict[str, str] | Outcome:
        from app.runtime.execution import Outcome, classify_error

        x = self.x
        await x._emit("step.started", {"step": number, "branches": [b.label for b in branches]})
        running = [self._branch(b) for b in branches]
        for b in running:
            x.token.add_callback(b.token.cancel)
        queue: asyncio.Queue[_Message] = asyncio.Queue(QUEUE_SIZE)
        tasks = [
            asyncio.create_task(self._work(number, b, task, queue), name=f"chain:{x.run_id}:{b.label}") for b in running
        ]
        outputs: dict[str, str] = {}
        failed: dict[str, tuple[str, str]] = {}
        first_failure: tuple[str, str, str] | None = None
        try:
            left = len(tasks)
            while left:
                message = await queue.get()
                if message.kind == "item":
                    await self._emit_item(number, message.label, message.payload)
                    assert message.outbox is not None
                    message.outbox.handled()
                    continue
                left -= 1
                if message.kind == "done":
                    outputs[message.label] = message.payload
                    continue
                code, text = message.payload
                if code == "cancelled":
                    continue  # a sibling stopped because of another branch's failure
                failed[message.label] = (code, text)
                if self.spec.tolerate_failures and len(running) > 1:
                    await x._emit(
                        "branch.failed",
                        {"step": number, "branch": message.label, "error": {"code": code, "message": text}},
                    )
                elif first_failure is None:
                    first_failure = (message.label, code, text)
                    for b in running:
                        b.token.cancel()
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        if x.cancel_reason is not None:
            return x._stopped_outcome()
        if first_failure is None and failed and not outputs:
            first_failure = next((label, *error) for label, error in failed.items())
        if first_failure is not None:
            label, code, text = first_failure
            return Outcome("failed", error_code=code, error_message=f"Step {number}, branch '{label}': {text}")
        if not outputs:
            return Outcome("failed", error_code=classify_error(RuntimeError()), error_message="No branch answered.")
        await x._emit("step.completed", {"step": number, "outputs": outputs})
        return outputs

    async def _work(self, number: int, branch: _Branch, task: str, queue: asyncio.Queue[_Message]) -> None:
        from app.runtime.execution import classify_error, public_error_text

        x = self.x

        def observe(call: ModelCall) -> None:
            x._observe_call(call)
            if call.error_code is not None and call.error_code != "cancelled":
                branch.failure = call

        # a chunk skips the queues only when this branch's earlier items are all handled by _step
        outbox = TeamOutbox(self.agents, {"step": number, "branch": branch.label})
        try:
            team = x.deps.factory.build_team(
                branch.spec,
                inputs=x.input_func_for,
                observer=observe,
                tools=ToolContext(x.run_id, x.conversation_id, x.principal_id, x.deps.read_sessionmaker),
                sinks=lambda agent: x.sink_for(agent, outbox),
            )
            outbox.attach(team)
            output = ""
            async for item in team.run_stream(task=task, cancellation_token=branch.token):
                if isinstance(item, TaskResult):
                    replies = [m for m in item.messages if isinstance(m, BaseChatMessage) and m.source != "user"]
                    output = message_text(replies[-1]) if replies else ""
                else:
                    await queue.put(_Message("item", branch.label, item, outbox))
            outbox.reset()
            await queue.put(_Message("done", branch.label, output))
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise
            await queue.put(_Message("failed", branch.label, ("cancelled", "cancelled")))
        except Exception as exc:
            failure = branch.failure
            error: tuple[str, str]
            if failure is not None and failure.error_code is not None:
                error = (failure.error_code, failure.error_message or failure.error_code)
            else:
                error = (classify_error(exc), public_error_text(exc))
            await queue.put(_Message("failed", branch.label, error))

    async def _emit_item(self, number: int, label: str, item: object) -> None:
        x = self.x
        tags = {"step": number, "branch": label}
        if isinstance(item, ModelClientStreamingChunkEvent):
            x.streamed_chunk(item, tags, self.agents)
        elif is_stored_message(item):
            assert isinstance(item, BaseChatMessage)
            if item.source != "user":  # each branch echoes its task; the run's task is stored once
                await x._store_message(item, tags)
        else:
            await x.handle_event(item, tags, self.agents)


def _combine(outputs: dict[str, str]) -> str:
    return "\n\n".join(f"[{label}]\n{text}" for label, text in outputs.items())
