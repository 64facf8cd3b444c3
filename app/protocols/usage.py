"""A protocol response's part of its run's usage, for every view that splits a run in several.

A run that asks a person is several responses in the OpenAI dialect and several AG-UI runs: each
reports what was spent from where it starts (the run's start, or the answer that resumed it) to
where it ends (the next question, or the run's end). Until the end the messages' usage is all that
is known (a selector's calls are in the run's total only); at the end, the run's total less what
came before. So the parts of one run add up to its usage.
"""

from __future__ import annotations

from typing import Any


class UsageShare:
    """Prompt and completion tokens of the run's messages so far, and of those before this response."""

    __slots__ = ("_before", "completion", "prompt")

    def __init__(self, spent: tuple[int, int] = (0, 0), *, starts_here: bool = False) -> None:
        self.prompt, self.completion = spent
        self._before = spent if starts_here else (0, 0)

    @property
    def resumed(self) -> bool:
        """This response starts after some of the run's usage (it resumed the run)."""
        return self._before != (0, 0)

    def count(self, data: dict[str, Any]) -> None:
        """A ``message.completed``'s usage."""
        usage = data.get("usage") or {}
        self.prompt += int(usage.get("prompt_tokens", 0))
        self.completion += int(usage.get("completion_tokens", 0))

    def start(self) -> None:
        """This response starts here: what was spent so far is the responses' before it."""
        self._before = (self.prompt, self.completion)

    def so_far(self) -> tuple[int, int]:
        """This response's part of what the messages have spent so far."""
        return self.part({"prompt_tokens": self.prompt, "completion_tokens": self.completion})

    def part(self, usage: dict[str, Any] | None) -> tuple[int, int]:
        """This response's part of ``usage`` (the run's, in its terminal event)."""
        usage = usage or {}
        prompt = max(int(usage.get("prompt_tokens", 0)) - self._before[0], 0)
        completion = max(int(usage.get("completion_tokens", 0)) - self._before[1], 0)
        return prompt, completion
