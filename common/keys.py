"""The one owner of Redis key names. Nothing else formats a key string.

Every key of a partition carries its hash tag so that all its keys share one slot:
multi-key Lua scripts then work unchanged on Redis Cluster. Partition 0 (the only one
unless ``balancer serve --partitions N``) is ``{namespace}``, as before partitions
existed; partition p > 0 is ``{namespace:p}`` (a colon, which a namespace may not hold, so
no namespace's partition 0 can be another's partition p), so Redis Cluster spreads the
partitions over its slots. Every key below exists once per partition, but for
``partitions``, kept in partition 0 only (common/partitions.py).

| key                  | type        | what                                                        |
| -------------------- | ----------- | ----------------------------------------------------------- |
| task:<id>            | hash        | spec (fn, args, options, children), state, deps, lease and  |
|                      |             | worker while running, lost (crashes), result or error, loop |
|                      |             | (a looping run's progress: worker/looping.py)               |
| flow:<id>            | hash        | name, tasks, state, total, remaining, failed, timestamps    |
| flow:<id>:done       | list        | gets the final state once; clients wait on it with BLMOVE   |
|                      |             | onto itself, so that every waiter sees it                   |
| flow:<id>:tasks      | list        | tasks (and sub-runs) a @flow function added to its open run,|
|                      |             | packed [id, name, kind] (balancer/dynamic.py)               |
| flow:<id>:resume     | list (PX)   | "token|input" of a resume of that paused run (pausing.py)   |
| flow:<id>:artifacts  | list (PX)   | ids of the artifacts made in that run (artifacts.py)       |
| artifact:<id>        | string (PX) | an artifact: kind, key, description, data, run ids (in the  |
|                      |             | partition of its flow run; partition 0 for one of no run)   |
| artifacts            | hash        | partition 0 only: artifact key -> the latest artifact's id  |
| flows                | zset        | recent flow runs by submit time                             |
| queue:<name>         | zset        | ready task ids; score = arrival ms - priority * aging ms    |
| queue-conf:<name>    | hash        | priority, concurrency_limit, paused                         |
| queues               | set         | names of every queue ever used                              |
| offer:<name>         | string      | up to 4 workers, best hosts first, a small submit may lease |
|                      |             | its tasks to itself while the queue is empty (signals.Offer)|
| backlog:<name>       | string (TTL)| set by the dispatcher while the queue holds tasks that no   |
|                      |             | worker has room for: a small submit that queues a task then |
|                      |             | wakes it not (the freed room will: balancer/dispatcher.py)  |
| inflight             | hash        | limited queue -> tasks leased and not yet acknowledged      |
| tag-limits           | hash        | tag -> most tasks with that tag leased at once (tags.py)    |
| tag-inflight         | hash        | tag -> leases counted against its limit, not yet ended (a   |
|                      |             | counted lease's task record holds "tagged": token|tags)     |
| worker:<id>          | hash (TTL)  | last full heartbeat: queues, capacity, load, host           |
| workers              | zset        | worker id -> last heartbeat, full or light (Redis time, ms) |
| inbox:<id>           | list        | "task|token|spec" leases not yet taken: the whole task spec |
|                      |             | travels with its lease (signals.parse_lease)                |
| leases:<id>          | set         | "task|token" per lease of that worker (inbox + running)     |
| fetched:<id>         | list        | an entry a blocking fetch moved out of the inbox, until     |
|                      |             | its lease is checked (the same round trip)                  |
| ahead:<id>           | hash        | pool child -> "task|token ..." of its batch, perhaps started|
| cancels:<id>         | list (TTL)  | "task|token" of leases that worker took and a cancel took   |
|                      |             | back: it stops them (worker/cancels.py)                     |
| delayed              | zset        | retrying task ids, score = when they are due (ms)           |
| deadlines            | zset        | "task|worker|token" of leases with a timeout, score = when  |
|                      |             | timeout + grace passes (ms)                                 |
| cascade              | list        | failed task ids whose dependents still need failing         |
| gate                 | zset        | gated task ids (maps, triggers) the dispatcher must decide  |
| dlq                  | zset        | quarantined task ids, score = when                          |
| aside                | hash        | bad entries the dispatcher set aside (common.aside), by id  |
| wake                 | list        | signals for the dispatcher (see common.signals)             |
| events               | stream      | what happened, capped (common.events: kinds and format)     |
| idle                 | string      | set while the dispatcher found every served queue empty     |
| leader               | string (PX) | "epoch|dispatcher id" of the dispatcher that may assign     |
| dispatchers          | zset        | dispatcher id -> last time it led or tried to (standbys)    |
| epoch                | counter     | bumped by every new leader                                  |
| partitions           | string      | partition 0 only: how many partitions the cluster has (P);  |
|                      |             | absent: 1. Set by `balancer serve --partitions N`           |
| protocol             | string      | partition 0 only: "<version>|<release>" of the dispatcher   |
|                      |             | leading it (common/protocol.py: Stamp); clients of another  |
|                      |             | version refuse to submit                                    |
| doorbell:<id>        | list        | in a worker's home partition (P > 1 only): partition numbers|
|                      |             | a dispatcher leased into that worker's inbox of             |
| schedules            | zset        | schedule id -> its next due time (ms, +inf once ended)      |
| schedule:<id>        | hash        | a schedule: clocks, the template of its runs (the records a |
|                      |             | submit writes), parameters, version, last run               |
| cache:<key>:<digest> | string (PX) | a cached task result (common.cache.Entry), by cache_key and |
|                      |             | inputs' digest ("any" under duration_only), for cache_for   |
| cache-index          | zset        | each cached result's key, digest and label (common.cache:   |
|                      |             | index_member) -> when it expires (ms): what `balancer cache |
|                      |             | ls/rm` read, with no SCAN                                   |
| concurrency-limits   | hash        | partition 0 only: name -> slots of that concurrency limit   |
|                      |             | (balancer/concurrency.py, Prefect's `concurrency`)          |
| concurrency-decay    | hash        | partition 0 only: name -> slots that limit frees per second |
|                      |             | from what `rate_limit` took (none: nothing decays)          |
| concurrency:<name>   | zset        | partition 0 only: "holder|occupy" -> when its lease ends;   |
|                      |             | "~holder|occupy" (rate_limit's) -> when they have decayed   |
| variables            | hash        | partition 0 only: name -> [value, tags], msgpack (Prefect's |
|                      |             | Variables: balancer/variables.py)                           |
| deployments          | hash        | partition 0 only: "<deployment>|<server id>" -> what that   |
|                      |             | serve process serves (balancer/serving.py), every 5 s       |
| deployment-runs:<n>  | list        | partition 0 only: runs asked of deployment n, not yet taken |
|                      |             | (balancer/deployments.py: run_deployment)                   |
| deployment-due:<n>:<ms>| string (PX)| partition 0 only: the serve process that fired that due   |
|                      |             | time of n's schedule (one of several serving it)            |
"""

