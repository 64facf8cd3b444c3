"""AutoGen's token budget, counted on what the run's model calls billed.

Written for autogen-agentchat 0.7.5 (private attributes written: the three counts of
``TokenUsageTermination``).

``TokenUsageTermination`` adds up the usage carried by the messages it is shown, which leaves out
a selector's own model calls; ``BilledTokenBudget`` (``app/engine/factory.py``) keeps AutoGen's
class, so that a team is configured and dumped as AutoGen's, and sets its counts from the run's
billed usage instead. Needed for correctness (``token_budget`` must stop a selector team), so it
cannot be switched off. ``tests/patches/test_autogen_token_usage.py`` holds ``terminated`` to
AutoGen's own reading of the counts.
"""

from __future__ import annotations

from autogen_agentchat.conditions import TokenUsageTermination


def set_token_counts(termination: TokenUsageTermination, prompt: int, completion: int) -> None:
    """The counts ``termination.terminated`` compares with its limits: these, not its messages' sum."""
    termination._prompt_token_count = prompt
    termination._completion_token_count = completion
    termination._total_token_count = prompt + completion
