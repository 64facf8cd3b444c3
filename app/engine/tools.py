"""The server's tool registry: agents name tools, the server owns their code.

A team spec can only refer to tools registered here, so loading a team never
executes code that came with a request. Tools are registered in code, or by
the operator through ``SWARM_TOOLS`` (``module:function`` entry points).
Every call is bounded by a timeout; a tool that raises or times out gives the
model an error result (``is_error``) and the run goes on. Some tools need to
know whose run calls them (the history search reads the run's own
conversation), so each run builds its tools from a ``ToolContext``; what a tool reads of the
server, it reads through the context (``HistorySearch``), never a repository of its own.

A tool may need a person's approval before each call (``requires_approval``, set by the operator, or an
agent's ``approve_tools``): the run's ``ToolContext.approvals`` asks (``app/engine/approvals.py``). A tool
marked ``idempotent`` may be run again after a crash interrupted it (read-only tools are).
"""

from __future__ import annotations

import ast
import asyncio
import copy
import importlib
import inspect
import operator
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from autogen_core import CancellationToken
from autogen_core.tools import BaseTool, FunctionTool, ToolSchema
from pydantic import BaseModel

from app.engine.approvals import (
    ApprovalGate,
    ApprovalRequest,
    ApprovalStopped,
    EditedCall,
    ToolDeclined,
    check_arguments,
    no_approver,
)
from app.engine.pins import Interrupted, ToolReplay
from app.patches.autogen_function_tool import function_of, rebound


class FoundMessage(Protocol):
    """A stored message of a conversation, as the history search reports it."""

    @property
    def position(self) -> int: ...
    @property
    def agent(self) -> str: ...
    @property
    def content(self) -> str: ...


class HistorySearch(Protocol):
    """Reads a conversation's stored messages that mention ``query`` (any case), newest first, at most ``limit``.

    The conversations domain supplies it (``app.conversations.repository.MessageSearch``).
    """

    def __call__(self, conversation_id: str, query: str, limit: int) -> Awaitable[Sequence[FoundMessage]]: ...


@dataclass(frozen=True, slots=True)
class ToolContext:
    """What a tool may know about the run that calls it."""

    run_id: str
    conversation_id: str
    principal_id: str
    history: HistorySearch
    approvals: ApprovalGate | None = None  # asks the run's person about a call that needs approval
    replay: ToolReplay | None = None  # a resumed turn's calls: their stored results (``app/engine/pins.py``)
    # until the call's ``tool.call`` is in the run's log: a tool that is not idempotent waits for it before
    # it acts, so a crash can never leave a side effect the log does not know was asked for
    logged: Callable[[str], Awaitable[None]] | None = None


ToolBuilder = Callable[[ToolContext], Callable[..., Any]]


@dataclass(frozen=True, slots=True)
class ToolInfo:
    """A registered tool as a client may see it (``GET /v1/tools``)."""

    name: str
    description: str
    source: str  # builtin | entry_point | code
    parameters: dict[str, Any]  # the JSON schema of its arguments, as the model gets it
    requires_approval: bool
    idempotent: bool


class ToolStopped(RuntimeError):
    """A tool call cut short because its run was stopped: its (error) result lets the agent's turn end."""


