"""Turns a resolved team spec into fresh AutoGen objects, one set per run.

AutoGen objects are bound to the event loop they first run on and carry
conversation context, so nothing built here is ever shared between runs.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from autogen_agentchat.agents import AssistantAgent, UserProxyAgent
from autogen_agentchat.base import ChatAgent, Team, TerminatedException, TerminationCondition
from autogen_agentchat.conditions import (
    HandoffTermination,
    MaxMessageTermination,
    TextMentionTermination,
    TimeoutTermination,
    TokenUsageTermination,
)
from autogen_agentchat.messages import BaseAgentEvent, BaseChatMessage, StopMessage
from autogen_agentchat.teams import BaseGroupChat, GraphFlow, RoundRobinGroupChat, SelectorGroupChat, Swarm
from autogen_core import CancellationToken
from autogen_core.models import ChatCompletionClient
from autogen_core.tools import BaseTool

from app.engine.calls import CallPolicy, GuardedModelClient, ModelCall, Observer, TextSink
from app.engine.graphs import build_graph
from app.engine.pins import ReplyPins
from app.engine.providers import ModelRegistry
from app.engine.specs import MemberSpec, ModelOptionsSpec, TeamBuildSpec
from app.engine.tools import ToolContext, ToolRegistry
from app.patches.autogen_token_usage import set_token_counts

# what a user proxy calls for its turn: (agent name) -> async (prompt, cancellation token) -> answer
InputFunc = Callable[[str, CancellationToken | None], Awaitable[str]]
InputProvider = Callable[[str], InputFunc]
# (agent name) -> where that agent's streamed text goes on the fast token path
SinkProvider = Callable[[str], TextSink]


def default_agent_description(name: str) -> str:
    """What AutoGen is told about an assistant whose spec has no description (selectors read it)."""
    return f"The {name} agent."


def default_person_description(name: str) -> str:
    """What AutoGen is told about a user proxy whose spec has no description."""
    return f"{name}, a person."


def hands_off_to_user(spec: TeamBuildSpec) -> bool:
    return spec.kind == "swarm" and any("user" in m.handoffs for m in spec.members)


@dataclass(frozen=True, slots=True)
class SelectorCap:
    """A selector's model settings: a cap on its reply, which is a name, and nothing else."""

    max_tokens: int
    temperature: None = None
    script: None = None


class UsageMeter:
    """What a team's model calls billed so far: every agent's, the selector's, tool-calling ones."""

    __slots__ = ("completion", "prompt")

    def __init__(self, prompt: int = 0, completion: int = 0) -> None:
        self.prompt = prompt  # seeded with what the run billed before its team was (re)built
        self.completion = completion

    def add(self, call: ModelCall) -> None:
        self.prompt += call.prompt_tokens
        self.completion += call.completion_tokens


class BilledTokenBudget(TokenUsageTermination):
    """``token_budget``, counted on what the team's model calls billed (``UsageMeter``).

    AutoGen's ``TokenUsageTermination`` adds up the usage its messages carry, which leaves out a
    selector's calls. The count covers the whole run: a swarm that asks a person and goes on keeps
    counting. It is configured, and dumped, as AutoGen's.
    """

    def __init__(self, budget: int, meter: UsageMeter) -> None:
        super().__init__(max_total_token=budget)
        self._meter = meter

    async def __call__(self, messages: Sequence[BaseAgentEvent | BaseChatMessage]) -> StopMessage | None:
        if self.terminated:
            raise TerminatedException("Termination condition has already been reached")
        meter = self._meter
        set_token_counts(self, meter.prompt, meter.completion)
        if self.terminated:
            billed = meter.prompt + meter.completion
            content = f"Token budget reached: {billed} tokens billed by the run's model calls."
            return StopMessage(content=content, source="TokenUsageTermination")
        return None

    async def reset(self) -> None:
        return None  # the budget is the run's


