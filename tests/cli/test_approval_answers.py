"""The CLI's side of a tool's approval: what it asks, and the answer a typed line makes."""

from __future__ import annotations

from app.cli.run import answer_body
from tests.cli.test_render import plain, view

APPROVAL = {
    "request_id": "r",
    "agent": "clerk",
    "kind": "approval",
    "prompt": "clerk wants to call the tool 'send'. Approve, reject, or edit its arguments.",
    "tool": {"name": "send", "call_id": "c", "arguments": {"to": "ada"}},
}


def test_an_approval_request_shows_the_call() -> None:
    v, out = view()
    v.input_request(APPROVAL)
    assert plain(out.getvalue()).splitlines() == [
        '? clerk asks for your input: may it call send({"to": "ada"})? y to approve; n, or a reason, to decline'
    ]


def test_a_typed_line_approves_or_declines_and_a_plain_request_takes_it_as_is() -> None:
    assert answer_body(APPROVAL, "y\n") == {"request_id": "r", "decision": "approve"}
    assert answer_body(APPROVAL, "YES") == {"request_id": "r", "decision": "approve"}
    assert answer_body(APPROVAL, "n") == {"request_id": "r", "decision": "reject"}
    assert answer_body(APPROVAL, " not to ada \n") == {"request_id": "r", "decision": "reject", "content": "not to ada"}
    plain_request = {"request_id": "q", "agent": "human", "kind": "input", "prompt": "?"}
    assert answer_body(plain_request, "yes") == {"request_id": "q", "content": "yes"}
    assert answer_body({"request_id": "q", "agent": "human", "prompt": "?"}, "y") == {"request_id": "q", "content": "y"}
