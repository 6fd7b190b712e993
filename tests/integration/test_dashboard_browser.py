"""The dashboard in a real headless browser (Debian's chromium, driven by Selenium through
chromedriver), against a real cluster: a dispatcher and a worker process.

Run with DASHBOARD_SCREENSHOT=docs/dashboard.png to also write the README's screenshot.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from balancer.common import protocol
from balancer.common.keys import Keys
from balancer.common.settings import Settings

from balancer import Flow
from balancer.dashboard.server import Dashboard
from tests.conftest import ROOT, Processes, RedisServer, wait_for
from tests.integration import tasks

TOKEN = "browser-test-token-0123456789"
XSS = '<img src=x onerror="window.__xss=1"><script>window.__xss=2</script>'

webdriver = pytest.importorskip("selenium.webdriver")
from selenium.common.exceptions import (  # noqa: E402
    NoSuchElementException,
    StaleElementReferenceException,
)
from selenium.webdriver.common.by import By  # noqa: E402


def _chromium() -> tuple[str, str]:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if browser and driver:
        return browser, driver
    why = ("the dashboard's browser test needs Debian's chromium and chromium-driver"
           " (apt-get install -y chromium chromium-driver; .ci/run installs them)")
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true: {why}")
    pytest.skip(why)


@pytest.fixture
def browser() -> Iterator[object]:
    binary, driver_path = _chromium()
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1400,1000"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=webdriver.ChromeService(driver_path), options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


# The page redraws itself every second, so an element found may be gone a moment later:
# reads go through one script each (atomic), clicks are retried on a fresh element.
def _attr(driver: Any, css: str, name: str) -> str | None:
    return driver.execute_script(  # type: ignore[no-any-return]
        "const e = document.querySelector(arguments[0]);"
        " return e ? e.getAttribute(arguments[1]) : null;", css, name)


def _text(driver: Any, css: str) -> str:
    return driver.execute_script(  # type: ignore[no-any-return]
        "const e = document.querySelector(arguments[0]); return e ? e.innerText : '';", css)


def _count(driver: Any, css: str) -> int:
    return int(driver.execute_script(
        "return document.querySelectorAll(arguments[0]).length;", css))


def _task_state(driver: Any, name: str) -> str | None:
    return driver.execute_script(  # type: ignore[no-any-return]
        "for (const r of document.querySelectorAll('tr[data-task]'))"
        "  if (r.cells[0].firstChild.textContent === arguments[0]) return r.dataset.state;"
        " return null;", name)


def _click(driver: Any, css: str) -> bool:
    try:
        driver.find_element(By.CSS_SELECTOR, css).click()
        return True
    except (StaleElementReferenceException, NoSuchElementException):
        return False


def test_the_dashboard_shows_the_cluster_live_and_pauses_a_queue(
        procs: Processes, real: redis.Redis, namespace: str, settings: Settings,
        browser: object, tmp_path: Path) -> None:
    keys = Keys(namespace)
    procs.serve()
    procs.worker("--concurrency", "2", "--name", "browser-w1")
    wait_for(lambda: real.get(keys.leader) and real.zcard(keys.workers) == 1, timeout=30)
    app = Dashboard(real, settings.replace(dashboard_token=TOKEN), "127.0.0.1", 0)
    app.start()
    driver: Any = browser
    try:
        driver.get(app.url)
        # The worker, live (the page polls: no reload from here on).
        wait_for(lambda: _attr(driver, 'tr[data-worker="browser-w1"]', "data-state")
                 == "alive", timeout=30, interval=0.2)
        assert f"the leader runs release {protocol.release()} (protocol {protocol.VERSION})" \
            in driver.find_element(By.TAG_NAME, "main").text

        with Flow("browser-flow") as flow:
            slow = tasks.sleep_for(3.0)
            tasks.multiply(tasks.constant(4), 3, upstream_tasks=[slow])
            tasks.raises(XSS)
        run = flow.submit(real, namespace=namespace)
        # The worker's row shows what it runs now, and the flow runs.
        wait_for(lambda: "sleep_for" in _text(driver, 'tr[data-worker="browser-w1"]'),
                 timeout=30, interval=0.2)
        wait_for(lambda: _attr(driver, f'tr[data-flow="{run.id}"]', "data-state")
                 == "running", timeout=30, interval=0.2)
        driver.save_screenshot(str(tmp_path / "overview.png"))

        # The flow's page: its DAG, and its tasks changing state.
        wait_for(lambda: _click(driver, f'tr[data-flow="{run.id}"] a'), timeout=10)
        wait_for(lambda: _count(driver, "g[data-node]") == 4, timeout=30, interval=0.2)
        assert _count(driver, "tr[data-task]") == 4
        seen: set[str | None] = set()

        def slow_is(state: str) -> bool:
            now = _task_state(driver, "sleep_for")
            seen.add(now)
            return now == state

        wait_for(lambda: slow_is("running"), timeout=30, interval=0.1)
        wait_for(lambda: slow_is("completed"), timeout=30, interval=0.1)
        wait_for(lambda: _task_state(driver, "multiply") == "completed", timeout=30,
                 interval=0.2)
        assert {"running", "completed"} <= seen
        # The attacker's error shows as text, and runs nothing.
        wait_for(lambda: _task_state(driver, "raises") == "failed", timeout=30)
        assert XSS in _text(driver, 'tr[data-task][data-state="failed"]')
        assert driver.execute_script("return window.__xss") is None
        assert _count(driver, "main img, main script") == 0
        assert _count(driver, 'g[data-node][data-state="completed"]') == 3
        driver.save_screenshot(str(tmp_path / "flow.png"))

        # Back to the overview: pause the queue, with the token.
        driver.get(app.url)
        wait_for(lambda: _count(driver, 'tr[data-queue="default"] button.pause') == 1,
                 timeout=30, interval=0.2)
        driver.find_element(By.ID, "token").send_keys(TOKEN)
        wait_for(lambda: _click(driver, 'tr[data-queue="default"] button.pause'), timeout=10)
        wait_for(lambda: real.hget(keys.queue_conf("default"), "paused") == b"1", timeout=20)
        wait_for(lambda: _attr(driver, 'tr[data-queue="default"]', "data-paused") == "1",
                 timeout=20, interval=0.2)
        time.sleep(1.5)  # one more poll, for a settled picture
        shot = tmp_path / "dashboard.png"
        driver.save_screenshot(str(shot))
        assert shot.stat().st_size > 10_000
        target = os.environ.get("DASHBOARD_SCREENSHOT")
        if target:
            shutil.copyfile(tmp_path / "overview.png", ROOT / target)
    finally:
        app.stop()


def test_the_dashboard_warns_of_a_redis_that_may_evict_tasks_until_it_no_longer_does(
        namespace: str, settings: Settings, browser: object) -> None:
    server = RedisServer("--maxmemory-policy", "allkeys-lru").start()
    client = redis.Redis.from_url(server.url)
    app = Dashboard(client, settings, "127.0.0.1", 0)
    app.start()
    driver: Any = browser
    try:
        driver.get(app.url)
        wait_for(lambda: "maxmemory-policy is allkeys-lru" in _text(
            driver, '[data-warning="eviction"]'), timeout=30, interval=0.2)
        client.config_set("maxmemory-policy", "noeviction")
        wait_for(lambda: _count(driver, '[data-warning="eviction"]') == 0, timeout=30,
                 interval=0.2)
        assert _count(driver, "h2") > 0  # the page itself still there
    finally:
        app.stop()
        client.close()
        server.cleanup()


def _artifact_page(procs: Processes, real: redis.Redis, namespace: str, settings: Settings,
                   maker: Any, text: str) -> tuple[Dashboard, str]:
    """A cluster whose worker ran ``maker(text)`` (a task of artifact_tasks), and a
    dashboard started on it (the caller stops it); the run's id."""
    keys = Keys(namespace)
    procs.serve()
    procs.worker("--import", "tests.integration.artifact_tasks")
    wait_for(lambda: real.get(keys.leader) and real.zcard(keys.workers) == 1, timeout=30)
    with Flow("artifacts") as flow:
        maker(text)
    run = flow.run(timeout=60, client=real, namespace=namespace, quiet=True)
    assert run.state == "completed", run.first_failure()
    app = Dashboard(real, settings, "127.0.0.1", 0)
    app.start()
    return app, run.id


