"""The ACL rules of the three roles follow the code: every command a role's scripts may
call is granted, every script is some role's, and the README shows what `balancer acl`
prints."""

from __future__ import annotations

import re
from importlib import resources

from balancer.common import acl

from tests.conftest import ROOT

LUA = resources.files("balancer.common") / "lua"


def test_every_redis_call_in_the_scripts_names_its_command_literally() -> None:
    for path in LUA.iterdir():
        text = path.read_text()
        assert len(re.findall(r"redis\.p?call\(", text)) == len(acl._CALL.findall(text)), path


def test_every_script_is_run_by_some_role() -> None:
    scripts = {p.name[:-4] for p in LUA.iterdir() if p.name.endswith(".lua")} - {"_prelude"}
    assert scripts == {s for role in acl.ROLES.values() for s in role.scripts}


def test_script_commands_include_those_of_the_prelude_helpers_they_call() -> None:
    # dlq_purge calls fail_for_good, which calls flow_tasks_done and now_ms.
    assert {"ZREM", "HSET", "PEXPIRE", "RPUSH", "HINCRBY", "TIME"} <= acl.script_commands(
        "dlq_purge")
    assert "LTRIM" in acl.script_commands("heartbeat")  # signal_capped
    assert "LTRIM" not in acl.script_commands("assign")


def test_each_role_is_granted_what_its_scripts_call_and_no_admin_command() -> None:
    for role in acl.ROLES.values():
        granted = set(acl.commands(role))
        for script in role.scripts:
            assert acl.script_commands(script) <= granted, (role.name, script)
        assert not granted & {"FLUSHALL", "FLUSHDB", "KEYS", "SCAN", "CONFIG", "ACL", "DEBUG",
                              "SHUTDOWN", "SCRIPT", "FUNCTION"}, role.name


def test_rules_stay_inside_the_namespace_and_leave_passwords_alone() -> None:
    for role in acl.ROLES.values():
        rules = acl.rules(role, "a*b")
        patterns = [r for r in rules if "~" in r]
        assert patterns and all(r.split("~", 1)[1].startswith((r"{a\*b}:", r"{a\*b:*}:"))
                                for r in patterns)
        assert not any(r.startswith((">", "<", "#", "nopass", "reset")) and r != "resetkeys"
                       and r != "resetchannels" for r in rules)
    client = acl.rules(acl.ROLES["client"], "ns")
    assert "%R~{ns}:workers" in client and "~{ns}:workers" not in client
    assert [r for r in acl.rules(acl.ROLES["dispatcher"], "ns") if "~" in r] == [
        "~{ns}:*", "~{ns:*}:*"]


def test_every_role_reaches_the_same_keys_in_every_partition() -> None:
    """Partition p > 0 is the tag {ns:p} (common/keys.py): each pattern of partition 0 has
    its twin there, but the partition count, the protocol stamp, the concurrency limits
    (and their decay), the deployments, the variables and the artifacts' keys, which only
    partition 0 holds."""
    for role in acl.ROLES.values():
        patterns = [r.split("~", 1) for r in acl.rules(role, "ns") if "~" in r]
        first = {(kind, p[len("{ns}:"):]) for kind, p in patterns if p.startswith("{ns}:")}
        other = {(kind, p[len("{ns:*}:"):]) for kind, p in patterns
                 if p.startswith("{ns:*}:")}
        only_in_0 = {("%R", "partitions"), ("%R", "protocol"), ("", "concurrency:*"),
                     ("%R", "concurrency-limits"), ("%R", "concurrency-decay"),
                     ("", "deployments"),
                     ("", "deployment-runs:*"), ("", "deployment-due:*:*"),
                     ("", "variables"), ("", "artifacts")}
        assert first - other <= only_in_0, role.name
        assert other <= first


def test_the_readme_shows_what_balancer_acl_prints() -> None:
    readme = (ROOT / "README.md").read_text().splitlines()  # whole lines: one granting
    for line in acl.setuser_lines("balancer"):              # more must not pass
        assert line in readme, line
