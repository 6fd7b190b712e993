"""Sentinel and Cluster URLs: read, shown without secrets, refused when wrong, and turned
into the client that follows failovers."""

from __future__ import annotations

import pytest
import redis
from balancer.common import topology, urls
from balancer.common.connection import Direct, Unreachable, connect, reach
from balancer.common.settings import Settings, SettingsError
from redis.sentinel import SentinelConnectionPool


def test_a_sentinel_url_names_its_sentinels_service_database_and_both_passwords() -> None:
    url = ("redis+sentinel://app:p%40ss@10.0.0.1:26379,10.0.0.2,[::1]:26380/main/3"
           "?sentinel_username=sen&sentinel_password=spw&socket_timeout=2")
    top = topology.parse(url, urls.redact(url))
    assert top.kind == "sentinel" and not top.tls
    assert top.nodes == (("10.0.0.1", 26379), ("10.0.0.2", 26379), ("::1", 26380))
    assert (top.service, top.db, top.username, top.password) == ("main", 3, "app", "p@ss")
    assert (top.sentinel_username, top.sentinel_password) == ("sen", "spw")
    assert top.options == {"socket_timeout": 2.0}


def test_a_cluster_url_names_its_startup_nodes_and_takes_tls_options() -> None:
    url = "rediss+cluster://:pw@h1:7000,h2/0?ssl_cert_reqs=none&ssl_check_hostname=false"
    top = topology.parse(url, urls.redact(url))
    assert top.kind == "cluster" and top.tls
    assert top.nodes == (("h1", 7000), ("h2", 6379))
    assert (top.username, top.password, top.db) == (None, "pw", 0)
    assert top.options == {"ssl_cert_reqs": "none", "ssl_check_hostname": False}


@pytest.mark.parametrize(("url", "shown"), [
    ("redis+sentinel://u:pw-123@h1:26379,h2:26379/main/0?sentinel_password=spw-456",
     "redis+sentinel://u:***@h1:26379,h2:26379/main/0?sentinel_password=***"),
    ("rediss+cluster://:pw-123@h1:7000,h2:7001", "rediss+cluster://:***@h1:7000,h2:7001"),
])
def test_sentinel_and_cluster_urls_are_shown_without_their_passwords(url: str,
                                                                     shown: str) -> None:
    assert urls.redact(url) == shown
    assert {"pw-123"} <= urls.secrets(url)
    if "spw-456" in url:
        assert "spw-456" in urls.secrets(url)


@pytest.mark.parametrize(("url", "says"), [
    ("redis+sentinel://h1:26379", "names its master's service"),
    ("redis+sentinel://h1:26379/main/0/extra", "names its master's service"),
    ("redis+sentinel://h1:26379/main/x", "is no number"),
    ("redis+cluster://h1:7000/2", "database 0 only"),
    ("redis+cluster://h1:port", "is no HOST:PORT"),
    ("redis+cluster://h1:7000?sentinel_password=pw-123", "option of Sentinel URLs"),
    ("redis+sentinel://h1/main?ssl_ca_certs=/etc/hosts", "needs a TLS URL"),
    ("redis+sentinel://:pw-123@h1/main?no_such_option=1", "cannot take"),
])
def test_a_wrong_sentinel_or_cluster_url_is_refused_before_connecting(url: str,
                                                                      says: str) -> None:
    with pytest.raises(ValueError, match=says) as caught:
        connect(url)
    assert "pw-123" not in str(caught.value)
    with pytest.raises(Unreachable, match=says):
        reach(url)


def test_a_sentinel_client_finds_the_master_through_the_sentinels() -> None:
    client = connect("redis+sentinel://127.0.0.1:1/main/2")
    pool = client.connection_pool
    assert isinstance(pool, SentinelConnectionPool)
    assert pool.service_name == "main" and pool.connection_kwargs["db"] == 2


def test_no_sentinel_answering_is_one_clear_line() -> None:
    with pytest.raises(Unreachable, match=r"cannot reach Redis at redis\+sentinel://.*main"):
        reach("redis+sentinel://:pw-123@127.0.0.1:1/main")


def test_no_cluster_node_answering_is_one_clear_line() -> None:
    with pytest.raises(Unreachable, match=r"cannot reach Redis at redis\+cluster://:\*\*\*@"
                       ) as caught:
        reach("redis+cluster://:pw-123@127.0.0.1:1")
    assert "pw-123" not in str(caught.value)


def test_a_direct_connection_to_a_cluster_must_be_told_its_slot() -> None:
    with pytest.raises(ValueError, match="route"):
        Direct(_FakeCluster(), route=None)  # type: ignore[arg-type]


class _FakeCluster(redis.cluster.RedisCluster):
    """A RedisCluster made without connecting (only its type matters here)."""

    def __init__(self) -> None:  # no super().__init__: nothing is contacted
        pass


def test_min_replicas_must_be_a_count_and_its_timeout_positive() -> None:
    assert Settings.from_env({"BALANCER_MIN_REPLICAS": "1"}).min_replicas == 1
    with pytest.raises(SettingsError, match="min_replicas"):
        Settings.from_env({"BALANCER_MIN_REPLICAS": "-1"})
    with pytest.raises(SettingsError, match="replica_timeout"):
        Settings.from_env({"BALANCER_REPLICA_TIMEOUT": "0"})


def test_a_tls_sentinel_url_speaks_tls_to_the_master_and_to_the_sentinels() -> None:
    from redis.sentinel import SentinelManagedSSLConnection

    client = connect("rediss+sentinel://127.0.0.1:1/main?ssl_cert_reqs=none"
                     "&sentinel_password=spw-1234")
    pool = client.connection_pool
    assert isinstance(pool, SentinelConnectionPool)
    assert pool.connection_class is SentinelManagedSSLConnection
    assert pool.connection_kwargs["ssl_cert_reqs"] == "none"
    sentinels = pool.sentinel_manager.sentinels
    kwargs = sentinels[0].connection_pool.connection_kwargs
    assert sentinels[0].connection_pool.connection_class.__name__ == "SSLConnection"
    assert kwargs["password"] == "spw-1234" and kwargs["ssl_cert_reqs"] == "none"
    assert kwargs["socket_timeout"] == topology.SENTINEL_TIMEOUT


@pytest.mark.parametrize(("userinfo", "user", "password"), [
    ("app:pw", "app", "pw"), (":pw", None, "pw"), ("app", "app", None),
    ("a%3Ab:p%2Fw", "a:b", "p/w"),
])
def test_credentials_are_read_as_redis_py_reads_them_from_a_redis_url(
        userinfo: str, user: str | None, password: str | None) -> None:
    top = topology.parse(f"redis+cluster://{userinfo}@h:7000", "shown")
    assert (top.username, top.password) == (user, password)
    plain = redis.connection.parse_url(f"redis://{userinfo}@h:7000")
    assert (plain.get("username"), plain.get("password")) == (user, password)


def test_every_topology_scheme_passes_the_url_checks() -> None:
    assert set(topology.SCHEMES) <= set(urls.SCHEMES)
