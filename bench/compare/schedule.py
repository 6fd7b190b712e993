"""Reference schedules with zero overhead, computed exactly by simulation."""

from __future__ import annotations

import heapq
import math
from collections.abc import Sequence


def list_schedule(durations: Sequence[float], slots: int) -> float:
    """Makespan when each task, in the given order, starts on the first slot to free up:
    what a perfect dispatcher that does not know durations achieves."""
    free = [0.0] * slots
    heapq.heapify(free)
    end = 0.0
    for d in durations:
        start = heapq.heappop(free)
        end = max(end, start + d)
        heapq.heappush(free, start + d)
    return end


def greedy(durations: Sequence[float], slots: int) -> float:
    """The zero-overhead greedy schedule in submission order."""
    return list_schedule(durations, slots)


def lpt(durations: Sequence[float], slots: int) -> float:
    """Longest processing time first."""
    return list_schedule(sorted(durations, reverse=True), slots)


def lower_bound(durations: Sequence[float], slots: int) -> float:
    """No schedule beats this: the longest task, the average load, and pigeonholes of equal
    tasks (k copies of the longest need ceil(k / slots) rounds)."""
    if not durations:
        return 0.0
    longest = max(durations)
    copies = sum(1 for d in durations if d == longest)
    return max(longest * math.ceil(copies / slots), sum(durations) / slots)

