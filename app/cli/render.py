"""A run's events as a person reads them in a terminal: one colour per agent, text as it streams.

``RunView`` takes the event envelopes in order and prints them with rich. A
message streams onto the line of its agent; when another message interleaves
(a chain's parallel branches) the line is closed and the next piece is
labelled again, so every piece of text says who wrote it. Text from models is
printed as ``Text``, never as markup.
"""

from __future__ import annotations

import json
import re
from typing import Any

from rich.cells import cell_len
from rich.console import Console
from rich.text import Text

PALETTE = ("cyan", "magenta", "green", "yellow", "blue", "bright_red", "bright_cyan", "bright_magenta")
USER_STYLE = "bold"
MAX_TOOL_TEXT = 300
MIN_TEXT_WIDTH = 30  # narrower than this beside a label, text wraps to the left edge instead
_WORDS_AND_SPACES = re.compile(r"\n+|[^\S\n]+|\S+")
AUTOGEN_PROMPT = "Enter your response:"  # what a user proxy asks when its agent says nothing more
PROMPT = "\x00prompt"  # stands for the input prompt in `open_message`: no message has this id


def _short(text: str, limit: int = MAX_TOOL_TEXT) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _seconds(ms: Any) -> str:
    return f"{(ms or 0) / 1000:.1f} s"


