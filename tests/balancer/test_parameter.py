"""What a flow run's record keeps of its parameters, for its tasks to read
(balancer/parameter.py: recorded)."""

from __future__ import annotations

import threading

from balancer.common import codec

from balancer.parameter import RECORDED_LIMIT, recorded


def test_a_run_s_record_keeps_the_parameters_that_pack_and_not_big_ones() -> None:
    assert recorded({}) is None
    kept = recorded({"day": "mon", "lock": threading.Lock(), "n": 2})
    assert kept is not None and codec.unpack(kept) == {"day": "mon", "n": 2}
    assert recorded({"lock": threading.Lock()}) is None
    assert recorded({"rows": "x" * RECORDED_LIMIT}) is None  # too big to copy in
