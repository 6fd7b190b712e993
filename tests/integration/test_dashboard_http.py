"""The dashboard's HTTP surface on a real Redis: read-only without a token, actions only by
POST with the token, refused host names, escaped data, the static files shipped."""

from __future__ import annotations

import http.client
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from balancer.common.keys import Keys
from balancer.common.settings import Settings

from balancer import Flow, flow
from balancer.dashboard import actions
from balancer.dashboard.server import Dashboard
from tests.integration import named_tasks, tasks
from tests.integration.conftest import ThreadCluster

TOKEN = "a-test-token-0123456789"
STATIC = Path(__file__).resolve().parents[2] / "balancer" / "dashboard" / "static"


def _start(real: redis.Redis, settings: Settings) -> Dashboard:
    app = Dashboard(real, settings, "127.0.0.1", 0)
    app.start()
    return app


@pytest.fixture
def guarded(real: redis.Redis, settings: Settings) -> Iterator[Dashboard]:
    app = _start(real, settings.replace(dashboard_token=TOKEN))
    yield app
    app.stop()


@pytest.fixture
def readonly(real: redis.Redis, settings: Settings) -> Iterator[Dashboard]:
    app = _start(real, settings)
    yield app
    app.stop()


def request(app: Dashboard, method: str, path: str, body: Any = None,
            headers: dict[str, str] | None = None) -> tuple[int, Any, http.client.HTTPResponse]:
    conn = http.client.HTTPConnection("127.0.0.1", app.port, timeout=30)
    sent = {"Content-Type": "application/json", **(headers or {})}
    conn.request(method, path, body=None if body is None else json.dumps(body), headers=sent)
    resp = conn.getresponse()
    raw = resp.read()
    conn.close()
    try:
        return resp.status, json.loads(raw), resp
    except ValueError:
        return resp.status, raw, resp


def test_without_a_token_every_action_is_refused(readonly: Dashboard, real: redis.Redis,
                                                 namespace: str) -> None:
    status, data, _ = request(readonly, "GET", "/api/overview")
    assert status == 200 and data["actions"] is False
    status, data, _ = request(readonly, "POST", "/api/action/queue.pause", {"queue": "q"},
                              {"X-Balancer-Token": "anything"})
    assert status == 403 and "read-only" in data["error"]
    assert real.hget(Keys(namespace).queue_conf("q"), "paused") is None


def test_actions_need_the_right_token_and_a_post(guarded: Dashboard, real: redis.Redis,
                                                 namespace: str) -> None:
    conf = Keys(namespace).queue_conf("q")
    for headers in ({}, {"X-Balancer-Token": "wrong"}, {"X-Balancer-Token": TOKEN[:-1]}):
        status, data, _ = request(guarded, "POST", "/api/action/queue.pause", {"queue": "q"},
                                  headers)
        assert status == 403, headers
    status, _, _ = request(guarded, "GET", "/api/action/queue.pause")
    assert status == 404  # a GET never acts
    assert real.hget(conf, "paused") is None
    ok = {"X-Balancer-Token": TOKEN}
    status, data, _ = request(guarded, "POST", "/api/action/queue.pause", {"queue": "q"}, ok)
    assert status == 200 and data["message"] == "queue q paused"
    assert real.hget(conf, "paused") == b"1"
    status, _, _ = request(guarded, "POST", "/api/action/queue.set",
                           {"queue": "q", "priority": 7, "concurrency_limit": 3}, ok)
    assert status == 200
    assert real.hmget(conf, "priority", "concurrency_limit") == [b"7", b"3"]
    status, _, _ = request(guarded, "POST", "/api/action/queue.set",
                           {"queue": "q", "concurrency_limit": None}, ok)
    assert status == 200 and real.hget(conf, "concurrency_limit") is None
    status, _, _ = request(guarded, "POST", "/api/action/queue.resume", {"queue": "q"}, ok)
    assert status == 200 and real.hget(conf, "paused") == b"0"


@pytest.mark.parametrize(("name", "body", "says"), [
    ("queue.set", {"queue": "q", "priority": 5000}, "priority must be an integer"),
    ("queue.set", {"queue": "q", "priority": "high"}, "priority must be an integer"),
    ("queue.set", {"queue": "q", "concurrency_limit": 0}, "concurrency limit"),
    ("queue.pause", {"queue": "two words"}, "invalid queue name"),
    ("queue.pause", {"queue": "q", "extra": 1}, "takes no extra"),
    ("queue.pause", {}, "queue must be"),
    ("dlq.retry", {"task": "nope"}, "not quarantined"),
    ("dlq.purge", {"task": "nope"}, "not quarantined"),
    ("rm.rf", {}, "no action"),
])
def test_bad_action_input_is_a_clear_error_and_changes_nothing(
        guarded: Dashboard, real: redis.Redis, namespace: str, name: str,
        body: dict[str, Any], says: str) -> None:
    status, data, _ = request(guarded, "POST", f"/api/action/{name}", body,
                              {"X-Balancer-Token": TOKEN})
    assert status == 400 and says in data["error"]
    assert real.hgetall(Keys(namespace).queue_conf("q")) == {}


