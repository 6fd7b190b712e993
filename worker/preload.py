"""What the forkserver of a process pool imports once, before it forks the pool's children
(``worker.childwatch.pool_context``): the child's code and the worker's task modules
(``child.preload_imports``), whose memory every child then shares with it instead of
importing everything again (a spawned child holds 29 MB of its own, a forked one 9).
Imported there alone, for these side effects.

The forkserver is forked from the supervisor (``worker.zygote``), and holds what the
supervisor imported. Where multiprocessing starts it as a new interpreter instead, the
worker's command line is imported here too: multiprocessing runs the main module of the
process that starts a child again in the child (as ``__mp_main__``, for what a
``__main__`` function pickled would need); the worker's main module is its command
(``worker start``, ``python -m balancer.worker.cli``), and what that imports (click, the
supervisor's modules: 40 modules) each child imported anew, its own copy. Imported once
here, they are shared, and the child's run of its main module finds them imported: a
worker of 4 slots holds 112 MB of PSS instead of 122 (``python bench/preload_bench.py
--slots 4 --payload-mb 0``, before and after). A child forked from a forked forkserver
finds its main module in place and runs nothing again.

The forkserver ignores SIGTERM, as the children do. systemd (KillMode=control-group) and
`timeout` signal every process of the worker: a forkserver killed by it would take every
child with it (their PR_SET_PDEATHSIG follows their parent), running tasks included,
before the supervisor's grace period. It ends when its supervisor does, its "alive" pipe
closed (each child closes the copy multiprocessing hands it: worker.child). It ignores
ctrl-C on its own.

Its objects are frozen out of the collector's reach (``gc.freeze``): a collection in a
child would otherwise write to every shared page that holds one, and the child would own
a copy of it.
"""

import gc
import signal
import sys

import redis.utils

signal.signal(signal.SIGTERM, signal.SIG_IGN)

from balancer.worker import child  # noqa: E402

_main = sys.modules["__main__"]
if ("balancer.worker.cli" not in sys.modules  # a forkserver forked from it has it
        and getattr(_main.__spec__, "name", None) != "balancer.worker.cli"):  # or as this
    import balancer.worker.cli  # noqa: F401
    # Out of sys.modules again, what it imported staying: runpy warns (a RuntimeWarning
    # in every child's log) when the module it runs as __mp_main__ (``python -m
    # balancer.worker.cli``) is imported already.
    del sys.modules["balancer.worker.cli"]

# What each child does as it first connects, done once here: redis-py reads its own
# version from its package's metadata for every connection's CLIENT SETINFO (redis-py
# 8.2 caches it, 8.1 reads it each time), and a connection to a host name imports the
# IDNA codec. In each child that was 1.4 MB of its own (4 slots: 107 MB of PSS for the
# worker instead of 112).
version = getattr(redis.utils, "get_lib_version", None)
if version is not None:
    version()
import encodings.idna  # noqa: E402,F401

child.preload_imports()
gc.freeze()
