"""`balancer flow ID` reads a run's records as they are: times a Redis writer made past
any clock, or no number, show as such instead of ending the command in a traceback."""

from __future__ import annotations

import redis
from balancer.common.keys import Keys
from balancer.common.settings import Settings

from balancer import Flow, flowview, task
from balancer.submit import submit_flow


@task
def step() -> None:
    return None


def test_times_past_any_clock_or_no_number_are_shown_not_raised(
        fake: redis.Redis, settings: Settings) -> None:
    keys = Keys(settings.namespace)
    with Flow("odd") as flow:
        node = step()
    run = submit_flow(fake, settings, flow, start_ms=4_000_000_000_000)
    fake.hset(keys.flow(run.id), mapping={"created": "1e300", "finished": "inf"})
    fake.hset(keys.task(run.ids[node]), mapping={"started": "1e300", "finished": "-inf",
                                                  "ready": "nan"})
    view = flowview.gather(fake, keys, run.id)
    assert view is not None
    lines = flowview.render(view)
    assert "(starts 2096-10-02T07:06:40Z)" in lines[0]
    assert view.to_dict()["starts"] == "2096-10-02T07:06:40Z"
    fake.hset(keys.flow(run.id), "scheduled", "1e300")
    assert "starts" not in flowview.render(flowview.gather(fake, keys, run.id))[0]
