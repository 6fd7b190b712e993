"""A task that reads and sets Variables on its worker (balancer/variables.py)."""

from __future__ import annotations

from balancer import task
from balancer.variables import Variable


@task
def greet(who: str) -> str:
    greeting = Variable.get("greeting", default="hello")
    Variable.set("last-greeted", who, overwrite=True)
    return f"{greeting}, {who}"
