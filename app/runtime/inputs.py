"""Human in the loop: the one input request a run may be waiting on, and how it is answered."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from app.core.errors import Conflict


class NotAwaitingInput(Conflict):
    code = "not_awaiting_input"
    title = "The run is not waiting for input"


class UnknownInputRequest(Conflict):
    code = "unknown_input_request"
    title = "Unknown input request"


class Park(Exception):
    """Raised from a user proxy's input function to stop the team at the person's turn: the run parks
    (``app/runtime/parking.py``). AutoGen wraps it; the run knows it parked by its own flag."""


# AutoGen's UserProxyAgent always asks with this prompt
DEFAULT_PROMPT = "Enter your response: "


@dataclass(slots=True)
class PendingInput:
    request_id: str
    agent: str
    prompt: str = DEFAULT_PROMPT
    announced: bool = False  # `input.requested` is out: only then may anyone answer
    received: bool = False  # `input.received` is out
    answer: asyncio.Future[str] = field(default_factory=lambda: asyncio.get_running_loop().create_future())

    def provide(self, request_id: str, content: str) -> None:
        if not self.announced or self.answer.done():
            raise NotAwaitingInput("The run is no longer waiting for that input.")
        if request_id != self.request_id:
            raise UnknownInputRequest(f"The run is waiting for input request '{self.request_id}', not '{request_id}'.")
        self.answer.set_result(content)
