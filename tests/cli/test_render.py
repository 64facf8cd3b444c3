"""The terminal view of a run, fed event envelopes directly (what the CLI prints, and in which colour)."""

from __future__ import annotations

import io
import re
from typing import Any

from rich.console import Console

from app.cli.render import RunView

SGR = re.compile(r"\x1b\[([0-9;]*)m")


def view() -> tuple[RunView, io.StringIO]:
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, color_system="standard", width=200, highlight=False)
    return RunView(console), out


def plain(text: str) -> str:
    return SGR.sub("", text)


def event(type_: str, **data: Any) -> dict[str, Any]:
    return {"type": type_, "data": data}


def delta(message_id: str, agent: str, text: str, **extra: Any) -> dict[str, Any]:
    return event("message.delta", message_id=message_id, agent=agent, text=text, **extra)


def completed(message_id: str, agent: str, text: str, type_: str = "TextMessage") -> dict[str, Any]:
    return event("message.completed", message_id=message_id, agent=agent, text=text, type=type_, position=1)


def style_of(output: str, word: str) -> str:
    """The SGR parameters in force where ``word`` is printed."""
    match = re.search(r"\x1b\[([0-9;]*)m" + re.escape(word), output)
    assert match, f"{word!r} is not printed with a style in {output!r}"
    return match.group(1)


def test_streamed_messages_get_one_line_per_message_and_one_colour_per_agent() -> None:
    v, out = view()
    v.show(event("run.started", team="demo", agents=["critic", "writer"]))
    v.show(completed("t", "user", "Write a haiku."))
    for piece in ("Waves ", "fold ", "[bold]light"):
        v.show(delta("m1", "writer", piece))
    v.show(completed("m1", "writer", "Waves fold [bold]light"))
    v.show(delta("m2", "critic", "APPROVED"))
    v.show(completed("m2", "critic", "APPROVED"))
    text = out.getvalue()
    assert plain(text).splitlines() == [
        "agents: critic, writer",
        "user ▸ Write a haiku.",
        "writer ▸ Waves fold [bold]light",  # model text is never read as markup
        "critic ▸ APPROVED",
    ]
    writer, critic = style_of(text, "writer"), style_of(text, "critic")
    assert writer != critic
    assert style_of(text, "Waves") != style_of(text, "APPROVED")


def test_interleaved_messages_are_labelled_again_when_they_resume() -> None:
    v, out = view()
    v.show(delta("a", "writer", "one ", branch="left"))
    v.show(delta("b", "critic", "two ", branch="right"))
    v.show(delta("a", "writer", "three", branch="left"))
    v.show(completed("a", "writer", "one three"))
    v.show(completed("b", "critic", "two "))
    assert plain(out.getvalue()).splitlines() == [
        "writer [left] ▸ one ",
        "critic [right] ▸ two ",
        "writer [left] … three",
    ]


def test_tools_handoffs_and_the_end_of_a_run() -> None:
    v, out = view()
    v.show(event("tool.call", agent="doer", call_id="c1", name="calculator", arguments='{"expression": "2+2"}'))
    v.show(event("tool.result", agent="doer", call_id="c1", name="calculator", content="4", is_error=False))
    v.show(event("tool.result", agent="doer", call_id="c2", name="calculator", content="bad input", is_error=True))
    v.show(event("handoff", message_id="h", source="doer", target="planner"))
    v.show(
        event(
            "run.completed",
            status="succeeded",
            stop_reason="Text 'DONE' mentioned",
            result=None,
            usage={"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
            duration_ms=1234,
        )
    )
    lines = plain(out.getvalue()).splitlines()
    assert lines == [
        '  ⚙ doer calls calculator({"expression": "2+2"})',
        "  ⮑ calculator → 4",
        "  ⮑ calculator failed: bad input",
        "↪ doer hands off to planner",
        "✔ succeeded in 1.2 s · tokens 10 in, 5 out · Text 'DONE' mentioned",
    ]


def test_estimated_usage_says_so_at_the_end() -> None:
    v, out = view()
    usage = {"prompt_tokens": 40, "completion_tokens": 9, "total_tokens": 49, "estimated": True}
    v.show(event("run.completed", status="succeeded", stop_reason=None, result=None, usage=usage, duration_ms=50))
    assert plain(out.getvalue()).splitlines() == ["✔ succeeded in 0.1 s · tokens 40 in, 9 out (estimated)"]


def test_failed_and_cancelled_runs_say_why() -> None:
    v, out = view()
    usage = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
    v.show(
        event(
            "run.failed",
            status="timed_out",
            error={"code": "timed_out", "message": "The run exceeded its time limit of 1 s."},
            usage=usage,
            duration_ms=1000,
        )
    )
    v.show(event("run.cancelled", status="cancelled", reason="cancelled", usage=usage, duration_ms=2500))
    assert plain(out.getvalue()).splitlines() == [
        "✖ timed_out (timed_out): The run exceeded its time limit of 1 s.",
        "■ cancelled (cancelled) after 2.5 s",
    ]


def test_an_open_line_is_closed_before_anything_else_is_printed() -> None:
    v, out = view()
    v.show(delta("m", "writer", "half a thought"))
    v.input_request({"request_id": "r", "agent": "human", "prompt": "Approve?"})
    v.prompt()
    v.prompt_answered()
    v.notice("after the answer")
    assert plain(out.getvalue()).splitlines() == [
        "writer ▸ half a thought",
        "? human asks for your input: Approve?",
        "> after the answer",  # the person's Enter ends the prompt line in a real terminal
    ]


def test_long_text_wraps_between_words_under_its_label() -> None:
    out = io.StringIO()
    v = RunView(Console(file=out, force_terminal=True, color_system="standard", width=40, highlight=False))
    words = "the quick brown fox jumps over the lazy dog while a calm river runs past green hills"
    pieces = [w + " " for w in words.split(" ")]
    pieces[1:2] = ["qui", "ck "]  # a word split over two streamed pieces
    for piece in pieces:
        v.show(delta("m", "writer", piece))
    v.show(completed("m", "writer", "".join(pieces)))
    v.show(completed("n", "critic", "Short.\nSecond line."))
    lines = plain(out.getvalue()).splitlines()
    assert all(len(line) <= 40 for line in lines), lines
    assert lines[0].startswith("writer ▸ the quick brown")
    assert all(line.startswith(" " * len("writer ▸ ")) for line in lines[1:-2])
    assert " ".join(" ".join(line.split()) for line in lines[:-2]).removeprefix("writer ▸ ") == words
    assert lines[-2:] == ["critic ▸ Short.", "         Second line."]