from __future__ import annotations


class Keys:
    def __init__(self, namespace: str = "balancer", partition: int = 0) -> None:
        self.namespace = namespace
        self.partition = partition
        tag = namespace if partition == 0 else f"{namespace}:{partition}"
        self.prefix = "{" + tag + "}:"

    def of(self, partition: int) -> Keys:
        """The keys of another partition of the same namespace."""
        return self if partition == self.partition else Keys(self.namespace, partition)

    @classmethod
    def every_other_partition(cls, namespace: str) -> Keys:
        """Globs, not keys: every partition but 0 at once (prefix ``{namespace:*}:``), for
        ACL patterns (common/acl.py). No namespace's partition 0 matches: a namespace
        holds no colon."""
        keys = cls(namespace)
        keys.prefix = "{" + namespace + ":*}:"
        return keys

    def task(self, task_id: str) -> str:
        return f"{self.prefix}task:{task_id}"

    def flow(self, flow_id: str) -> str:
        return f"{self.prefix}flow:{flow_id}"

    def flow_done(self, flow_id: str) -> str:
        return f"{self.prefix}flow:{flow_id}:done"

    def flow_tasks(self, flow_id: str) -> str:
        return f"{self.prefix}flow:{flow_id}:tasks"

    def flow_resume(self, flow_id: str) -> str:
        return f"{self.prefix}flow:{flow_id}:resume"

    def flow_artifacts(self, flow_id: str) -> str:
        return f"{self.prefix}flow:{flow_id}:artifacts"

    def artifact(self, artifact_id: str) -> str:
        return f"{self.prefix}artifact:{artifact_id}"

    @property
    def artifacts(self) -> str:
        return f"{self.prefix}artifacts"

    def queue(self, name: str) -> str:
        return f"{self.prefix}queue:{name}"

    def offer(self, name: str) -> str:
        return f"{self.prefix}offer:{name}"

    def backlog(self, name: str) -> str:
        return f"{self.prefix}backlog:{name}"

    def queue_conf(self, name: str) -> str:
        return f"{self.prefix}queue-conf:{name}"

    def worker(self, worker_id: str) -> str:
        return f"{self.prefix}worker:{worker_id}"

    def inbox(self, worker_id: str) -> str:
        return f"{self.prefix}inbox:{worker_id}"

    def leases(self, worker_id: str) -> str:
        return f"{self.prefix}leases:{worker_id}"

    def fetched(self, worker_id: str) -> str:
        return f"{self.prefix}fetched:{worker_id}"

    def ahead(self, worker_id: str) -> str:
        return f"{self.prefix}ahead:{worker_id}"

    def cache(self, cache_key: str, digest: str = "*") -> str:
        return f"{self.prefix}cache:{cache_key}:{digest}"

    @property
    def cache_index(self) -> str:
        return f"{self.prefix}cache-index"

    def cancels(self, worker_id: str) -> str:
        return f"{self.prefix}cancels:{worker_id}"

    def doorbell(self, worker_id: str) -> str:
        return f"{self.prefix}doorbell:{worker_id}"

    def concurrency(self, name: str) -> str:
        return f"{self.prefix}concurrency:{name}"

    @property
    def concurrency_limits(self) -> str:
        return f"{self.prefix}concurrency-limits"

    @property
    def concurrency_decay(self) -> str:
        return f"{self.prefix}concurrency-decay"

    @property
    def variables(self) -> str:
        return f"{self.prefix}variables"

    @property
    def deployments(self) -> str:
        return f"{self.prefix}deployments"

    def deployment_runs(self, name: str) -> str:
        return f"{self.prefix}deployment-runs:{name}"

    def deployment_due(self, name: str, due_ms: int | str = "*") -> str:
        return f"{self.prefix}deployment-due:{name}:{due_ms}"

    def schedule(self, schedule_id: str) -> str:
        return f"{self.prefix}schedule:{schedule_id}"

    @property
    def schedules(self) -> str:
        return f"{self.prefix}schedules"

    @property
    def flows(self) -> str:
        return f"{self.prefix}flows"

    @property
    def queues(self) -> str:
        return f"{self.prefix}queues"

    @property
    def inflight(self) -> str:
        return f"{self.prefix}inflight"

    @property
    def tag_limits(self) -> str:
        return f"{self.prefix}tag-limits"

    @property
    def tag_inflight(self) -> str:
        return f"{self.prefix}tag-inflight"

    @property
    def workers(self) -> str:
        return f"{self.prefix}workers"

    @property
    def delayed(self) -> str:
        return f"{self.prefix}delayed"

    @property
    def deadlines(self) -> str:
        return f"{self.prefix}deadlines"

    @property
    def cascade(self) -> str:
        return f"{self.prefix}cascade"

    @property
    def gate(self) -> str:
        return f"{self.prefix}gate"

    @property
    def dlq(self) -> str:
        return f"{self.prefix}dlq"

    @property
    def aside(self) -> str:
        return f"{self.prefix}aside"

    @property
    def events(self) -> str:
        return f"{self.prefix}events"

    @property
    def wake(self) -> str:
        return f"{self.prefix}wake"

    @property
    def idle(self) -> str:
        return f"{self.prefix}idle"

    @property
    def leader(self) -> str:
        return f"{self.prefix}leader"

    @property
    def dispatchers(self) -> str:
        return f"{self.prefix}dispatchers"

    @property
    def epoch(self) -> str:
        return f"{self.prefix}epoch"

    @property
    def partitions(self) -> str:
        """Always partition 0's: the one place the count is read from."""
        return "{" + self.namespace + "}:partitions"

    @property
    def protocol(self) -> str:
        """Always partition 0's: the stamp of the dispatcher leading it."""
        return "{" + self.namespace + "}:protocol"