def test_artifacts_show_their_text_as_text_and_only_web_links_are_links(
        procs: Processes, real: redis.Redis, namespace: str, settings: Settings,
        browser: object) -> None:
    """An artifact's markdown, table cells and link text are anyone's to write: the flow
    page shows them as text, and a javascript: link as text, never as a link."""
    from tests.integration import artifact_tasks

    app, run_id = _artifact_page(procs, real, namespace, settings, artifact_tasks.hostile, XSS)
    driver: Any = browser
    try:
        driver.get(f"{app.url}#/flow/{run_id}")
        wait_for(lambda: _count(driver, "div[data-artifact]") == 4, timeout=30, interval=0.2)
        assert XSS in _text(driver, "div.markdown") and XSS in _text(driver, "table.artifact")
        assert driver.execute_script("return window.__xss") is None
        assert _count(driver, "main img, main script") == 0
        hrefs = driver.execute_script(
            "return [...document.querySelectorAll('div[data-artifact] a')]"
            ".map((a) => a.getAttribute('href'));")
        assert hrefs == ["https://example.com/report"]
        assert "click me (javascript:window.__xss=3)" in _text(driver, "main")
    finally:
        app.stop()


MARKDOWN = """# Daily report
Loaded **1,204** rows from `orders`. See [the runbook](https://example.com/runbook) and
[this](javascript:window.__xss=4).

- no **null** keys
- counts match

| table | rows |
| --- | ---: |
| orders | 1204 |
| refunds | <b>3</b> |

> a quote

```
SELECT 1;  -- <script>window.__xss=5</script>
```
""" + XSS