class TimedTool(FunctionTool):
    """A function tool whose every call is bounded by a timeout; one that needs approval (``asking``)
    asks a person first, and that wait is not part of the call's time."""

    def __init__(self, func: Callable[..., Any], *, name: str, description: str, timeout_s: float) -> None:
        super().__init__(func, description=description, name=name)
        self._timeout_s = timeout_s
        self._schema: ToolSchema | None = None
        self._approvals: ApprovalGate | None = None  # set on a copy (``asking``): whom to ask
        self._agent = ""  # the agent whose calls they are
        self._replay: ToolReplay | None = None  # set on a copy (``replaying``): a resumed turn's results
        self._logged: Callable[[str], Awaitable[None]] | None = None  # set on a copy (``logging``)
        self._idempotent = False

    @property
    def schema(self) -> ToolSchema:
        # AutoGen derives it from the arguments model on every model call; it never changes
        if self._schema is None:
            self._schema = super().schema
        return self._schema

    def for_function(self, func: Callable[..., Any]) -> TimedTool:
        """This tool calling ``func``, a function of the same code (a per-run builder's, over another context).

        ``FunctionTool`` builds a pydantic model of the arguments from the function's signature, about
        0.4 ms, on every construction: per tool, per agent, per run. A copy shares the model.
        """
        return rebound(self, func)

    def asking(self, approvals: ApprovalGate | None, agent: str) -> TimedTool:
        """This tool, for ``agent``, asking ``approvals`` before every call (nobody to ask: every call fails)."""
        twin = copy.copy(self)
        twin._approvals = approvals or no_approver
        twin._agent = agent
        return twin

    def replaying(self, replay: ToolReplay, idempotent: bool) -> TimedTool:
        """This tool in a resumed turn: a call that finished before the crash gives back its stored
        result, one the crash cut is not run again unless ``idempotent`` (``app/engine/pins.py``)."""
        twin = copy.copy(self)
        twin._replay = replay
        twin._idempotent = idempotent
        return twin

    def logging(self, logged: Callable[[str], Awaitable[None]]) -> TimedTool:
        """This tool, acting only once its call's ``tool.call`` is in the run's log (``ToolContext.logged``)."""
        twin = copy.copy(self)
        twin._logged = logged
        return twin

    def check_arguments(self, arguments: Mapping[str, Any]) -> dict[str, Any]:
        """``arguments`` if the tool's argument model accepts them; ``InvalidToolArguments`` if not."""
        return check_arguments(self._args_type, arguments, self.name)

    async def run_json(
        self, args: Mapping[str, Any], cancellation_token: CancellationToken, call_id: str | None = None
    ) -> Any:
        if self._replay is not None and (given := self._replay.outcome(call_id, self._idempotent)) is not None:
            content, is_error = given
            if is_error:
                raise Interrupted(content)  # AutoGen gives the model its text as an error result
            return content
        if self._logged is not None and call_id is not None:
            await self._until_logged(self._logged, call_id, cancellation_token)
        if self._approvals is not None:
            return await self._run_approved(self._approvals, args, cancellation_token, call_id)
        return await super().run_json(args, cancellation_token, call_id=call_id)

    async def _until_logged(
        self, logged: Callable[[str], Awaitable[None]], call_id: str, token: CancellationToken
    ) -> None:
        try:
            await logged(call_id)
        except asyncio.CancelledError:
            if not token.is_cancelled():
                raise
            # the run stopped first: the call ends with a result (AutoGen's agent waits for one)
            raise ToolStopped(f"the run was stopped before the tool '{self.name}' ran") from None

    async def _run_approved(
        self, approvals: ApprovalGate, args: Mapping[str, Any], token: CancellationToken, call_id: str | None
    ) -> Any:
        """The approval gate: a person decides, then the call runs as asked, runs edited, or is declined
        (``ToolDeclined``: AutoGen gives the model its text as an error result)."""
        asked = self.check_arguments(args)  # a call the tool refuses anyway is refused without asking
        request = ApprovalRequest(self._agent, self.name, call_id, asked, self.check_arguments)
        try:
            decision = await approvals(request)
        except asyncio.CancelledError:
            if not token.is_cancelled():
                raise
            # the run stopped (its token pulled) while the person decided: a call that ended cancelled would
            # leave AutoGen's agent waiting forever for its tool calls to end, and the team with it
            raise ApprovalStopped(self.name) from None
        if decision.decision == "reject":
            raise ToolDeclined(self.name, decision.reason)
        if decision.decision == "approve" or decision.arguments is None:
            return await super().run_json(args, token, call_id=call_id)
        result = await super().run_json(decision.arguments, token, call_id=call_id)
        return EditedCall(self.return_value_as_string(result), decision.arguments)

    async def run(self, args: BaseModel, cancellation_token: CancellationToken) -> Any:
        try:
            async with asyncio.timeout(self._timeout_s):
                return await super().run(args, cancellation_token)
        except TimeoutError:
            raise TimeoutError(f"the tool '{self.name}' did not finish within {self._timeout_s:g} s") from None
        except asyncio.CancelledError:
            if not cancellation_token.is_cancelled():
                raise  # our own task is being cancelled: let it go
            # the run was stopped: AutoGen's agent waits for every tool call to end with a result, and
            # one that ends cancelled never does (the agent, and the run, would wait forever)
            raise ToolStopped(f"the run was stopped while the tool '{self.name}' was running") from None


