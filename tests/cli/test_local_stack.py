"""`contentpipe up --detach`, `status`, `token`, `down` against the real service processes (free ports)."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import jwt
import pytest

from tests.cli.conftest import RunCli
from tests.cli.harness import pid_alive

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
