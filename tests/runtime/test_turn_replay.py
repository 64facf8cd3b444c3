"""Reading a crashed run's interrupted turn back from its log (``app/runtime/run/replay.py``)."""

from __future__ import annotations

import pytest
from autogen_core import FunctionCall

from app.engine.pins import INTERRUPTED, ToolReplay
from app.runtime.run.replay import turn_replay


def call(seq: int, agent: str, call_id: str, name: str = "slow_note") -> tuple[int, str, dict[str, object]]:
    return seq, "tool.call", {"agent": agent, "call_id": call_id, "name": name, "arguments": '{"note": "x"}'}


def result(
    seq: int, call_id: str, content: str = "noted", is_error: bool = False
) -> tuple[int, str, dict[str, object]]:
    return (
        seq,
        "tool.result",
        {"agent": "clerk", "call_id": call_id, "name": "slow_note", "content": content, "is_error": is_error},
    )


def test_the_turn_s_replies_are_given_back_in_order_with_their_thought_and_results() -> None:
    thought = (4, "message.completed", {"type": "ThoughtEvent", "agent": "clerk", "text": "Writing two notes."})
    replay = turn_replay(
        [thought, call(5, "clerk", "a"), call(6, "clerk", "b"), result(7, "a"), result(8, "b"), call(9, "clerk", "c")]
    )
    first, second = replay.pins.take("clerk"), replay.pins.take("clerk")
    assert first is not None and second is not None and replay.pins.take("clerk") is None
    assert first.thought == "Writing two notes." and second.thought is None
    assert [c.id for c in first.content if isinstance(c, FunctionCall)] == ["a", "b"]
    assert [c.id for c in second.content if isinstance(c, FunctionCall)] == ["c"]
    assert first.usage.prompt_tokens == 0  # billed when first made
    assert replay.logged.calls == {"a", "b", "c"} and replay.logged.results == {"a", "b"}
    assert replay.tools.outcome("a", idempotent=False) == ("noted", False)
    assert replay.tools.outcome("c", idempotent=False) == (INTERRUPTED, True)
    assert replay.tools.outcome("c", idempotent=False) is None, "said once: a later call of that id is new"
    assert replay.pins.take("critic") is None


@pytest.mark.parametrize("idempotent", [True, False])
def test_a_cut_call_runs_again_only_when_its_tool_is_idempotent(idempotent: bool) -> None:
    tools = ToolReplay(cut={"c"})
    outcome = tools.outcome("c", idempotent=idempotent)
    assert (outcome is None) is idempotent
    assert tools.outcome("new", idempotent=False) is None and tools.outcome(None, idempotent=False) is None


def test_logged_events_are_not_written_twice() -> None:
    replay = turn_replay([call(5, "clerk", "a"), result(6, "a"), call(7, "clerk", "b")])
    events = [
        ("tool.call", {"call_id": "a"}),
        ("tool.result", {"call_id": "a"}),
        ("tool.result", {"call_id": "b"}),  # the cut call's new (error) result: written
        ("tool.call", {"call_id": "z"}),
    ]
    assert replay.logged.unlogged(events) == [("tool.result", {"call_id": "b"}), ("tool.call", {"call_id": "z"})]  # type: ignore[arg-type]


def test_a_selector_s_pick_of_the_turn_is_made_again_and_logged_once() -> None:
    picked = (4, "speaker.selected", {"agents": ["clerk"]})
    replay = turn_replay([picked, call(5, "clerk", "a")])
    pick = replay.pins.take("selector")
    assert pick is not None and pick.content == "clerk" and replay.pins.take("selector") is None
    assert replay.pins.take("clerk") is not None
    events = [("speaker.selected", {"agents": ["clerk"]}), ("speaker.selected", {"agents": ["critic"]})]
    assert replay.logged.unlogged(events) == [("speaker.selected", {"agents": ["critic"]})]  # type: ignore[arg-type]


def test_a_call_that_was_waiting_for_its_approval_is_asked_again_not_cut() -> None:
    asked = (6, "input.requested", {"request_id": "q1", "kind": "approval", "tool": {"call_id": "a"}})
    answered = (7, "input.received", {"request_id": "q1"})
    waiting = turn_replay([call(5, "clerk", "a"), asked])
    assert waiting.tools.cut == set() and waiting.tools.outcome("a", idempotent=False) is None
    approved = turn_replay([call(5, "clerk", "a"), asked, answered])  # approved: it may have run
    assert approved.tools.cut == {"a"}


def test_a_call_a_person_declined_gives_the_refusal_again_and_is_not_cut() -> None:
    asked = (6, "input.requested", {"request_id": "q1", "kind": "approval", "tool": {"call_id": "a"}})
    declined = (7, "input.received", {"request_id": "q1", "decision": "reject", "reason": "too dear"})
    replay = turn_replay([call(5, "clerk", "a"), asked, declined])
    content, is_error = replay.tools.outcome("a", idempotent=False) or ("", False)
    assert is_error and "declined" in content and "too dear" in content and "slow_note" in content
    assert replay.tools.cut == set() and replay.logged.results == set(), "its result is written on the replay"