# -- built-in tools ------------------------------------------------------------------------------

_BINARY: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UNARY: dict[type[ast.unaryop], Callable[[Any], Any]] = {ast.USub: operator.neg, ast.UAdd: operator.pos}


def _evaluate(node: ast.AST) -> float:
    if isinstance(node, ast.Expression):
        return _evaluate(node.body)
    if isinstance(node, ast.Constant) and isinstance(node.value, int | float) and not isinstance(node.value, bool):
        return node.value
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _evaluate(node.left), _evaluate(node.right)
        if isinstance(node.op, ast.Pow) and abs(right) > 100:
            raise ValueError("exponent too large")
        return float(_BINARY[type(node.op)](left, right))
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return float(_UNARY[type(node.op)](_evaluate(node.operand)))
    raise ValueError("only numbers and + - * / // % ** are allowed")


async def calculator(expression: str) -> str:
    """Evaluate an arithmetic expression such as `2 * (3 + 4)`."""
    if len(expression) > 200:
        raise ValueError("expression too long")
    result = _evaluate(ast.parse(expression, mode="eval"))
    return str(int(result)) if result == int(result) else str(result)


async def current_time() -> str:
    """The current date and time in UTC, ISO 8601."""
    return datetime.now(UTC).isoformat(timespec="seconds")


def history_search(ctx: ToolContext) -> Callable[..., Any]:
    async def search_history(query: str, limit: int = 5) -> str:
        """Search this conversation's earlier messages for a word or phrase; newest matches first."""
        if not query.strip():
            raise ValueError("the query is empty")
        found = await ctx.history(ctx.conversation_id, query.strip(), max(1, min(limit, 20)))
        if not found:
            return f"No earlier message mentions {query!r}."
        return "\n".join(f"[{m.position}] {m.agent}: {m.content[:300]}" for m in found)

    return search_history


# -- the registry --------------------------------------------------------------------------------


