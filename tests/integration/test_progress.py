"""A blocking flow.run() talks: a bar on a terminal, plain lines elsewhere, what holds a
stuck run, a summary, and a clean Ctrl-C. Real processes, through a pseudo-terminal
where the test is about one."""

from __future__ import annotations

import os
import pty
import select
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from tests.conftest import ROOT, Processes, wait_for

SCRIPT = """
import sys
from balancer import Flow, task

@task(queue_name=sys.argv[1])
def double(x: int) -> int:
    return 2 * x

@task
def boom(x: int) -> int:
    raise ValueError(f"bad input {x}")

if __name__ == "__main__":
    with Flow("talk") as flow:
        double(double(1))
        if sys.argv[2] == "fail":
            boom(3)
    flow.run(timeout=float(sys.argv[3]))
"""


def _script(folder: Path) -> Path:
    path = folder / "talk.py"
    path.write_text(textwrap.dedent(SCRIPT))
    return path


def _embedded_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BALANCER_")}
    return {**env, **extra}


def _in_terminal(argv: list[str], cwd: Path, env: dict[str, str]) -> str:
    """Run ``argv`` with a pseudo-terminal as stdout and stderr; all it wrote."""
    leader, follower = pty.openpty()
    proc = subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                            stdout=follower, stderr=follower)
    os.close(follower)
    out = b""
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([leader], [], [], 0.5)
            if ready:
                try:
                    chunk = os.read(leader, 4096)
                except OSError:  # the terminal closed with the process
                    break
                if not chunk:
                    break
                out += chunk
            elif proc.poll() is not None:
                break
    finally:
        os.close(leader)
        proc.kill()
        proc.wait(5)
    return out.decode(errors="replace")


def test_on_a_terminal_a_bar_is_redrawn_and_a_summary_ends_it(tmp_path: Path) -> None:
    out = _in_terminal([sys.executable, str(_script(tmp_path)), "default", "ok", "30"],
                       tmp_path, _embedded_env())
    assert "\r" in out and "[" in out and "2/2 done" in out, out
    assert "flow talk (" in out and ") completed: 2/2 done in " in out, out


def test_outside_a_terminal_plain_lines_and_the_first_failure(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, str(_script(tmp_path)), "default", "fail", "30"],
                          cwd=tmp_path, env=_embedded_env(), capture_output=True, text=True,
                          timeout=60)
    assert "\r" not in done.stderr
    assert ": submitted, 3 tasks" in done.stderr, done.stderr
    # The summary line, wherever the embedded worker's own log lines land around it.
    [summary] = [line for line in done.stderr.splitlines() if ") failed: " in line]
    assert ") failed: 3/3 done, 1 failed in " in summary, done.stderr
    assert "first failed: boom: ValueError: bad input 3" in summary


def test_quiet_by_the_setting(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, str(_script(tmp_path)), "default", "ok", "30"],
                          cwd=tmp_path, env=_embedded_env(BALANCER_PROGRESS="off"),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "flow talk" not in done.stderr, done.stderr


def test_a_run_no_worker_can_serve_says_which_queue_and_how_to_serve_it(
    procs: Processes, tmp_path: Path
) -> None:
    procs.serve()
    done = subprocess.run([sys.executable, str(_script(tmp_path)), "nobody", "ok", "8"],
                          cwd=tmp_path, env=procs.env, capture_output=True, text=True,
                          timeout=60)
    assert "no progress for " in done.stderr, done.stderr
    assert "held by: 1 task: no worker serves queue nobody (worker start --queue nobody)" \
        in done.stderr
    assert done.stderr.count("held by") == 1  # said once, not at every look


def test_ctrl_c_says_where_the_run_is_left_without_a_traceback(
    procs: Processes, tmp_path: Path
) -> None:
    procs.serve()
    log = tmp_path / "out.log"
    with log.open("wb") as out:
        # Ctrl-C's signal as a terminal sends it, whatever this suite inherited: a shell
        # that starts it in the background ignores SIGINT, and Python keeps it ignored.
        proc = subprocess.Popen([sys.executable, str(_script(tmp_path)), "nobody", "ok", "60"],
                                cwd=tmp_path, env=procs.env, stdout=out, stderr=out,
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        wait_for(lambda: "submitted" in log.read_text(), timeout=30)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 130
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
    text = log.read_text()
    assert "Traceback" not in text and "KeyboardInterrupt" not in text, text
    assert "interrupted: flow talk (" in text and "goes on in the cluster" in text
    assert "`balancer flow " in text and "`balancer flow cancel " in text
    assert ROOT.exists()
