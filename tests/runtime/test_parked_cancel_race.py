"""A cancel that reaches a run's executor just as the run parks (issue 24).

In the distributed mode a cancel is written on the run's row (``cancel_requested``), then signalled
to its executor; a run that parks between the two is held by no process, and the signal finds nothing
to stop. The parked-run sweeper ends such a run ``cancelled``, with the cancel's reason.
"""

from __future__ import annotations

from typing import Any

import httpx
from sqlalchemy import update

from app.runs.models import Run
from tests.conftest import services_of
from tests.fixtures.runs import start_run, stored_events, wait_for_status
from tests.fixtures.specs import agent, team


async def test_a_parked_run_whose_row_says_cancelled_is_ended_by_the_sweeper(
    client: httpx.AsyncClient, app: Any
) -> None:
    spec = team(members=[agent("helper", "fake/t3"), {"name": "human", "kind": "user_proxy"}], max_messages=4)
    run = await start_run(client, team=spec)
    await wait_for_status(client, run["id"], {"awaiting_input"})
    services = services_of(app)
    async with services.sessionmaker() as session:  # the cancel as written before its signal went out
        await session.execute(update(Run).where(Run.id == run["id"]).values(cancel_requested="user_left"))
        await session.commit()
    ended = await services.launcher.parked.expire()
    assert [env.run_id for env in ended] == [run["id"]]
    done = (await client.get(f"/v1/runs/{run['id']}")).json()
    assert done["status"] == "cancelled" and done["stop_reason"] == "user_left", done
    events = await stored_events(client, run["id"])
    assert events[-1]["type"] == "run.cancelled" and events[-1]["data"]["reason"] == "user_left"
    assert await services.launcher.parked.expire() == [], "once"
