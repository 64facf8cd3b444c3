"""AutoGen's token budget with counts set from outside (app/patches/autogen_token_usage.py): it stops
where AutoGen's own counting of the same usage stops."""

from __future__ import annotations

import pytest
from autogen_agentchat.conditions import TokenUsageTermination
from autogen_agentchat.messages import TextMessage
from autogen_core.models import RequestUsage

from app.patches.autogen_token_usage import set_token_counts


@pytest.mark.parametrize(
    ("limits", "prompt", "completion"),
    [
        ({"max_total_token": 10}, 6, 3),
        ({"max_total_token": 10}, 6, 4),
        ({"max_prompt_token": 5}, 5, 0),
        ({"max_completion_token": 5}, 9, 4),
        ({"max_completion_token": 5}, 0, 5),
    ],
)
async def test_set_counts_stop_where_autogens_own_count_stops(
    limits: dict[str, int], prompt: int, completion: int
) -> None:
    theirs, ours = TokenUsageTermination(**limits), TokenUsageTermination(**limits)
    usage = RequestUsage(prompt_tokens=prompt, completion_tokens=completion)
    stop = await theirs([TextMessage(content="x", source="a", models_usage=usage)])
    set_token_counts(ours, prompt, completion)
    assert ours.terminated == theirs.terminated == (stop is not None)
