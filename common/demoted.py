"""Connections of a plain ``redis://`` URL that leave a server once it is a replica.

Managed Redis services (and Redis's own ``FAILOVER`` command) fail over behind one
address: the old master becomes a replica of the new one, and the name (DNS) moves to the
new one. A connection still open to the old master is answered READONLY at every write,
and UNBLOCKED in a blocking read, for as long as it stays open, and redis-py's plain
connection never closes it: every process went on retrying against the replica (the
dispatcher "refusing commands", workers unable to beat, every submit refused) until it was
restarted. As redis-py's ``SentinelManagedConnection`` does behind Sentinel, such a reply
closes the connection and raises ``Demoted``, a lost connection to every caller (which
waits those out and tries again): the next connection resolves the name anew, and finds
the new master. Nothing ran: a replica refuses a write before it is made, a script's at
its first write.

A URL that names a replica on purpose gets the same: every write fails as a lost
connection, with a message that says why.
"""

from __future__ import annotations

from typing import Any, NoReturn

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

# What Redis answers a client blocked on a server that turns into a replica (its own
# words, which redis-py 8.2 names DEMOTED_MASTER_UNBLOCKED_ERROR: older releases, which
# pip picks on Python 3.10, do not have the name).
DEMOTED_MASTER_UNBLOCKED_ERROR = (
    "UNBLOCKED force unblock from blocking operation, instance state changed")


class Demoted(redis.ConnectionError):
    """The server answered as a read-only replica: the connection was closed, to connect
    anew (a failover demoted the master this connection was made to)."""


class _LeavesReplica:
    """Closes the connection on a reply that says the server is a replica now."""

    def read_response(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().read_response(*args, **kwargs)  # type: ignore[misc]
        except redis.ReadOnlyError as exc:
            self._leave(exc)
        except redis.ResponseError as exc:
            if str(exc).startswith(DEMOTED_MASTER_UNBLOCKED_ERROR):
                self._leave(exc)
            raise

    def _leave(self, exc: redis.ResponseError) -> NoReturn:
        self.disconnect()  # type: ignore[attr-defined]
        raise Demoted(f"the server is a read-only replica now (a failover demoted it, or"
                      f" the URL names a replica); connecting again: {exc}") from exc


class Connection(_LeavesReplica, redis.Connection):
    pass


class SSLConnection(_LeavesReplica, redis.SSLConnection):
    pass


class UnixDomainSocketConnection(_LeavesReplica, redis.UnixDomainSocketConnection):
    pass


_OWN: dict[type[Any], type[Any]] = {
    redis.Connection: Connection, redis.SSLConnection: SSLConnection,
    redis.UnixDomainSocketConnection: UnixDomainSocketConnection}


def retry() -> Retry:
    """redis-py's retry for a client's commands: once, at once, after ``Demoted`` alone
    (nothing ran; the new connection finds the new master). Any other failure is the
    caller's to wait out, as before."""
    return Retry(NoBackoff(), 1, supported_errors=(Demoted,))


def leave_replicas(client: redis.Redis) -> None:
    """Have the connections ``client`` makes from now on leave a demoted server (the
    class redis-py chose from the URL's scheme, made to)."""
    pool = client.connection_pool
    pool.connection_class = _OWN.get(pool.connection_class, pool.connection_class)
