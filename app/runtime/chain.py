"""Chain teams (the MultiAgentChain): steps in order; a step's branches run concurrently on one input.

Each branch is a fresh AutoGen team (a single agent, or a stored team) with
its own cancellation token, linked to the run's. Branch tasks only produce:
they put their stream items on one queue, and the run's consumer loop emits
them (tagged ``step`` and ``branch``) through the run's ``Consumer``, so events
keep one producer and seq order stays publish order. A failing branch cancels
its siblings and fails the run, unless the chain tolerates failures: then it
is reported (``branch.failed``) and the others' outputs go on.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any, Literal

from autogen_agentchat.base import TaskResult
from autogen_agentchat.messages import BaseChatMessage, TextMessage
from autogen_core import CancellationToken

from app.engine.calls import ModelCall
from app.engine.events import message_text
from app.runtime.outbox import TeamOutbox
from app.runtime.run.consumer import Consumer, RunParts
from app.runtime.run.outcome import Outcome, failed, stopped
from app.teams.schemas import ChainBranch, ResolvedTeamSpec, TeamSpec

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
    echoes: frozenset[str] = frozenset()  # an item's: its branch's task message, not stored again


class ChainRunner:
    def __init__(self, parts: RunParts, consumer: Consumer) -> None:
        self.parts = parts
        self.consumer = consumer
        self.spec = parts.state.spec
        self.agents = frozenset(
            [m.name for m in self.spec.members] + [m.name for sub in self.spec.subteams.values() for m in sub.members]
        )

    async def run(self) -> Outcome:
        p = self.parts
        asked = p.state.task
        await p.messages.store(TextMessage(content=asked, source="user"))
        steps = self.spec.steps or []
        text = asked
        for number, step in enumerate(steps, 1):
            task = step.template.format(input=text, task=asked)
            outcome = await self._step(number, step.branches, task)
            if not isinstance(outcome, dict):
                return outcome
            text = outcome[step.branches[0].label] if len(outcome) == 1 else _combine(outcome)
        if self.spec.synthesizer is not None:
            task = f"{asked}\n\nThe work so far:\n\n{text}"
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
        p = self.parts
        await p.journal.append("step.started", {"step": number, "branches": [b.label for b in branches]})
        running = [self._branch(b) for b in branches]
        for b in running:
            p.stop.token.add_callback(b.token.cancel)
        queue: asyncio.Queue[_Message] = asyncio.Queue(QUEUE_SIZE)
        tasks = [
            asyncio.create_task(self._work(number, b, task, queue), name=f"chain:{p.state.run_id}:{b.label}")
            for b in running
        ]
        outputs: dict[str, str] = {}
        failed_: dict[str, tuple[str, str]] = {}
        first_failure: tuple[str, str, str] | None = None
        try:
            left = len(tasks)
            while left:
                message = await queue.get()
                if message.kind == "item":
                    tags = {"step": number, "branch": message.label}
                    await self.consumer.take(message.payload, tags, self.agents, message.echoes)
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
                failed_[message.label] = (code, text)
                if self.spec.tolerate_failures and len(running) > 1:
                    error = {"code": code, "message": text}
                    await p.journal.append("branch.failed", {"step": number, "branch": message.label, "error": error})
                elif first_failure is None:
                    first_failure = (message.label, code, text)
                    for b in running:
                        b.token.cancel()
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        if p.stop.reason is not None:
            return stopped(p.state, p.stop.reason)
        if (outcome := _step_failure(number, outputs, failed_, first_failure)) is not None:
            return outcome
        await p.journal.append("step.completed", {"step": number, "outputs": outputs})
        return outputs

    async def _work(self, number: int, branch: _Branch, task: str, queue: asyncio.Queue[_Message]) -> None:
        """A branch's team, run to its end: its items, then its answer (or how it failed), on ``queue``."""
        p = self.parts

        def observe(call: ModelCall) -> None:
            p.ledger.observe(call)
            if call.error_code is not None and call.error_code != "cancelled":
                branch.failure = call

        # a chunk skips the queues only when this branch's earlier items are all handled by _step
        outbox = TeamOutbox(self.agents, {"step": number, "branch": branch.label})
        # each branch puts out its task again; the run's task is stored once
        asked = TextMessage(content=task, source="user")
        echoes = frozenset({asked.id})
        try:
            team = self.consumer.build_team(branch.spec, outbox, observe)
            output = ""
            async for item in team.run_stream(task=asked, cancellation_token=branch.token):
                if isinstance(item, TaskResult):
                    replies = [m for m in item.messages if isinstance(m, BaseChatMessage) and m.source != "user"]
                    output = message_text(replies[-1]) if replies else ""
                else:
                    await queue.put(_Message("item", branch.label, item, outbox, echoes))
            outbox.reset()
            await queue.put(_Message("done", branch.label, output))
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise
            await queue.put(_Message("failed", branch.label, ("cancelled", "cancelled")))
        except Exception as exc:
            outcome = failed(exc, branch.failure, p.deps.settings.secret_values())
            await queue.put(_Message("failed", branch.label, (outcome.error_code, outcome.error_message)))


def _step_failure(
    number: int, outputs: dict[str, str], failed: dict[str, tuple[str, str]], first: tuple[str, str, str] | None
) -> Outcome | None:
    """A step fails with its first failing branch (or, tolerating failures, when no branch answered)."""
    if first is None and failed and not outputs:
        first = next((label, *error) for label, error in failed.items())
    if first is not None:
        label, code, text = first
        return Outcome("failed", error_code=code, error_message=f"Step {number}, branch '{label}': {text}")
    if not outputs:
        return Outcome("failed", error_code="model_error", error_message="No branch answered.")
    return None


def _combine(outputs: dict[str, str]) -> str:
    return "\n\n".join(f"[{label}]\n{text}" for label, text in outputs.items())
