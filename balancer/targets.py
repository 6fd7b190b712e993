"""Prefect 1's result targets: ``@task(target="{task_name}/{today}", checkpoint=True,
result=LocalResult(dir=...))`` runs the task only when nothing is stored at its target
yet; otherwise the run completes with what is stored there, without running.

Here a target is a cache key: the template is rendered on the worker before each run, as
Prefect 1 renders it, with the flow run's parameters, then Prefect 1's context
(``task_name``, ``today``, ``flow_name``, ``map_index``, ``parameters``, ...), then the
task's inputs by name, each over the one before. The rendered target names the cache
entry (balancer/caching.py), which holds the result in Redis, not in a file or a bucket
(``result=`` is taken and changes nothing), and lives until deleted (``cache_for`` at its
longest). The template is code of the task's module, which the worker imports: it never
travels with the call.
"""

from __future__ import annotations

import string
from collections.abc import Callable
from typing import Any


class Target:
    """The cache key function a target stands for (``CacheKeyFnPolicy``)."""

    def __init__(self, template: str | Callable[..., str], owner: str) -> None:
        if not (isinstance(template, str) and template.strip()) and not callable(template):
            raise ValueError(f"{owner}: target must be a non-empty template string"
                             f" ('{{task_name}}-{{today}}') or a function of the context's"
                             f" and the inputs' values by name, got {template!r}")
        self.template = template
        # The names a template uses: only those are read from the run's context (some are
        # read from Redis when first asked for).
        self.names = (None if callable(template) else
                      {field.split(".")[0].split("[")[0]
                       for _, field, _, _ in string.Formatter().parse(template) if field})

    def __call__(self, context: Any, parameters: dict[str, Any]) -> str:
        from balancer.runcontext import KEYS
        from balancer.runcontext import context as run

        wanted = KEYS if self.names is None else [k for k in KEYS if k in self.names]
        known = {key: run[key] for key in wanted if key != "logger"}
        unplaced = self.names is None or self.names - set(KEYS) - set(parameters)
        flow_parameters = (run["parameters"] or {}) if unplaced else {}
        values = {**flow_parameters, **known, **parameters}
        if callable(self.template):
            return str(self.template(**values))
        return self.template.format(**values)

    def __repr__(self) -> str:
        return f"target {self.template!r}"
