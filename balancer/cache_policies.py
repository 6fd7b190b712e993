"""Prefect 3's ``prefect.cache_policies`` that mean the same here: ``INPUTS`` (a result is
reused by a later run with the same inputs: Prefect 1's ``all_inputs``) and ``NONE`` /
``NO_CACHE`` (never cached). Prefect's other policies key on things the cluster does not
keep (the task's source, the flow run id): given to ``@task`` they are refused, naming
what to write instead."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CachePolicy:
    name: str


INPUTS = CachePolicy("INPUTS")
NONE = CachePolicy("NONE")
NO_CACHE = NONE

__all__ = ["INPUTS", "NONE", "NO_CACHE", "CachePolicy"]
