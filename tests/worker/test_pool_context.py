"""How a process pool starts its children: several forked from one forkserver that has
imported their code; a single one spawned."""

from __future__ import annotations

import multiprocessing
import multiprocessing.forkserver
import os
import subprocess
import sys

import pytest
from balancer.common.settings import POOL_IMPORTS_ENV
from balancer.worker.childwatch import PRELOAD, pool_context

from tests.conftest import ROOT


@pytest.mark.skipif("forkserver" not in multiprocessing.get_all_start_methods(),
                    reason="no forkserver on this platform")
def test_several_children_come_from_a_forkserver_that_imported_the_child_code() -> None:
    assert pool_context(1).get_start_method() == "spawn"
    ctx = pool_context(4)
    assert ctx.get_start_method() == "forkserver"
    # multiprocessing's one forkserver per process, as set_forkserver_preload set it
    assert multiprocessing.forkserver._forkserver._preload_modules == [PRELOAD]


@pytest.mark.skipif("forkserver" not in multiprocessing.get_all_start_methods(),
                    reason="no forkserver on this platform")
def test_the_task_modules_are_named_to_the_forkserver_only_when_it_preloads_them(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(POOL_IMPORTS_ENV, raising=False)
    pool_context(2, ("app.tasks", "app.more"))
    assert os.environ[POOL_IMPORTS_ENV] == "app.tasks,app.more"
    pool_context(2)  # --no-preload: a forkserver started now imports no task module
    assert POOL_IMPORTS_ENV not in os.environ
    pool_context(1, ("app.tasks",))  # spawned: nothing to share
    assert POOL_IMPORTS_ENV not in os.environ


def test_the_forkserver_preload_ignores_sigterm_and_freezes_what_it_imported() -> None:
    """Imported in a process of its own, as the forkserver imports it."""
    out = subprocess.run(
        [sys.executable, "-c", "import gc, signal, sys, balancer.worker.preload;"
         " print(signal.getsignal(signal.SIGTERM) == signal.SIG_IGN,"
         " gc.get_freeze_count() > 1000, 'balancer.worker.child' in sys.modules)"],
        capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.split() == ["True", "True", "True"]


def test_the_forkserver_preload_imports_the_task_modules_and_goes_on_past_one_that_fails(
        ) -> None:
    """Imported with the supervisor's list of --import modules, as the forkserver is: each
    module is imported, one that raises is left for the pool processes to import (and
    say why), and the list is not passed on to them."""
    env = {**os.environ, POOL_IMPORTS_ENV: "tests.integration.forkserver_refused_tasks,"
                                           "tests.integration.preloaded_tasks"}
    out = subprocess.run(
        [sys.executable, "-c", "import os, sys, balancer.worker.preload;"
         " print('tests.integration.preloaded_tasks' in sys.modules,"
         " 'tests.integration.forkserver_refused_tasks' in sys.modules,"
         f" {POOL_IMPORTS_ENV!r} in os.environ)"],
        capture_output=True, text=True, timeout=60, check=True, env=env, cwd=ROOT)
    assert out.stdout.split() == ["True", "False", "False"]
