"""The chaos loop-kill check tells a supervised replica from one that only dies (so its green means something)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.chaos.loop_kills import LoopKill
from tests.support import ServiceProcess

pytestmark = pytest.mark.integration


def kill_a_loop(tmp_path: Path, env: dict[str, str]) -> LoopKill:
    proc = ServiceProcess("scheduler", tmp_path, module="tests.support.test_server", env=env)
    proc.start()
    try:
        kill = LoopKill("probe", proc, timeout=20)
        assert kill.start()
        while not kill.poll():
            time.sleep(0.05)
        return kill
    finally:
        proc.terminate()


def test_a_supervised_loop_kill_turns_health_not_serving_then_exits_70(tmp_path: Path) -> None:
    kill = kill_a_loop(tmp_path, {"CONTENTPIPE_FAULT_INJECTION": "true", "CONTENTPIPE_SHUTDOWN_GRACE_SECONDS": "1"})

    assert kill.problems() == []
    assert kill.not_serving_after is not None and kill.exited_after is not None
    assert kill.not_serving_after <= kill.exited_after


def test_a_process_that_just_dies_is_reported(tmp_path: Path) -> None:
    # No fault injection: SIGUSR1's default action kills the process, with no NOT_SERVING and no exit code 70.
    kill = kill_a_loop(tmp_path, {"CONTENTPIPE_FAULT_INJECTION": "false"})

    problems = kill.problems()
    assert any("never reported NOT_SERVING" in p for p in problems)
    assert any("exited with -10" in p for p in problems)
