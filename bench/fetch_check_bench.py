"""What the lease check behind an idle slot's blocking fetch costs the task waiting for it:
take.lua against the same check as plain commands (docs/scaling.md).

A fetcher process blocks in BLMOVE on a worker's inbox, its check sent right behind it
(``--mode script``: take.lua, as ``Scripts.take_command``; ``plain``: the entry out of
fetched, the worker's leases (one here), the inbox's length, as
``Scripts.take_one_commands``), then
says it waits. This process pushes an entry (RPUSH) and times its own round trip; the
fetcher stamps when it has read every reply. Blocks of each mode alternate, so that the
machine's drift falls on both. Per mode, medians in us: from the push's send to the
fetcher holding the checked entry, and the pusher's round trip (a submit waits for that
one: Redis answers the fetch before it).

    python bench/fetch_check_bench.py [--fetches N] [--blocks B] [--json PATH]

It prints figures and never asserts speed. Keys go under a namespace of its own, deleted
at the end.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import redis  # noqa: E402
from balancer.common.keys import Keys  # noqa: E402
from balancer.common.scripts import Scripts  # noqa: E402

from bench.cluster_bench import drop_namespace  # noqa: E402

WORKER = "w"
TOKEN = "1.1.1"
PAUSE_S = 0.0003  # after the fetcher says it waits: its BLMOVE has reached Redis
MODES = ("script", "plain")


def entry(task_id: str) -> bytes:
    """An inbox entry as the scripts write one: id|token| then length-prefixed fields."""
    fields = [b"q", b"f", b"", b"bench.tasks:noop", b"noop", b"", b"\x92\x90\x80"]
    return f"{task_id}|{TOKEN}|".encode() + b"".join(b"%d:%s" % (len(f), f) for f in fields)


def fetcher(url: str, namespace: str, mode: str, n: int) -> int:
    """Fetch ``n`` entries as an idle slot does, saying "r" before each wait; then print
    the wall time each one was held, checked (a JSON list)."""
    client = redis.Redis.from_url(url)
    keys, scripts = Keys(namespace), Scripts(client, Keys(namespace))
    conn = client.connection_pool.make_connection()
    block = ("BLMOVE", keys.inbox(WORKER), keys.fetched(WORKER), "LEFT", "RIGHT", 30)
    check: tuple[tuple[Any, ...], ...] = (
        (scripts.take_command(WORKER, 1),) if mode == "script"
        else scripts.take_one_commands(WORKER))
    held = []
    for _ in range(n):
        conn.send_packed_command(conn.pack_commands([block, *check]))
        print("r", flush=True)
        replies = [conn.read_response() for _ in range(1 + len(check))]
        held.append(time.time())
        taken = (scripts.taken(WORKER, replies[1])[0] if mode == "script"
                 else scripts.taken_one(WORKER, replies[1:])[0])
        assert len(taken) == 1, replies
    print(json.dumps(held), flush=True)
    return 0


def block_of(url: str, namespace: str, mode: str, n: int) -> tuple[list[float], list[float]]:
    """``n`` pushes to a fetcher in ``mode``: (push to checked entry, pusher's round trip),
    in us."""
    client = redis.Redis.from_url(url)
    proc = subprocess.Popen([sys.executable, __file__, "--fetcher", mode, "--url", url,
                             "--namespace", namespace, "--fetches", str(n)],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    keys = Keys(namespace)
    client.sadd(keys.leases(WORKER), f"t|{TOKEN}")  # one lease held, as an idle 1-slot worker
    sent, replied = [], []
    try:
        for _ in range(n):
            if proc.stdout.readline().strip() != "r":
                raise RuntimeError(f"the fetcher ({mode}) stopped; exit {proc.poll()}")
            time.sleep(PAUSE_S)
            a = time.time()
            client.rpush(keys.inbox(WORKER), entry("t"))
            sent.append(a)
            replied.append(time.time())
        held = json.loads(proc.stdout.readline())
    finally:
        proc.wait(30)
    return ([(h - s) * 1e6 for h, s in zip(held, sent)],
            [(r - s) * 1e6 for r, s in zip(replied, sent)])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--redis-url", "--url", dest="url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--fetches", type=int, default=1000, help="per block")
    parser.add_argument("--blocks", type=int, default=3, help="blocks of each mode")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--fetcher", choices=MODES, help=argparse.SUPPRESS)
    parser.add_argument("--namespace", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.fetcher:
        return fetcher(args.url, args.namespace, args.fetcher, args.fetches)
    if min(args.fetches, args.blocks) < 1:
        parser.error("--fetches and --blocks must be at least 1")
    namespace = f"bench-{uuid.uuid4().hex[:10]}"
    client = redis.Redis.from_url(args.url)
    Scripts(client, Keys(namespace)).take_counted(WORKER, 1)  # take.lua in Redis's cache
    figures: dict[str, dict[str, list[float]]] = {m: {"held": [], "pusher": []} for m in MODES}
    try:
        for b in range(args.blocks):
            for mode in MODES if b % 2 == 0 else MODES[::-1]:
                held, pusher = block_of(args.url, namespace, mode, args.fetches)
                figures[mode]["held"] += held[len(held) // 10:]  # the first warm up
                figures[mode]["pusher"] += pusher[len(pusher) // 10:]
    finally:
        drop_namespace(client, namespace)
    medians = {m: {k: statistics.median(v) for k, v in f.items()} for m, f in figures.items()}
    for mode in MODES:
        print(f"{mode:>6}: push to checked entry {medians[mode]['held']:.0f} us,"
              f" pusher's round trip {medians[mode]['pusher']:.0f} us")
    print("plain / script: entry {:.2f}, pusher {:.2f}".format(
        medians["plain"]["held"] / medians["script"]["held"],
        medians["plain"]["pusher"] / medians["script"]["pusher"]))
    if args.json:
        args.json.write_text(json.dumps({"medians": medians, "fetches": args.fetches,
                                         "blocks": args.blocks}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
