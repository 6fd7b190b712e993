"""common.keys owns every Redis key name: all carry the hash tag, and no other module
formats one (STYLE.md, lesson 1)."""

from __future__ import annotations

import ast
import inspect
import re
from pathlib import Path

import pytest
from balancer.common.keys import Keys

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("balancer", "worker", "common")
EXEMPT = {ROOT / "common" / "keys.py"}

# A key segment right after the start of a string (just after the quote) or after a
# formatted `{...}` field: "task:", f"{prefix}queue:{name}", "{ns}:inbox:" ... A colon
# followed by a space is prose ("leader: "), not a key.
KEY_SEGMENT = re.compile(r"(?:^|[}:])(?:task|flow|queue|queue-conf|offer|inbox|leases|worker"
                         r"|schedule)"
                         r":(?=\S|$)")
# The hash-tag prefix built by hand: "{" + namespace, or f"{{{namespace}}}:".
HASH_TAG_OPEN = re.compile(r"\{$")
HASH_TAG_CLOSE = re.compile(r"^\}:")

ID_ARGS = {"task_id": "t1", "flow_id": "f1", "name": "q1", "worker_id": "w1",
           "schedule_id": "s1", "cache_key": "ck", "digest": "d1", "due_ms": 1000,
           "artifact_id": "a1"}


def _every_key(keys: Keys) -> dict[str, str]:
    """Call every key method and read every key property of ``keys``."""
    found: dict[str, str] = {}
    for name, member in inspect.getmembers(Keys):
        if name.startswith("_") or name == "of":  # of: the keys of another partition
            continue
        if isinstance(member, property):
            found[name] = getattr(keys, name)
        elif inspect.isfunction(member):
            params = list(inspect.signature(member).parameters)[1:]
            found[name] = getattr(keys, name)(*(ID_ARGS[p] for p in params))
    return found


def test_every_key_is_found_by_the_enumeration() -> None:
    found = _every_key(Keys("ns"))
    assert set(found) == {
        "task", "flow", "flow_done", "flow_tasks", "queue", "queue_conf", "offer", "backlog",
        "worker",
        "inbox", "leases", "fetched", "ahead", "cancels", "cache", "cache_index",
        "flows", "queues", "inflight", "workers", "delayed", "deadlines", "cascade", "dlq",
        "aside", "wake", "idle", "leader", "epoch", "gate", "events", "dispatchers",
        "schedule", "schedules", "tag_limits", "tag_inflight", "doorbell", "partitions",
        "protocol", "concurrency", "concurrency_limits", "concurrency_decay", "deployments",
        "deployment_runs",
        "deployment_due", "variables", "flow_artifacts", "artifact", "artifacts",
        "flow_resume",
    }


@pytest.mark.parametrize("namespace", ["balancer", "t-1234", "prod.eu"])
def test_every_key_starts_with_the_namespace_hash_tag(namespace: str) -> None:
    for name, key in _every_key(Keys(namespace)).items():
        assert key.startswith("{" + namespace + "}:"), name


def test_keys_are_distinct() -> None:
    found = _every_key(Keys("ns"))
    assert len(set(found.values())) == len(found)


def test_keys_of_different_namespaces_never_collide() -> None:
    a, b = _every_key(Keys("a")), _every_key(Keys("b"))
    assert not set(a.values()) & set(b.values())


def test_partition_0_keeps_the_namespace_tag_and_others_have_their_own() -> None:
    assert Keys("ns", 0).task("t") == Keys("ns").task("t") == "{ns}:task:t"
    assert Keys("ns", 2).task("t") == "{ns:2}:task:t"
    for p in (1, 2, 15):
        for name, key in _every_key(Keys("ns", p)).items():
            if name not in ("partitions", "protocol"):
                assert key.startswith("{ns:" + str(p) + "}:"), name


def test_the_partition_count_and_protocol_keys_are_partition_0s_in_every_partition() -> None:
    assert {Keys("ns", p).partitions for p in range(4)} == {"{ns}:partitions"}
    assert {Keys("ns", p).protocol for p in range(4)} == {"{ns}:protocol"}


