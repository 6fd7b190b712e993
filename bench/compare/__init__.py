"""Side-by-side benchmark of our dispatcher against Celery, Dramatiq, RQ, arq and Huey.

Every system runs on a private ``redis-server`` of its own, on this machine, with the
same worker layout; every task records its start and finish on a separate record Redis,
which the harness watches, so completion is detected the same way for every system.

    python -m bench.compare.run [--quick] [--systems ours,celery,...] [--out bench/results]
"""
