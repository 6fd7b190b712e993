"""A script is sent with only the prelude helpers it reaches: what each EVALSHA runs is its
own code, not every helper's definition."""

from __future__ import annotations

import re
from importlib import resources

import redis
from balancer.common import luasource

SCRIPTS = sorted(p.name[:-4] for p in (resources.files("balancer.common") / "lua").iterdir()
                 if p.name.endswith(".lua") and not p.name.startswith("_"))


def test_a_script_gets_the_helpers_it_names_and_those_they_name_and_no_others() -> None:
    names = [d.name for d in luasource.used(luasource.lua("take"))]
    assert names == ["take_held"]
    heartbeat = [d.name for d in luasource.used(luasource.lua("heartbeat"))]
    assert "signal" in heartbeat and "signal_capped" in heartbeat  # signal calls it
    assert "lease_tasks" not in heartbeat


def test_every_name_of_the_prelude_a_sent_script_uses_is_defined_in_it() -> None:
    defined = {d.name for d in luasource.definitions()}
    for script in SCRIPTS:
        source = luasource.source(script)
        for name in defined:
            if re.search(rf"\b{name}\b", source):
                assert re.search(rf"^local (function )?{name}\b", source, re.MULTILINE), (
                    script, name)


def test_helpers_keep_the_prelude_order_so_each_is_defined_before_it_is_used() -> None:
    order = [d.name for d in luasource.definitions()]
    for script in SCRIPTS:
        names = [d.name for d in luasource.used(luasource.lua(script))]
        assert names == sorted(names, key=order.index), script


def test_every_script_compiles_on_a_real_redis(real: redis.Redis) -> None:
    for script in SCRIPTS:
        real.script_load(luasource.source(script))
