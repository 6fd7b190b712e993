"""Variables as Prefect 3 offers them (balancer/variables.py), on fakeredis: what is kept,
what is refused, and which cluster code reaches for from where it runs."""

from __future__ import annotations

import asyncio

import pytest
import redis
from balancer.common import codec
from balancer.common.keys import Keys

from balancer.runcontext import RunFacts, bound
from balancer.variables import VALUE_LIMIT, Variable, VariableError, variables


def test_a_variable_is_set_read_and_unset(fake: redis.Redis) -> None:
    where = {"client": fake, "namespace": "ns"}
    assert Variable.get("answer", **where) is None
    assert Variable.get("answer", default=7, **where) == 7
    assert Variable.set("answer", {"n": [4, 2]}, tags=["math"], **where) == {"n": [4, 2]}
    assert Variable.get("answer", **where) == {"n": [4, 2]}
    with pytest.raises(VariableError, match=r"Variable 'answer' already exists\. Use"):
        Variable.set("answer", 1, **where)
    Variable.set("answer", 42, overwrite=True, **where)
    assert [(v.name, v.value, v.tags) for v in variables(**where)] == [("answer", 42, ())]
    assert Variable.unset("answer", **where) and not Variable.unset("answer", **where)


def test_async_code_has_the_same_calls(fake: redis.Redis) -> None:
    async def main() -> object:
        await Variable.aset("mode", "fast", client=fake, namespace="ns")
        value = await Variable.aget("mode", client=fake, namespace="ns")
        await Variable.aunset("mode", client=fake, namespace="ns")
        return value

    assert asyncio.run(main()) == "fast"


@pytest.mark.parametrize("name", ["Upper", "a b", "", "x" * 256, "dots.no", 3])
def test_names_are_prefect_s(fake: redis.Redis, name: object) -> None:
    with pytest.raises(VariableError, match="1 to 255 lowercase letters"):
        Variable.set(name, 1, client=fake, namespace="ns")  # type: ignore[arg-type]


def test_values_must_pack_and_stay_small(fake: redis.Redis) -> None:
    with pytest.raises(VariableError, match="must travel as msgpack"):
        Variable.set("lock", object(), client=fake, namespace="ns")
    with pytest.raises(VariableError, match=f"over the limit of {VALUE_LIMIT}"):
        Variable.set("big", "x" * VALUE_LIMIT, client=fake, namespace="ns")
    with pytest.raises(VariableError, match="tags must be non-empty strings"):
        Variable.set("t", 1, tags=[1], client=fake, namespace="ns")


def test_what_the_cluster_did_not_write_is_named_not_returned(fake: redis.Redis) -> None:
    fake.hset(Keys("ns").variables, "planted", b"\xc1")
    with pytest.raises(VariableError, match="holds something this cluster did not write"):
        Variable.get("planted", client=fake, namespace="ns")
    [shown] = variables(client=fake, namespace="ns")
    assert "did not write" in shown.value


def test_in_a_task_run_a_variable_is_read_on_its_worker_s_cluster(fake: redis.Redis) -> None:
    fake.hset(Keys("workers-ns").variables, "region", codec.pack(["eu", []]))
    facts = RunFacts("t1", "task", "f1", "default", "w1", client=fake,
                     namespace="workers-ns")
    with bound(facts):
        assert Variable.get("region") == "eu"