@dataclass(frozen=True, slots=True)
class Carry:
    """What a run used before its team was (re)built; the team's termination goes on from there.

    AutoGen's conditions keep nothing in ``save_state()``, so a parked run's team, built again from the
    frozen spec, would count from 0. Give ``build_team`` what the run's earlier teams used:

    - ``messages``: the chat messages (``BaseChatMessage``; events such as tool calls are not counted)
      delivered to the run's condition in its earlier ``run_stream`` calls: every task message (the
      run's task, the history replayed with it, each answer a person gave as a resumed task) and every
      chat message an agent or a person put out. From storage: this run's own chat messages (its task
      first; not those of the conversation's earlier runs), plus the ``history_len`` of the run's first
      build when it replayed history; pass that same ``history_len`` again, as the limit includes it.
    - ``elapsed_s``: the time the team ran in those calls (for ``termination.timeout_s``); a wait for a
      person between two calls is not counted, as ``RunTimeout`` does not count it within one team.
    - ``prompt_tokens``, ``completion_tokens``: what the run's model calls billed (for ``token_budget``):
      they seed the team's ``UsageMeter``.
    """

    messages: int = 0
    elapsed_s: float = 0.0
    prompt_tokens: int = 0
    completion_tokens: int = 0


class RunMaxMessages(MaxMessageTermination):
    """``max_messages`` over the whole run: AutoGen's reset at each stop is ignored, and a team built
    again starts from the run's count (``Carry.messages``). Configured, and dumped, as AutoGen's."""

    def __init__(self, max_messages: int, used: int = 0) -> None:
        super().__init__(max_messages)
        # a count at the limit would fail the first check (already reached); one short stops at the next message
        self._message_count = max(0, min(used, max_messages - 1))

    async def reset(self) -> None:
        return None


class RunTextMention(TextMentionTermination):
    """``text_mention``: once a message mentioned it, the run is over, whatever AutoGen resets."""

    async def reset(self) -> None:
        return None


class RunTokenUsage(TokenUsageTermination):
    """``token_budget`` counted on the usage its messages carry (a team built without a meter), over the
    whole run; it cannot be given a ``Carry``'s tokens, which reach the budget through the meter."""

    async def reset(self) -> None:
        return None