@pytest.mark.parametrize("namespace", ["ns", "prod.eu", "a-1"])
def test_no_partition_of_a_namespace_shares_a_key_with_another_namespace(
        namespace: str) -> None:
    # A namespace may hold dots and dashes but never a colon: "{ns:1}" is nobody's tag.
    ours = {k for p in range(3) for k in _every_key(Keys(namespace, p)).values()}
    for other in (f"{namespace}.1", f"{namespace}-1", f"{namespace}1"):
        assert not ours & set(_every_key(Keys(other)).values())
    only_0 = {Keys(namespace).partitions, Keys(namespace).protocol}
    per_partition = [set(_every_key(Keys(namespace, p)).values()) - only_0 for p in range(3)]
    assert not per_partition[0] & per_partition[1] and not per_partition[1] & per_partition[2]


def test_keys_of_another_partition_share_the_namespace() -> None:
    keys = Keys("ns", 1)
    assert keys.of(1) is keys
    assert keys.of(0).prefix == "{ns}:" and keys.of(3).prefix == "{ns:3}:"


def test_default_namespace_is_balancer() -> None:
    assert Keys().task("x") == "{balancer}:task:x"


def test_id_keys_embed_the_id() -> None:
    k = Keys("ns")
    assert k.task("abc") == "{ns}:task:abc"
    assert k.flow_done("f") == "{ns}:flow:f:done"
    assert k.queue_conf("high") == "{ns}:queue-conf:high"
    assert k.inbox("w") == "{ns}:inbox:w"


# -- no key is formatted outside common/keys.py ------------------------------------------


def _docstrings(tree: ast.AST) -> set[int]:
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                ids.add(id(body[0].value))
    return ids


def key_literals(source: str) -> list[tuple[int, str]]:
    """(line, text) of every string literal in ``source`` that formats a Redis key."""
    tree = ast.parse(source)
    skip = _docstrings(tree)
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Constant) or not isinstance(node.value, str):
            continue
        if id(node) in skip:
            continue
        text = node.value
        if KEY_SEGMENT.search(text) or HASH_TAG_OPEN.search(text) or HASH_TAG_CLOSE.search(text):
            found.append((node.lineno, text))
    return found


@pytest.mark.parametrize(
    "source",
    [
        'k = f"{ns}:task:{task_id}"',
        'k = "{" + ns + "}:queue:" + name',
        'k = f"{{{ns}}}:inbox:{w}"',
        'k = "task:" + task_id',
        "k = 'leases:%s' % w",
        'k = prefix + "worker:" + w',
        'k = f"{ns}:flow:{f}:done"',
        'k = f"{{{ns}}}:workers"',
    ],
)
def test_key_literal_scan_catches_hand_made_keys(source: str) -> None:
    assert key_literals(source)


@pytest.mark.parametrize(
    "source",
    [
        'SIGNAL = "h|"',
        'x = "a|" + worker',
        'log.info("task %s done", t)',
        'raise ValueError(f"task {name!r}: retries must be >= 0")',
        'msg = f"queue {q!r} is paused"',
        'def f():\n    """Reads task:<id> and queue:<name>."""',
        'fields = ("state", "worker", "queue")',
        'line = "leader: " + token',
        'line = f"worker: {w} queue: {q}"',
    ],
)
def test_key_literal_scan_ignores_signals_messages_and_docstrings(source: str) -> None:
    assert key_literals(source) == []


def _python_files() -> list[Path]:
    files = [p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))]
    return [p for p in files if p not in EXEMPT]


def test_the_scan_covers_every_package() -> None:
    files = _python_files()
    assert {p.relative_to(ROOT).parts[0] for p in files} == set(PACKAGES)
    assert ROOT / "balancer" / "submit.py" in files
    assert ROOT / "common" / "keys.py" not in files


def test_no_module_but_common_keys_formats_a_key() -> None:
    offenders = [
        f"{path.relative_to(ROOT)}:{line}: {text!r}"
        for path in _python_files()
        for line, text in key_literals(path.read_text())
    ]
    assert offenders == [], "format keys only in common/keys.py:\n" + "\n".join(offenders)


def test_common_keys_itself_is_caught_by_the_scan() -> None:
    # The one module allowed to format keys does so in a way the scan recognises.
    assert key_literals((ROOT / "common" / "keys.py").read_text())
