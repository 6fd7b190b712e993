"""Task specs signed by clients and verified by workers (HMAC-SHA256), when keys are set.

Without signing, anyone who can write to Redis can make workers run any registered task
with any arguments (``importpath.TaskPolicy`` keeps it to registered tasks). With
``BALANCER_SIGNING_KEYS`` set, a client signs what a worker acts on, the spec of each task
(its id, flow, queue, timeout, function, name, dependents and arguments), and a worker
checks the signature before it imports anything: a spec written or altered by someone
without a key is quarantined, never run.

Several keys may be given, comma-separated, so that a key can be rotated: the first signs,
any verifies. Roll a new key out by putting it second on every worker, then first on the
clients, then drop the old one.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
from dataclasses import dataclass

from balancer.common import codec
from balancer.common.signals import Lease


def spec_message(task_id: str, flow: str, queue: str, timeout: float | None, fn: str,
                 name: str, children: bytes, args: bytes) -> bytes:
    """The bytes signed: every field of the lease a worker acts on, unambiguously packed
    (a field's bytes can never pass for the next one's)."""
    return codec.pack([task_id, flow, queue, None if timeout is None else float(timeout), fn,
                       name, children, args])


@dataclass(frozen=True)
class Signer:
    keys: tuple[bytes, ...]

    def __repr__(self) -> str:  # never show the keys
        return f"Signer({len(self.keys)} keys)"

    def sign(self, message: bytes) -> str:
        return hmac.new(self.keys[0], message, hashlib.sha256).hexdigest()

    def verify(self, message: bytes, sig: bytes | None) -> bool:
        """Whether ``sig`` was made over ``message`` with one of the keys."""
        if not sig:
            return False
        given = sig.decode(errors="replace")
        return any(hmac.compare_digest(hmac.new(key, message, hashlib.sha256).hexdigest(),
                                       given) for key in self.keys)

    def refusal(self, lease: Lease) -> str | None:
        """None when the lease's spec carries a signature made with one of the keys, else
        why it is refused."""
        if not lease.sig:
            return (f"task {lease.task_id} ({lease.fn}) carries no signature, and this worker"
                    " runs only tasks signed with one of its BALANCER_SIGNING_KEYS")
        message = spec_message(lease.task_id, lease.flow, lease.queue, lease.timeout,
                               lease.fn, lease.name, lease.children, lease.args)
        given = lease.sig.decode(errors="replace")
        for key in self.keys:
            if hmac.compare_digest(hmac.new(key, message, hashlib.sha256).hexdigest(), given):
                return None
        return (f"the signature of task {lease.task_id} ({lease.fn}) does not match its spec:"
                " it was written or changed by someone without a signing key")


@functools.lru_cache(maxsize=8)
def signer(secrets: str) -> Signer | None:
    """The signer for a comma-separated list of secrets (``Settings.signing_keys``, which
    checks them); None when there is none: nothing is signed or checked."""
    keys = tuple(s.strip().encode() for s in secrets.split(",") if s.strip())
    return Signer(keys) if keys else None
