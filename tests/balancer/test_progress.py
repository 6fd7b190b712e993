"""What a waiting run says holds it: each distinct hold once, with how many tasks."""

from __future__ import annotations

from balancer.progress import holds


def test_holds_groups_the_reasons_and_leaves_out_tasks_on_their_way() -> None:
    why = {
        "a": "no worker serves queue gpu (worker start --queue gpu)",
        "b": "no worker serves queue gpu (worker start --queue gpu)",
        "c": "queue etl is paused (balancer queue resume etl)",
        "d": "waiting for 2 upstream tasks",
        "e": "running on worker w1",
        "f": "3 tasks ahead of it in queue etl",
    }
    assert holds(why) == [
        "2 tasks: no worker serves queue gpu (worker start --queue gpu)",
        "1 task: queue etl is paused (balancer queue resume etl)",
    ]
    assert holds({"d": "waiting for 1 upstream task"}) == []
