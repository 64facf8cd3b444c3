"""A team's output queue, replaced by one of ours before the team first starts.

Written for autogen-agentchat 0.7.5 (a private attribute written: ``BaseGroupChat._output_message_queue``).
Needed for correctness, so it cannot be switched off: the fast token path (docs/performance.md,
sections 1 and 13) must know what the team has put out and the run has not yet handled, so that a
streamed chunk published straight away never overtakes the message before it. What that buys: most
chunks skip AutoGen's runtime (about 250 us of CPU apiece, docs/architecture.md) and its queue (a
pydantic event and a task each, section 13).

AutoGen's ``run_stream`` yields whatever lands on the team's ``_output_message_queue``, in order,
and the team hands that same queue to its group chat manager when it first starts (``_init``, on
the first ``run_stream``). Put in place before that, a queue of ours is the one both use; after
it, the manager would keep writing to the old one, so ``attach_output_queue`` refuses.
``tests/patches/test_autogen_output_queue.py`` holds a team's run through our queue to AutoGen's
own.
"""

from __future__ import annotations

import asyncio
from typing import Any

from autogen_agentchat.teams import BaseGroupChat


def attach_output_queue(team: BaseGroupChat, queue: asyncio.Queue[Any]) -> None:
    """Make ``queue`` the team's output queue: what its manager puts out and ``run_stream`` yields."""
    if team._initialized:
        raise RuntimeError("the team has started: its group chat manager keeps the queue it was given")
    team._output_message_queue = queue
