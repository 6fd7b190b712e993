"""Reading what the tasks recorded on the record Redis: the same watch for every system."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

import redis

POLL_S = 0.005


@dataclass(frozen=True)
class Record:
    tag: str
    start: float
    finish: float
    worker: int
    pid: int


def parse(raw: bytes) -> Record:
    tag, start, finish, worker, pid = raw.decode().split("|")
    return Record(tag, float(start), float(finish), int(worker), int(pid))


class Incomplete(TimeoutError):
    def __init__(self, key: str, got: int, want: int, timeout: float) -> None:
        super().__init__(f"{got} of {want} tasks recorded on {key} after {timeout:.0f}s")
        self.got = got


class Records:
    def __init__(self, url: str) -> None:
        self.client = redis.Redis.from_url(url, socket_timeout=60)

    @staticmethod
    def new_key(what: str) -> str:
        return f"rec:{what}:{uuid.uuid4().hex[:10]}"

    def count(self, key: str) -> int:
        return int(self.client.llen(key))

    def wait(self, key: str, n: int, timeout: float) -> list[Record]:
        """Poll until ``n`` records are on ``key``; Incomplete after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while (got := self.count(key)) < n:
            if time.monotonic() > deadline:
                raise Incomplete(key, got, n, timeout)
            time.sleep(POLL_S)
        return self.read(key)

    def read(self, key: str) -> list[Record]:
        return [parse(raw) for raw in self.client.lrange(key, 0, -1)]

    def pop(self, key: str, timeout: float) -> Record:
        """Block until one record arrives (BLPOP wakes at once)."""
        item = self.client.blpop([key], timeout=timeout)
        if item is None:
            raise Incomplete(key, 0, 1, timeout)
        return parse(item[1])

    def drain(self, key: str, timeout: float, most: int = 1000) -> list[Record]:
        """What is on ``key`` now, at least one record unless ``timeout`` passes first:
        BLPOP wakes at the first, then one LPOP takes up to ``most`` queued behind it."""
        item = self.client.blpop([key], timeout=timeout)
        if item is None:
            return []
        rest = self.client.lpop(key, most) or []
        return [parse(item[1]), *(parse(raw) for raw in rest)]

    def drop(self, key: str) -> None:
        self.client.delete(key)

    def close(self) -> None:
        self.client.close()