def test_a_markdown_artifact_is_rendered_from_text_nodes_and_links_only_to_the_web(
        procs: Processes, real: redis.Redis, namespace: str, settings: Settings,
        browser: object) -> None:
    """As Prefect's UI shows one (it was shown as written): headings, emphasis, lists, a
    table, a quote, code; tags in it stay text and a javascript: link is no link."""
    from tests.integration import artifact_tasks

    app, run_id = _artifact_page(procs, real, namespace, settings, artifact_tasks.markdown,
                                 MARKDOWN)
    driver: Any = browser
    try:
        driver.get(f"{app.url}#/flow/{run_id}")
        wait_for(lambda: _count(driver, "div.markdown h1") == 1, timeout=30, interval=0.2)
        assert _text(driver, "div.markdown h1") == "Daily report"
        assert _count(driver, "div.markdown li") == 2 and _count(driver, "div.markdown strong") == 2
        cells = driver.execute_script(
            "return [...document.querySelectorAll('div.markdown td')].map((c) => c.textContent);")
        assert cells == ["orders", "1204", "refunds", "<b>3</b>"]
        assert _text(driver, "div.markdown blockquote") == "a quote"
        assert "<script>window.__xss=5</script>" in _text(driver, "div.markdown pre code")
        hrefs = driver.execute_script(
            "return [...document.querySelectorAll('div.markdown a')].map((a) => a.href);")
        assert hrefs == ["https://example.com/runbook"]
        assert "this (javascript:window.__xss=4" in _text(driver, "div.markdown")
        assert XSS in _text(driver, "div.markdown")
        assert driver.execute_script("return window.__xss") is None
        assert _count(driver, "main img, main script, div.markdown b") == 0
    finally:
        app.stop()


def test_the_recent_flows_are_listed_by_the_state_chosen(
        real: redis.Redis, namespace: str, settings: Settings, browser: object) -> None:
    runs = []
    for name in ("kept-running", "went-wrong"):
        with Flow(name) as built:
            tasks.constant(1)
        runs.append(built.submit(real, namespace=namespace))  # no worker: running
    real.hset(Keys(namespace).flow(runs[1].id), "state", "failed")
    app = Dashboard(real, settings, "127.0.0.1", 0)
    app.start()
    driver: Any = browser

    def listed() -> list[str]:
        return list(driver.execute_script(
            "return [...document.querySelectorAll('#flows tr[data-flow]')]"
            ".map((r) => r.dataset.flow);"))

    try:
        driver.get(app.url)
        wait_for(lambda: len(listed()) == 2, timeout=30, interval=0.2)
        wait_for(lambda: _click(driver, "a[data-filter='failed']"), timeout=10)
        wait_for(lambda: listed() == [runs[1].id], timeout=30, interval=0.2)
        assert "Recent failed flows" in _text(driver, "main")
        assert driver.current_url.endswith("#/?state=failed")
        wait_for(lambda: _click(driver, "a[data-filter='']"), timeout=10)
        wait_for(lambda: len(listed()) == 2, timeout=30, interval=0.2)
    finally:
        app.stop()