def test_cancel_ends_a_flow_run_cancelled_and_names_a_missing_one(
        guarded: Dashboard, real: redis.Redis, namespace: str) -> None:
    assert "flow.cancel" in actions.ACTIONS
    status, data, _ = request(guarded, "POST", "/api/action/flow.cancel", {"flow": "f1"},
                              {"X-Balancer-Token": TOKEN})
    assert status == 400 and "no flow run f1" in data["error"]
    with Flow("to-cancel") as flow:
        tasks.constant(1)  # no worker serves it: it stays queued
    run = flow.submit(real, namespace=namespace)
    status, data, _ = request(guarded, "POST", "/api/action/flow.cancel",
                              {"flow": run.id}, {"X-Balancer-Token": TOKEN})
    assert status == 200, data
    assert run.state == "cancelled"
    status, data, _ = request(guarded, "POST", "/api/action/flow.cancel",
                              {"flow": run.id}, {"X-Balancer-Token": TOKEN})
    assert status == 200 and "nothing to cancel" in str(data)


def test_a_body_that_is_not_json_is_refused(guarded: Dashboard) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", guarded.port, timeout=30)
    conn.request("POST", "/api/action/queue.pause", body=b"queue=q",
                 headers={"X-Balancer-Token": TOKEN,
                          "Content-Type": "application/x-www-form-urlencoded"})
    assert conn.getresponse().status == 415  # what a cross-site form would send
    conn.close()


def test_requests_for_another_host_name_are_refused(guarded: Dashboard) -> None:
    for host in ("evil.example:80", f"evil.example:{guarded.port}", ""):
        status, _, _ = request(guarded, "GET", "/api/overview", headers={"Host": host})
        assert status == 421, host
    status, _, _ = request(guarded, "GET", "/api/overview",
                           headers={"Host": f"localhost:{guarded.port}"})
    assert status == 200


def test_pages_carry_a_strict_content_security_policy(readonly: Dashboard) -> None:
    status, raw, resp = request(readonly, "GET", "/")
    assert status == 200 and b"/static/app.js" in raw
    csp = resp.getheader("Content-Security-Policy") or ""
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert resp.getheader("X-Content-Type-Options") == "nosniff"
    for name in ("app.js", "markdown.js", "app.css"):
        status, _, _ = request(readonly, "GET", f"/static/{name}")
        assert status == 200
    status, _, _ = request(readonly, "GET", "/static/../server.py")
    assert status == 404


def test_the_page_script_never_writes_html() -> None:
    """Every value reaches the page as text: no innerHTML, outerHTML, insertAdjacentHTML,
    document.write or eval anywhere in the page's scripts (the markdown renderer's too),
    and nothing fetched from elsewhere."""
    scripts = sorted(STATIC.glob("*.js"))
    assert {p.name for p in scripts} == {"app.js", "markdown.js"}
    for path in scripts:
        script = path.read_text()
        for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write",
                     "eval(", "new Function", "DOMParser", "srcdoc"):
            assert sink not in script, (path.name, sink)
    page = (STATIC / "index.html").read_text()
    assert not re.search(r"(src|href)=\"(https?:)?//", page)  # no CDN


def test_the_recent_flows_can_be_listed_by_state_and_a_bad_state_is_a_400(
        readonly: Dashboard, real: redis.Redis, namespace: str) -> None:
    for name in ("first", "second"):
        with Flow(name) as built:
            tasks.constant(1)
        built.submit(real, namespace=namespace)  # no worker: both stay running
    real.hset(Keys(namespace).flow(_flow_ids(readonly)[-1]), "state", "failed")
    status, data, _ = request(readonly, "GET", "/api/overview?state=failed")
    assert status == 200 and [f["name"] for f in data["flows"]] == ["first"]
    assert data["flow_filter"] == "failed"
    status, data, _ = request(readonly, "GET", "/api/overview?state=running")
    assert [f["name"] for f in data["flows"]] == ["second"]
    status, data, _ = request(readonly, "GET", "/api/overview?state=%3Cscript%3E")
    assert status == 400 and "state is one of cancelled, completed, failed, running" in (
        data["error"])


def _flow_ids(app: Dashboard) -> list[str]:
    """The recent flows' ids, newest first."""
    return [f["id"] for f in request(app, "GET", "/api/overview")[1]["flows"]]


def test_an_unknown_flow_is_a_404_and_a_bad_id_a_400(readonly: Dashboard) -> None:
    status, data, _ = request(readonly, "GET", "/api/flow/abc123")
    assert status == 404 and "no flow run abc123" in data["error"]
    status, _, _ = request(readonly, "GET", "/api/flow/%3Cscript%3E")
    assert status == 400


def test_a_flow_function_s_run_shows_its_tasks_sub_runs_and_run_names(
        readonly: Dashboard, cluster: ThreadCluster, redis_url: str, namespace: str) -> None:
    """A @flow function's tasks are listed by the run as it adds them, not in its record's
    task list: the page showed none (3/3 done, an empty table)."""
    cluster.add_worker(concurrency=2)

    @flow(redis_url=redis_url, namespace=namespace)
    def inner() -> int:
        return named_tasks.add(1, 1)

    @flow(flow_run_name="outer-{n}", redis_url=redis_url, namespace=namespace)
    def outer(n: int) -> int:
        first = named_tasks.add(n, 1)
        named_tasks.double(first)
        return first + inner()

    state = outer(20, return_state=True)
    assert state.result() == 23
    status, page, _ = request(readonly, "GET", f"/api/flow/{state.flow_run_id}")
    assert status == 200
    assert page["run_name"] == "outer-20"
    shown = [(t["name"], t["state"], t.get("run_name", ""), t.get("sub_run", False))
             for t in page["tasks"]]
    assert shown == [("add", "completed", "", False),
                     ("double", "completed", "double-21", False),
                     ("inner", "completed", "", True)]
    status, listing, _ = request(readonly, "GET", "/api/overview")
    [row] = [f for f in listing["flows"] if f["id"] == state.flow_run_id]
    assert (row["name"], row["run_name"]) == ("outer", "outer-20")
