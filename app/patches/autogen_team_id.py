"""A team's id: the suffix of every agent and topic name its runtime logs.

Written for autogen-agentchat 0.7.5 (a private attribute read: ``BaseGroupChat._team_id``). Needed
to keep the log true: when a run parks (``app/runtime/parking.py``), its user proxy's input
function raises to stop the team at the person's turn, and AutoGen's runtime logs that as handler
errors with tracebacks, naming the team's agents (``human_<team id>/<team id>``). The run knows
which team parked; this id is how the log filter tells those records from real errors.
``tests/patches/test_autogen_team_id.py`` holds it to the names AutoGen gives the team's agents.
"""

from __future__ import annotations

from autogen_agentchat.teams import BaseGroupChat


def team_id(team: BaseGroupChat) -> str:
    """The id AutoGen puts in the names of the team's agents and topics."""
    value: str = team._team_id
    return value