class ToolRegistry:
    def __init__(self, timeout_s: float = 30.0) -> None:
        self._builders: dict[str, tuple[ToolBuilder, str]] = {}
        self._built: dict[str, TimedTool] = {}  # per name, the first tool built: its argument model is reused
        self._needs_approval: set[str] = set()
        self._idempotent: set[str] = set()
        self._sources: dict[str, str] = {}  # builtin | entry_point | code (registered by the embedding program)
        self.timeout_s = timeout_s

    def register(
        self,
        func: Callable[..., Any],
        *,
        name: str | None = None,
        description: str | None = None,
        requires_approval: bool = False,
        idempotent: bool = False,
        source: str = "code",
    ) -> None:
        """A plain typed function (async or not) as a tool."""
        self.register_builder(
            lambda _ctx: func,
            name=name or func.__name__,
            description=description or _doc(func),
            requires_approval=requires_approval,
            idempotent=idempotent,
            source=source,
        )

    def register_builder(
        self,
        builder: ToolBuilder,
        *,
        name: str,
        description: str,
        requires_approval: bool = False,
        idempotent: bool = False,
        source: str = "code",
    ) -> None:
        """A tool made per run from its context. ``requires_approval``: a person approves every call
        first; ``idempotent``: a call a crash interrupted may run again (it changes nothing, or the
        same twice)."""
        if name in self._builders:
            raise ValueError(f"a tool named '{name}' is registered already")
        self._builders[name] = (builder, description)
        self._sources[name] = source
        if requires_approval:
            self._needs_approval.add(name)
        if idempotent:
            self._idempotent.add(name)

    def mark(self, *, requires_approval: Iterable[str] = (), idempotent: Iterable[str] = ()) -> None:
        """Mark registered tools by name (the operator's settings); an unknown name is a ``ValueError``."""
        approval, repeatable = list(requires_approval), list(idempotent)
        unknown = sorted({n for n in (*approval, *repeatable) if n not in self._builders})
        if unknown:
            known = ", ".join(self.names()) or "none"
            raise ValueError(f"no tool named {', '.join(map(repr, unknown))} is registered (known: {known})")
        self._needs_approval.update(approval)
        self._idempotent.update(repeatable)

    def requires_approval(self, name: str) -> bool:
        """Whether every call of the tool waits for a person's approval (an agent may ask it of more)."""
        return name in self._needs_approval

    def idempotent(self, name: str) -> bool:
        """Whether a call of the tool that a crash interrupted may simply run again."""
        return name in self._idempotent

    def names(self) -> list[str]:
        return sorted(self._builders)

    def __contains__(self, name: object) -> bool:
        return name in self._builders

    def build(self, name: str, ctx: ToolContext, *, agent: str = "", approve: bool = False) -> BaseTool[Any, Any]:
        """The tool ``name`` for a run (``ctx``), called by ``agent``; ``approve``: the agent's spec asks
        approval for it (it is asked anyway when the tool ``requires_approval``)."""
        tool = self._build(name, ctx)
        if ctx.replay is not None:
            tool = tool.replaying(ctx.replay, name in self._idempotent)
        if ctx.logged is not None and name not in self._idempotent:
            tool = tool.logging(ctx.logged)
        if approve or name in self._needs_approval:
            return tool.asking(ctx.approvals, agent)
        return tool

    def _build(self, name: str, ctx: ToolContext) -> TimedTool:
        builder, description = self._builders[name]
        func = builder(ctx)
        first = self._built.get(name)
        code = getattr(func, "__code__", None)
        if first is not None and code is not None and code is getattr(function_of(first), "__code__", None):
            return first.for_function(func)  # the same code, so the same signature
        tool = TimedTool(func, name=name, description=description, timeout_s=self.timeout_s)
        self._built[name] = tool
        return tool

    def check_arguments(self, name: str, arguments: Mapping[str, Any]) -> dict[str, Any]:
        """``arguments`` if the tool's argument model accepts them (``InvalidToolArguments`` if not), for an
        answer checked away from the run that asked (the API, a parked run). A tool not built yet in this
        process is built over a context of no run: a builder must not act when it is called."""
        tool = self._built.get(name) or self._build(name, ToolContext("", "", "", _no_history))
        return tool.check_arguments(arguments)

    def load_entry_points(self, specs: list[str]) -> None:
        """Register ``module:function`` callables named by the operator (settings, never requests)."""
        for spec in specs:
            module_name, _, attr = spec.partition(":")
            if not module_name or not attr:
                raise ValueError(f"tool entry point {spec!r} is not of the form module:function")
            func = getattr(importlib.import_module(module_name), attr)
            if not callable(func):
                raise ValueError(f"tool entry point {spec!r} is not callable")
            self.register(func, source="entry_point")

    def describe(self) -> list[ToolInfo]:
        """Every registered tool, by name, with the schema of its arguments."""
        infos: list[ToolInfo] = []
        for name in self.names():
            tool = self._built.get(name) or self._build(name, ToolContext("", "", "", _no_history))
            infos.append(
                ToolInfo(
                    name=name,
                    description=tool.description,
                    source=self._sources.get(name, "code"),
                    parameters=dict(tool.schema.get("parameters") or {}),
                    requires_approval=name in self._needs_approval,
                    idempotent=name in self._idempotent,
                )
            )
        return infos

    @classmethod
    def with_builtins(cls, timeout_s: float = 30.0) -> ToolRegistry:
        registry = cls(timeout_s)
        for func, description in (
            (calculator, "Evaluate an arithmetic expression."),
            (current_time, "Get the current UTC date and time."),
        ):
            registry.register(func, description=description, idempotent=True, source="builtin")
        registry.register_builder(
            history_search,
            name="search_history",
            description="Search this conversation's earlier messages.",
            idempotent=True,
            source="builtin",
        )
        return registry


async def _no_history(conversation_id: str, query: str, limit: int) -> Sequence[FoundMessage]:
    return []


def _doc(func: Callable[..., Any]) -> str:
    doc = inspect.getdoc(func) or f"The {func.__name__} tool."
    return doc.strip().splitlines()[0]
