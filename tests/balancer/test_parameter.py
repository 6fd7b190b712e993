"""What a flow run's record keeps of its parameters, for its tasks to read
(balancer/parameter.py: record_fields)."""

from __future__ import annotations

import threading

from balancer.common import codec

from balancer.parameter import RECORDED_LIMIT, record_fields


def test_a_run_s_record_keeps_the_parameters_that_pack_and_not_big_ones() -> None:
    assert record_fields({}) == {}
    assert record_fields({"day": "mon"}) == {"params": codec.pack({"day": "mon"})}
    kept = record_fields({"day": "mon", "lock": threading.Lock(), "n": 2})
    assert codec.unpack(kept["params"]) == {"day": "mon", "n": 2}
    assert kept["params_cut"] == 1  # a cache keyed on them must not take these for all
    assert record_fields({"lock": threading.Lock()}) == {"params_cut": 1}
    assert record_fields({"rows": "x" * RECORDED_LIMIT}) == {"params_cut": 1}  # too big