class RunTimeout(TimeoutTermination):
    """``timeout_s`` on the time the team runs, across its stops: AutoGen's reset at each stop pauses the
    clock, the next check (the next ``run_stream``'s task) starts it again, so a wait for a person is not
    counted. ``spent`` is the time the run's earlier teams ran (``Carry.elapsed_s``). Dumped as AutoGen's,
    with the whole timeout."""

    def __init__(self, timeout_seconds: float, spent: float = 0.0, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(timeout_seconds)
        self._clock = clock
        self._spent = max(0.0, spent)
        self._start_time = clock()
        self._running = True

    @property
    def remaining(self) -> float:
        """Seconds left; 0 or less once due."""
        running = self._clock() - self._start_time if self._running else 0.0
        return self._timeout_seconds - self._spent - running

    async def __call__(self, messages: Sequence[BaseAgentEvent | BaseChatMessage]) -> StopMessage | None:
        if self._terminated:
            raise TerminatedException("Termination condition has already been reached")
        if not self._running:
            self._start_time, self._running = self._clock(), True
        if self.remaining <= 0:
            self._terminated = True
            return StopMessage(
                content=f"Timeout of {self._timeout_seconds} seconds reached", source="TimeoutTermination"
            )
        return None

    async def reset(self) -> None:
        if self._running:
            self._spent += self._clock() - self._start_time
            self._running = False


STEP_SOURCE = "Step"


class Stepped(TerminationCondition):
    """The run's termination (``real``), and a stop after every agent turn besides: step mode.

    A team that stops after each turn can be saved between two turns, when its state is consistent
    (AutoGen warns that a running team's is not), and go on with ``run_stream()`` and no task. The run
    keeps that state as its checkpoint, so a crash costs the turn it interrupted (``RunExecution``).
    A step stops only when ``real`` does not: a stop that ``real`` made is the run's own. The check of
    a task's messages is not a turn: the caller says one is coming with ``expect_task``.
    """

    def __init__(self, real: TerminationCondition) -> None:
        self.real = real
        self.stepped = False  # the last stop was a step (not the run's end)
        self._task_next = False

    def expect_task(self, task: bool) -> None:
        """Before each ``run_stream``: whether it is given a task (whose check is not a turn)."""
        self._task_next = task
        self.stepped = False

    @property
    def terminated(self) -> bool:
        return self.real.terminated

    async def __call__(self, messages: Sequence[BaseAgentEvent | BaseChatMessage]) -> StopMessage | None:
        stop = await self.real(messages)
        if stop is not None:
            return stop
        if self._task_next:
            self._task_next = False
            return None
        if any(isinstance(m, BaseChatMessage) for m in messages):
            self.stepped = True
            return StopMessage(content="A turn ended.", source=STEP_SOURCE)
        return None

    async def reset(self) -> None:
        await self.real.reset()


def stepped(team: BaseGroupChat) -> Stepped | None:
    """The team's step condition, when it was built to step."""
    condition = getattr(team, "_termination_condition", None)  # where AutoGen 0.7.5 keeps it
    return condition if isinstance(condition, Stepped) else None


def limit_reached(team: BaseGroupChat) -> bool:
    """After a stop: whether it met a limit of the run, and not only a hand-off to ``user``.

    AutoGen's reset at the stop leaves such a limit met (only ``HandoffTermination`` resets), and a team
    whose condition is met stops any further ``run_stream`` at once ("The group chat has already
    terminated."), without putting out its task. So a hand-off to ``user`` that came with a limit ends
    the run: do not ask the person.
    """
    condition = getattr(team, "_termination_condition", None)  # where AutoGen 0.7.5 keeps it
    return isinstance(condition, TerminationCondition) and condition.terminated


def team_signature(spec: TeamBuildSpec) -> str:
    """Identifies the shape of a team whose saved state another team can load."""
    shape = ",".join(m.name for m in spec.members)
    if spec.edges:
        shape += ";" + ",".join(f"{e.source}>{e.target}" for e in spec.edges)
    return f"{spec.kind}:{hashlib.sha256(shape.encode()).hexdigest()[:40]}"


class TeamFactory:
    def __init__(
        self,
        models: ModelRegistry,
        tools: ToolRegistry,
        *,
        default_max_messages: int,
        policy: CallPolicy,
        fast_tokens: bool = True,
        selector_max_tokens: int | None = None,
    ) -> None:
        self.models = models
        self.tools = tools
        self.default_max_messages = default_max_messages
        self.policy = policy
        self.fast_tokens = fast_tokens
        self.selector_max_tokens = selector_max_tokens

    def client(
        self,
        model: str | None,
        options: ModelOptionsSpec | None,
        *,
        agent: str,
        streaming: bool,
        observer: Observer | None,
        sink: TextSink | None = None,
        pins: ReplyPins | None = None,
    ) -> ChatCompletionClient:
        ref = self.models.parse(model)
        # the lean stream reads the provider's events itself; with fast_tokens off everything is AutoGen's stock path
        inner = self.models.build(ref, options, streaming=streaming, lean=self.fast_tokens)
        return GuardedModelClient(
            inner, self.policy, agent=agent, model=str(ref), observer=observer, sink=sink, pins=pins
        )

    def build_agent(
        self,
        spec: MemberSpec,
        *,
        swarm: bool,
        inputs: InputProvider | None,
        observer: Observer | None = None,
        tools: ToolContext | None = None,
        sinks: SinkProvider | None = None,
        pins: ReplyPins | None = None,
    ) -> ChatAgent:
        if spec.kind == "user_proxy":
            if inputs is None:
                raise ValueError(f"'{spec.name}' needs a person's input, which this run cannot ask for")
            return UserProxyAgent(
                spec.name,
                description=spec.description or default_person_description(spec.name),
                input_func=inputs(spec.name),
            )
        # on the fast path the agent does not stream: its client streams for it, into the sink
        sink = sinks(spec.name) if spec.streaming and self.fast_tokens and sinks is not None else None
        client = self.client(
            spec.model,
            spec.model_options,
            agent=spec.name,
            streaming=spec.streaming,
            observer=observer,
            sink=sink,
            pins=pins,
        )
        kwargs: dict[str, object] = {}
        if spec.system_message is not None:
            kwargs["system_message"] = spec.system_message
        return AssistantAgent(
            name=spec.name,
            model_client=client,
            description=spec.description or default_agent_description(spec.name),
            tools=self._tools_of(spec, tools) if spec.tools and tools else None,
            handoffs=list(spec.handoffs) if swarm and spec.handoffs else None,
            model_client_stream=spec.streaming and sink is None,
            reflect_on_tool_use=spec.reflect_on_tool_use,
            max_tool_iterations=spec.max_tool_iterations,
            **kwargs,  # type: ignore[arg-type]
        )

    def _tools_of(
        self, spec: MemberSpec, ctx: ToolContext
    ) -> list[BaseTool[Any, Any] | Callable[..., Any] | Callable[..., Awaitable[Any]]]:
        """The agent's tools for the run of ``ctx``: those it names in ``approve_tools`` ask first."""
        approve = set(spec.approve_tools)
        return [self.tools.build(name, ctx, agent=spec.name, approve=name in approve) for name in spec.tools]

    def termination(
        self,
        spec: TeamBuildSpec,
        history_len: int = 0,
        meter: UsageMeter | None = None,
        *,
        carry: Carry | None = None,
    ) -> TerminationCondition:
        """The run's termination, going on from ``carry`` (see ``Carry``; ``meter`` is seeded by the caller).

        Every condition but ``HandoffTermination`` counts over the whole run, across the team's stops."""
        # messages replayed as context arrive with the task and count towards MaxMessageTermination
        used = carry or Carry()
        t = spec.termination
        conditions: list[TerminationCondition] = []
        if spec.kind == "single":
            conditions.append(RunMaxMessages(2 + history_len, used.messages))
        if t.max_messages is not None:
            conditions.append(RunMaxMessages(t.max_messages + history_len, used.messages))
        if t.text_mention is not None:
            conditions.append(RunTextMention(t.text_mention))
        if t.timeout_s is not None:
            conditions.append(RunTimeout(t.timeout_s, used.elapsed_s))
        if t.token_budget is not None:
            budget = BilledTokenBudget(t.token_budget, meter) if meter is not None else None
            conditions.append(budget or RunTokenUsage(max_total_token=t.token_budget))
        if hands_off_to_user(spec):
            conditions.append(HandoffTermination(target="user"))
        if not conditions:
            conditions.append(RunMaxMessages(self.default_max_messages + history_len, used.messages))
        combined = conditions[0]
        for c in conditions[1:]:
            combined = combined | c
        return combined

    def build_team(
        self,
        spec: TeamBuildSpec,
        *,
        history_len: int = 0,
        carry: Carry | None = None,
        inputs: InputProvider | None = None,
        observer: Observer | None = None,
        tools: ToolContext | None = None,
        sinks: SinkProvider | None = None,
        step: bool = False,
        pins: ReplyPins | None = None,
    ) -> BaseGroupChat:
        """A fresh team for ``spec``. ``step``: it stops after every turn (``Stepped``); ``pins``: replies
        its agents' model clients give back instead of calling (a resumed turn's, ``app/engine/pins.py``)."""
        swarm = spec.kind == "swarm"
        meter: UsageMeter | None = None
        if spec.termination.token_budget is not None:
            meter = UsageMeter(carry.prompt_tokens, carry.completion_tokens) if carry else UsageMeter()
            observer = _metered(observer, meter)
        agents: list[ChatAgent | Team] = [
            self.build_agent(m, swarm=swarm, inputs=inputs, observer=observer, tools=tools, sinks=sinks, pins=pins)
            for m in spec.members
        ]
        termination = self.termination(spec, history_len, meter, carry=carry)
        if step:
            termination = Stepped(termination)
        if spec.kind == "selector":
            # the selector answers with a name: a cap keeps a chatty model from spending hundreds of tokens on it
            cap = SelectorCap(self.selector_max_tokens) if self.selector_max_tokens else None
            selector = self.client(
                spec.selector_model, cap, agent="selector", streaming=False, observer=observer, pins=pins
            )
            extra: dict[str, object] = {}
            if spec.selector_prompt:
                extra["selector_prompt"] = spec.selector_prompt
            return SelectorGroupChat(
                agents,
                model_client=selector,
                termination_condition=termination,
                allow_repeated_speaker=spec.allow_repeated_speaker,
                emit_team_events=True,
                **extra,  # type: ignore[arg-type]
            )
        if spec.kind == "graph":
            participants, graph = build_graph(spec, [a for a in agents if isinstance(a, ChatAgent)])
            return GraphFlow(participants, graph, termination_condition=termination)  # type: ignore[return-value]
        if swarm:
            return Swarm([a for a in agents if isinstance(a, ChatAgent)], termination_condition=termination)
        return RoundRobinGroupChat(agents, termination_condition=termination)


def _metered(observer: Observer | None, meter: UsageMeter) -> Observer:
    def observe(call: ModelCall) -> None:
        meter.add(call)
        if observer is not None:
            observer(call)

    return observe
