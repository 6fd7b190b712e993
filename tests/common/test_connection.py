"""Direct: a thread's own connection for the calls on every task's path."""

from __future__ import annotations

import logging

import pytest
import redis
from balancer.common.connection import POOL_CAP, ByNode, Direct, connect
from balancer.common.keys import Keys
from balancer.common.scripts import Scripts
from redis.backoff import NoBackoff
from redis.retry import Retry

from bench.redis_servers import free_port


def test_a_note_sent_without_waiting_lands_before_the_next_call(
        real: redis.Redis, namespace: str) -> None:
    direct = Direct(real)
    key = f"{{{namespace}}}:note"
    direct.send("HSET", key, "0", "a b")
    direct.send("HDEL", key, "0")
    direct.send("HSET", key, "1", "c")
    # Replies read raw: plain ones, alike in every protocol version redis-py may speak.
    assert direct.call("HEXISTS", key, "0") == 0
    assert direct.call("HGET", key, "1") == b"c"


def test_a_refused_note_is_logged_and_the_next_call_gets_its_own_reply(
        real: redis.Redis, namespace: str, caplog: pytest.LogCaptureFixture) -> None:
    direct = Direct(real)
    key = f"{{{namespace}}}:note"
    real.set(key, "a string")
    with caplog.at_level(logging.ERROR):
        direct.send("HSET", key, "0", "x")  # WRONGTYPE
        assert direct.call("GET", key) == b"a string"
    assert "refused" in caplog.text


def test_several_commands_go_down_in_one_send_and_come_back_in_order(
        real: redis.Redis, namespace: str, monkeypatch: pytest.MonkeyPatch) -> None:
    direct = Direct(real)
    key = f"{{{namespace}}}:calls"
    direct.call("PING")  # connected
    conn = direct._connection()
    sent: list[list[bytes]] = []
    send = conn.send_packed_command
    monkeypatch.setattr(conn, "send_packed_command",
                        lambda command, check_health=True: (sent.append(list(command)),
                                                            send(command, check_health)))
    replies = direct.calls(("RPUSH", key, "a"), ("RPUSH", key, "b"), ("LRANGE", key, 0, -1))
    assert replies == [1, 2, [b"a", b"b"]]
    assert len(sent) == 1 and len(sent[0]) == 1  # one buffer: one system call, not three


def test_commands_sent_ahead_are_read_later_and_nothing_else_goes_down_meanwhile(
        real: redis.Redis, namespace: str) -> None:
    direct = Direct(real, read_timeout=5.0)
    key = f"{{{namespace}}}:ahead"
    # One send: the first reply now; the blocking pop's, once there is something to pop.
    assert direct.call_ahead(("RPUSH", key, "a"), ("BLPOP", f"{key}:2", 5),
                             ("LLEN", key)) == 1
    assert direct.owed
    with pytest.raises(RuntimeError, match="read_owed first"):
        direct.call("PING")  # its reply would be the pop's
    real.rpush(f"{key}:2", "x")
    assert direct.read_owed() == [[f"{key}:2".encode(), b"x"], 1]
    assert not direct.owed
    assert direct.call("PING") in (True, b"PONG")
    # An error reply comes back in its place; a lost connection takes the owed with it.
    assert isinstance(direct.call_ahead(("HGET", key, "f"), ("PING",)), redis.ResponseError)
    assert direct.read_owed() in ([True], [b"PONG"])
    direct.call_ahead(("PING",), ("BLPOP", f"{key}:3", 5))
    direct.close()
    assert not direct.owed
    with pytest.raises(redis.ConnectionError):
        direct.read_owed()


def test_a_transaction_is_written_whole_and_a_refused_command_is_raised(
        real: redis.Redis, namespace: str) -> None:
    keys = Keys(namespace)
    scripts = Scripts(real, keys)
    key = keys.flow("f")
    assert scripts.transaction([("HSET", key, "a", 1), ("HGET", key, "a")], "flow f") == [
        1, b"1"]
    real.set(keys.queue("q"), "a string")
    with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
        scripts.transaction([("HSET", key, "b", 2), ("ZADD", keys.queue("q"), 1, "t")],
                            "flow f")
    assert real.hget(key, "b") == b"2"  # a failure as it ran undoes nothing: the caller does
    with pytest.raises(redis.ResponseError):  # refused when queued: nothing runs
        scripts.transaction([("HSET", key, "c", 3), ("HSET", key)], "flow f")
    assert real.hget(key, "c") is None


def test_commands_by_node_come_back_in_order_with_an_error_reply_in_its_place(
        real: redis.Redis, namespace: str) -> None:
    keys = [f"{{{namespace}}}:a", f"{{{namespace}}}:b"]
    real.rpush(keys[0], "x")
    real.set(keys[1], "not a list")
    replies = ByNode(real).calls([(keys[0], ("LLEN", keys[0])), (keys[1], ("LLEN", keys[1])),
                                  (keys[0], ("LINDEX", keys[0], 0))])
    assert replies[0] == 1 and replies[2] == b"x"
    assert isinstance(replies[1], redis.ResponseError)


def test_commands_by_node_to_a_server_that_is_gone_come_back_as_its_failure() -> None:
    gone = redis.Redis(port=free_port(), socket_connect_timeout=2)
    replies = ByNode(gone).calls([("k", ("LLEN", "k")), ("j", ("LLEN", "j"))])
    assert all(isinstance(r, redis.ConnectionError) for r in replies)


def test_a_direct_reconnects_past_the_pools_connection_cap() -> None:
    """Each connection a Direct makes again is one of its own, not counted against the
    client's pool: redis-py counts made connections against ``max_connections`` (100 by
    default) until given back, and a Direct's never is, so the 101st reconnect (an outage,
    failovers) failed for good with MaxConnectionsError."""
    # Nothing listens there; each try to connect fails at once (no retries of redis-py's).
    client = redis.Redis(port=free_port(), max_connections=1, retry=Retry(NoBackoff(), 0))
    direct = Direct(client)
    for _ in range(5):  # an outage: every try to connect fails
        with pytest.raises(redis.ConnectionError) as failed:
            direct.call("PING")
        assert not isinstance(failed.value, redis.exceptions.MaxConnectionsError)


def test_directs_of_ended_calls_leave_the_pool_its_connections(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url, max_connections=3)
    for _ in range(10):  # a Direct per call or per thread, each ended in turn
        direct = Direct(client)
        assert direct.call("PING") == b"PONG"
        direct.close()
    assert client.ping()  # the pool's own connections are still there to be made


@pytest.mark.parametrize("url", ["redis://127.0.0.1:6379/0", "redis+sentinel://127.0.0.1:1/svc"])
def test_a_clients_pool_fits_wide_worker_unless_the_url_sets_its_cap(url: str) -> None:
    """redis-py 7 and 8 cap a pool at 100 connections by default, fewer than a thread-pool
    worker of more slots may have at once; Redis's own maxclients is the cap here, and a
    URL's max_connections still sets its own (connected lazily: nothing listens)."""
    assert connect(url).connection_pool.max_connections == POOL_CAP == 10_000
    assert connect(f"{url}?max_connections=7").connection_pool.max_connections == 7
