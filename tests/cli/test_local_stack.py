"""`contentpipe up --detach`, `status`, `token`, `down` against the real service processes (free ports)."""

from __future__ import annotations

import json
import signal
import stat
import subprocess
import sys
from pathlib import Path

import jwt
import pytest

from tests.cli.conftest import RunCli
from tests.cli.harness import REPO_ROOT, cli_environ, pid_alive, processes_using

pytestmark = pytest.mark.integration


def test_up_status_token_down(run_cli: RunCli, tmp_path: Path) -> None:
    data = tmp_path / "data"
    base = ["--data-dir", str(data)]
    up = run_cli(*base, "up", "--detach", "--ports", "auto")
    pids: list[int] = []
    try:
        assert up.returncode == 0, up.stderr + up.stdout
        secret_file = data / "jwt-secret"
        assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
        secret = secret_file.read_text().strip()
        assert len(secret) >= 32

        status = run_cli(*base, "status", "-o", "json")
        assert status.returncode == 0, status.stderr
        services = {row["service"]: row for row in json.loads(status.stdout)["services"]}
        assert set(services) == {"generation", "oauth", "pipelines", "scheduler"}
        pids = [row["pid"] for row in services.values()]
        for name, row in services.items():
            assert row["health"] == "SERVING" and row["process"] == "running"
            assert not row["address"].endswith((":50051", ":50052", ":50053", ":50054"))
            assert row["database_url"] == f"sqlite+aiosqlite:///{data.resolve()}/{name}.db"
            assert Path(row["log"]).exists()

        again = run_cli(*base, "up", "--detach", "--ports", "auto")
        assert again.returncode == 6 and "already running" in again.stderr

        token = run_cli(*base, "token", "--user", "alice").stdout.strip()
        claims = jwt.decode(token, secret, algorithms=["HS256"])
        assert claims["sub"] == "alice"
    finally:
        down = run_cli(*base, "down")
    assert down.returncode == 0, down.stderr
    assert "stopped 4 services" in down.stderr
    assert pids and not any(pid_alive(pid) for pid in pids)
    assert not (data / "stack.json").exists()
    after = run_cli(*base, "status", "--timeout", "2", env={"CONTENTPIPE_GENERATION_ADDR": "127.0.0.1:1"})
    assert after.returncode == 1


def test_foreground_up_stops_every_service_on_ctrl_c(tmp_path: Path) -> None:
    data = tmp_path / "data"
    process = subprocess.Popen(
        [sys.executable, "-m", "contentpipe.cli", "--data-dir", str(data), "up", "--ports", "auto"],
        cwd=REPO_ROOT,
        env=cli_environ(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stderr is not None
        seen = []
        for line in process.stderr:
            seen.append(line)
            if "press Ctrl-C" in line:
                break
        assert any("press Ctrl-C" in line for line in seen), "".join(seen)
        running = processes_using(data)
        assert len(running) == 4
        process.send_signal(signal.SIGINT)
        code = process.wait(timeout=40)
    finally:
        if process.poll() is None:
            process.kill()
    assert code == 0, process.stderr.read() if process.stderr else ""
    assert processes_using(data) == []
    assert not (data / "stack.json").exists()


def test_ctrl_c_while_starting_stops_what_was_started(tmp_path: Path) -> None:
    data = tmp_path / "data"
    process = subprocess.Popen(
        [sys.executable, "-m", "contentpipe.cli", "--data-dir", str(data), "up", "--ports", "auto"],
        cwd=REPO_ROOT,
        env=cli_environ(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stderr is not None
        first = process.stderr.readline()
        assert first.startswith("starting 4 services"), first
        process.send_signal(signal.SIGINT)  # the services are spawned but not healthy yet
        code = process.wait(timeout=40)
    finally:
        if process.poll() is None:
            process.kill()
    assert code == 130
    assert processes_using(data) == []
    assert not (data / "stack.json").exists()