class RunView:
    def __init__(self, console: Console) -> None:
        self.console = console
        self.colours: dict[str, str] = {}
        self.open_message: str | None = None  # the message whose text the cursor is in
        self.streamed: set[str] = set()
        self.column = 0  # where the cursor is on the open line
        self.indent = 0  # where wrapped text of the open message starts
        self.mid_word = False  # the open line ends inside a word (the next piece may continue it)

    # -- pieces ----------------------------------------------------------------------------------

    def colour(self, agent: str) -> str:
        if agent == "user":
            return USER_STYLE
        if agent not in self.colours:
            self.colours[agent] = PALETTE[len(self.colours) % len(PALETTE)]
        return self.colours[agent]

    def label(self, agent: str, data: dict[str, Any], *, more: bool = False) -> Text:
        style = self.colour(agent)
        label = Text(agent, style=f"bold {style}")
        if data.get("branch"):
            label.append(f" [{data['branch']}]", style=style)
        label.append(" … " if more else " ▸ ", style=style)
        return label

    def end_line(self) -> None:
        if self.open_message is not None:
            self.console.print()
            self.open_message = None

    def line(self, text: Text | str, style: str = "") -> None:
        self.end_line()
        self.console.print(text if isinstance(text, Text) else Text(text, style=style), soft_wrap=True)

    def notice(self, text: str) -> None:
        self.line(text, style="dim")

    # -- the run ---------------------------------------------------------------------------------

    def header(self, run: dict[str, Any], base_url: str) -> None:
        self.line(
            Text.assemble(
                ("▶ ", "bold"),
                (f"run {run['id']}", "bold"),
                (f" · team {run['team_name']} · conversation {run['conversation_id']} · {base_url}", "dim"),
            )
        )

    def show(self, event: dict[str, Any]) -> None:
        kind = event["type"]
        data: dict[str, Any] = event.get("data") or {}
        handler = getattr(self, "_" + kind.replace(".", "_"), None)
        if handler is not None:
            handler(data)

    def _run_started(self, data: dict[str, Any]) -> None:
        for agent in data.get("agents", []):
            self.colour(agent)
        agents = Text()
        agents.append("agents: ", style="dim")
        for i, agent in enumerate(data.get("agents", [])):
            if i:
                agents.append(", ", style="dim")
            agents.append(agent, style=self.colour(agent))
        self.line(agents)

    def _start_text(self, label: Text) -> None:
        """Prints an agent's label; the text that follows wraps under it (a hanging indent)."""
        self.end_line()
        self.console.print(label, end="")
        self.column = cell_len(label.plain)
        self.indent = self.column if self.console.width - self.column >= MIN_TEXT_WIDTH else 0
        self.mid_word = False

    def _flow(self, text: str, style: str) -> None:
        """Prints a piece of an agent's text, wrapping between words as a person would read it.

        Pieces arrive as the model streams them, so a word may be split over two pieces: a
        piece that continues a word is never moved to the next line on its own.
        """
        width = self.console.width
        for part in _WORDS_AND_SPACES.findall(text):
            if "\n" in part:
                for _ in range(part.count("\n")):
                    self.console.print()
                self.console.print(" " * self.indent, end="")
                self.column, self.mid_word = self.indent, False
                continue
            size = cell_len(part)
            if part.isspace():
                if self.column + size > width:
                    self.console.print()
                    self.console.print(" " * self.indent, end="")
                    self.column = self.indent
                else:
                    self.console.print(part, end="", soft_wrap=True)
                    self.column += size
                self.mid_word = False
                continue
            if self.column + size > width and self.column > self.indent and not self.mid_word:
                self.console.print()
                self.console.print(" " * self.indent, end="")
                self.column = self.indent
            self.console.print(Text(part, style=style), end="", soft_wrap=True)
            self.column += size
            self.mid_word = True

    def _message_delta(self, data: dict[str, Any]) -> None:
        message_id = data["message_id"]
        if self.open_message != message_id:
            self._start_text(self.label(data["agent"], data, more=message_id in self.streamed))
            self.open_message = message_id
            self.streamed.add(message_id)
        self._flow(data["text"], self.colour(data["agent"]))

    def _message_completed(self, data: dict[str, Any]) -> None:
        message_id = data["message_id"]
        if message_id in self.streamed:
            if self.open_message == message_id:
                self.end_line()
            return
        agent = data["agent"]
        self._start_text(self.label(agent, data))
        self.open_message = message_id
        self._flow(data.get("text", ""), "dim" if data.get("type") == "HandoffMessage" else self.colour(agent))
        self.end_line()

    def _tool_call(self, data: dict[str, Any]) -> None:
        style = self.colour(data["agent"])
        self.line(
            Text.assemble(
                ("  ⚙ ", style),
                (data["agent"], f"bold {style}"),
                (" calls ", "dim"),
                (data["name"], "bold"),
                (f"({_short(data.get('arguments', ''))})", "dim"),
            )
        )

    def _tool_result(self, data: dict[str, Any]) -> None:
        failed = bool(data.get("is_error"))
        self.line(
            Text.assemble(
                ("  ⮑ ", "red" if failed else "dim"),
                (data["name"], "bold"),
                (" failed: " if failed else " → ", "red" if failed else "dim"),
                (_short(data.get("content", "")), "red" if failed else ""),
            )
        )

    def _handoff(self, data: dict[str, Any]) -> None:
        source, target = data["source"], data["target"]
        self.line(
            Text.assemble(
                ("↪ ", "bold"),
                (source, f"bold {self.colour(source)}"),
                (" hands off to ", "dim"),
                (target, f"bold {self.colour(target)}"),
            )
        )

    def _speaker_selected(self, data: dict[str, Any]) -> None:
        self.notice("next speaker: " + ", ".join(data.get("agents", [])))

    def input_request(self, data: dict[str, Any]) -> None:
        agent = data["agent"]
        prompt = (data.get("prompt") or "").strip()
        if prompt == AUTOGEN_PROMPT:
            prompt = ""
        tool = data.get("tool")
        if data.get("kind") == "approval" and isinstance(tool, dict):
            arguments = json.dumps(tool.get("arguments"), ensure_ascii=False)
            prompt = f"may it call {tool.get('name')}({arguments})? y to approve; n, or a reason, to decline"
        self.line(
            Text.assemble(
                ("? ", "bold yellow"),
                (agent, f"bold {self.colour(agent)}"),
                (" asks for your input", "bold"),
                (f": {prompt}" if prompt else "", ""),
            )
        )

    def prompt(self) -> None:
        self.end_line()
        self.console.print(Text("> ", style="bold yellow"), end="")
        self.open_message = PROMPT

    def prompt_answered(self) -> None:
        # the person's Enter ended the line
        if self.open_message == PROMPT:
            self.open_message = None

    def _run_completed(self, data: dict[str, Any]) -> None:
        usage = data.get("usage") or {}
        stop = f" · {data['stop_reason']}" if data.get("stop_reason") else ""
        estimated = " (estimated)" if usage.get("estimated") else ""
        self.line(
            Text.assemble(
                ("✔ succeeded", "bold green"),
                (
                    f" in {_seconds(data.get('duration_ms'))} · tokens {usage.get('prompt_tokens', 0)} in, "
                    f"{usage.get('completion_tokens', 0)} out{estimated}{stop}",
                    "dim",
                ),
            )
        )

    def _run_failed(self, data: dict[str, Any]) -> None:
        error = data.get("error") or {}
        self.line(
            Text.assemble(
                (f"✖ {data.get('status', 'failed')}", "bold red"),
                (f" ({error.get('code', 'error')}): ", "red"),
                error.get("message", ""),
            )
        )

    def _run_cancelled(self, data: dict[str, Any]) -> None:
        self.line(
            Text.assemble(
                ("■ cancelled", "bold yellow"),
                (f" ({data.get('reason', 'cancelled')}) after {_seconds(data.get('duration_ms'))}", "dim"),
            )
        )
