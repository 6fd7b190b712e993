"""Trouble with data the dispatcher meets: found where the error it causes is caught,
never by checking every entry in advance, set aside (``balancer.setaside``) and logged once,
so that every other queue keeps flowing.

A queue member or queue name that is not UTF-8, or a queued task whose record is of the
wrong type, is moved out; a queue key of the wrong type is left alone and its queue
skipped (``DispatchState.skip``) until the next refresh; a worker whose own keys a lease
trips on is shunned (``DispatchState.shun``) until then; a queue setting that is not a
number reads as its default. Open conditions about a queue are kept in ``troubled``: no
standing offer involves that queue, whose key a small submit's script would trip on too.
"""

from __future__ import annotations

from typing import Any

import redis

from balancer.common import aside
from balancer.common.keys import Keys
from balancer.common.models import QueueConfig
from balancer.common.replies import as_bytes
from balancer.common.retry import error_message, is_outage
from balancer.dispatch_state import DispatchState
from balancer.setaside import SetAside

# The count a queue or tag gets when its count of leases is no number: as if far past any
# limit, so that none is passed while it cannot be read.
HELD = 2**31


class Troubles:
    def __init__(self, client: redis.Redis, keys: Keys, aside: SetAside,
                 state: DispatchState) -> None:
        self.client = client
        self.keys = keys
        self.aside = aside
        self.state = state
        self.troubled: dict[str, str] = {}  # open set-aside entry id -> its queue
        # Workers a lease failed for (their own keys, it seems): entry id.
        self.workers: dict[str, str] = {}
        self.bad_counts: dict[str, str] = {}  # entry id -> key: a count of leases no number

    def leased(self, worker_id: str, queue: str) -> None:
        """A lease of the queue to the worker succeeded: what was wrong with either is
        over."""
        if self.troubled:
            self.queue_reads(queue, leased=True)
        if self.workers and worker_id in self.workers:
            self.aside.clear(self.workers.pop(worker_id), f"worker={worker_id} leases again")

    def adopt(self, records: dict[bytes, bytes]) -> None:
        """Take over the set-aside records of an earlier leader: a queue it skipped for
        trouble is tried again, and its record cleared once it reads; a count of leases it
        found no number is cleared once it reads as one (it may have been fixed while no
        dispatcher ran)."""
        self.troubled, self.workers, self.bad_counts = {}, {}, {}
        self.state.skipped, self.state.shunned = set(), set()
        counts = (self.keys.inflight, self.keys.tag_inflight)
        for entry, record in self.aside.adopt(records):
            if record.kind == aside.BAD_CONFIG and record.key in counts and record.member:
                self.bad_counts[entry] = record.key
                self.aside.noted.add(entry)  # a condition left in place, as note() keeps
            elif record.queue and not record.member and record.kind != aside.BAD_CONFIG:
                self.troubled[entry] = record.queue

    def queue_list(self, members: set[bytes]) -> list[str]:
        """The queue names; one that is not UTF-8 names no queue a task could be in (and
        no key we could format): it is moved out of the list, set aside."""
        try:
            return [m.decode() for m in members]
        except UnicodeDecodeError:
            pass
        names = []
        for member in members:
            try:
                names.append(member.decode())
            except UnicodeDecodeError:
                self.aside.move(aside.UNREADABLE, self.keys.queues, "set", member,
                                "a queue name that is not UTF-8: taken out of the queue list")
        return names

    def worker_members(self, entries: list[tuple[bytes, float]]) -> list[tuple[str, float]]:
        """The registered workers (id, last heartbeat); a member that is not UTF-8 names
        no worker whose keys we could format (a worker's name is checked when it starts):
        it is moved out of ``workers``, set aside."""
        try:
            return [(m.decode(), score) for m, score in entries]
        except UnicodeDecodeError:
            pass
        workers = []
        for member, score in entries:
            try:
                workers.append((member.decode(), score))
            except UnicodeDecodeError:
                self.aside.move(aside.UNREADABLE, self.keys.workers, "zset", member,
                                "a worker name that is not UTF-8: taken out of the workers")
        return workers

    def queue_config(self, name: str, reply: dict[bytes, bytes] | Exception) -> QueueConfig:
        """A queue's config as read. A setting that is not a number stands at its default,
        reported while it lasts; an unreadable config (its key of the wrong type) is all
        defaults, and the queue gets no standing offer (a small submit reads the key)."""
        key = self.keys.queue_conf(name)
        entry = aside.entry_id(aside.BAD_CONFIG, key)
        if isinstance(reply, Exception):
            if is_outage(reply):
                raise reply
            self.troubled[self.aside.note(
                aside.BAD_CONFIG, key, f"unreadable ({error_message(reply)}): the queue runs"
                " with the default settings", queue=name)] = name
            return QueueConfig(name)
        config, problems = QueueConfig.parse(name, reply)
        if problems:
            self.aside.note(aside.BAD_CONFIG, key, "; ".join(problems), queue=name)
        elif entry in self.aside.noted:
            self.troubled.pop(entry, None)
            self.aside.clear(entry, f"queue={name} has a readable config again")
        return config

    def lease_counts(self, key: str, reply: Any, what: str) -> dict[str, int]:
        """The leases counted by queue (``inflight``) or by tag (``tag-inflight``), as read.
        A count a Redis writer made no number holds its queue or tag (HELD: a limit must not
        be passed while its count cannot be read), reported while it lasts; every other
        queue and tag goes on. A field that is not UTF-8 names nothing leased: left out."""
        counts: dict[str, int] = {}
        bad: set[str] = set()
        for name, value in self.ok(reply).items():
            try:
                field = name.decode()
            except UnicodeDecodeError:
                continue
            try:
                counts[field] = int(value)
            except ValueError:
                counts[field] = HELD
                bad.add(self.aside.note(
                    aside.BAD_CONFIG, key, f"{what}={field}: its count of leases is"
                    f" {aside.shown(value)!r}, not a number; no more of its tasks are leased"
                    f" until it is fixed (redis-cli HSET {key} {field} N, N the tasks of it"
                    f" leased now; HDEL if none)", member=name))
        for entry in [e for e, k in self.bad_counts.items() if k == key and e not in bad]:
            del self.bad_counts[entry]
            self.aside.clear(entry, f"its count of leases in {key} is a number again")
        self.bad_counts.update(dict.fromkeys(bad, key))
        return counts

    @staticmethod
    def ok(reply: Any) -> Any:
        """A pipeline's reply, raised if it is an error (of a key no queue owns)."""
        if isinstance(reply, Exception):
            raise reply
        return reply

    def read(self, queue: str, reply: list[tuple[bytes, float]] | Exception
              ) -> list[tuple[bytes, float]]:
        """A queue's head as read; on an error reply, nothing, and the queue skipped."""
        if isinstance(reply, Exception):
            self.queue_failed(queue, reply)
            return []
        if self.troubled:
            self.queue_reads(queue)
        return reply

    def queue_failed(self, queue: str, exc: Exception) -> None:
        """Reading or leasing a queue failed. An outage fails the step; an error about its
        data (its key is of the wrong type, which only an operator can fix: the key is left
        as it is) skips the queue until the next refresh, reported once while it lasts."""
        if is_outage(exc):
            raise exc
        key = self.keys.queue(queue)
        kind = aside.kind_of(exc) if isinstance(exc, redis.ResponseError) else aside.UNUSABLE
        found = as_bytes(self.client.type(key)).decode()  # once a refresh at most: skipped
        entry = self.aside.note(kind, key, f"{error_message(exc)} (the key is a {found}):"
                                f" queue={queue} is skipped until this is fixed; the key is"
                                " left as it is", queue=queue)
        self.troubled[entry] = queue
        self.state.skip(queue)

    def queue_reads(self, queue: str, leased: bool = False) -> None:
        """A troubled queue was read (or leased from) again: its trouble is over (a
        failed lease only once a lease succeeds)."""
        key = self.keys.queue(queue)
        for kind in (aside.WRONG_TYPE, aside.UNUSABLE) if leased else (aside.WRONG_TYPE,):
            entry = aside.entry_id(kind, key)
            if self.troubled.pop(entry, None) is not None:
                self.aside.clear(entry, f"queue={queue} is read again")

    def readable(self, queue: str, rows: list[tuple[bytes, float]], cleaned: set[str]
                  ) -> list[tuple[bytes, float]]:
        """The members that are task ids; the others (not UTF-8: no task could have such
        an id) are moved out of the queue, set aside with their score."""
        kept = []
        for member, score in rows:
            try:
                member.decode()
            except UnicodeDecodeError:
                self.aside.move(aside.UNREADABLE, self.keys.queue(queue), "zset", member,
                                "not a task id (not UTF-8): taken out of the queue", score,
                                queue)
                cleaned.add(queue)
                continue
            kept.append((member, score))
        return kept

    def assign_failed(self, worker_id: str, queue: str, batch: list[str],
                       exc: redis.ResponseError) -> None:
        """The lease script failed on data (WRONGTYPE from inside it, say). Find what is
        bad in one round trip, only now: the queue key, task records, or the worker's own
        keys, of the wrong type. Bad tasks are taken out of the queue (their records left
        as they are), set aside, and the rest is leased on the next round; a bad queue is
        skipped; otherwise the worker gets no lease until the next refresh, so that the
        other workers get the work."""
        key, inbox, leases = self.keys.queue(queue), self.keys.inbox(worker_id), \
            self.keys.leases(worker_id)
        pipe = self.client.pipeline(transaction=False)
        for k in (key, inbox, leases):
            pipe.type(k)
        pipe.zmscore(key, batch)
        for task_id in batch:
            pipe.type(self.keys.task(task_id))
        found, inbox_type, leases_type, scores, *types = pipe.execute(raise_on_error=False)
        if self.ok(found) not in (b"zset", b"none"):  # its ZMSCORE failed too
            self.queue_failed(queue, exc)
            return
        bad = [(t, s, self.ok(ty).decode()) for t, s, ty in zip(batch, self.ok(scores), types)
               if ty not in (b"hash", b"none")]
        for task_id, score, kind in bad:
            self.aside.move(aside.WRONG_TYPE, key, "zset", task_id.encode(),
                            f"its record {self.keys.task(task_id)} is a {kind}, not a hash:"
                            " the id was taken out of the queue, the record left as it is",
                            score, queue)
        if bad:
            self.state.retry_soon()  # the rest of the batch
            return
        inbox_type, leases_type = self.ok(inbox_type), self.ok(leases_type)
        wrong = inbox_type not in (b"list", b"none") or leases_type not in (b"set", b"none")
        entry = self.aside.note(
            aside.WRONG_TYPE if wrong else aside.UNUSABLE, inbox,
            f"leasing queue={queue} to worker={worker_id} failed: {error_message(exc)} (its"
            f" inbox is a {inbox_type.decode()}, its leases a {leases_type.decode()}): the"
            " worker gets no work until this is fixed; its keys are left as they are")
        self.workers[worker_id] = entry
        self.state.shun(worker_id)
