"""Run the `contentpipe` CLI as a subprocess with an environment that cannot reach anything by accident."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def cli_environ(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The caller's environment without CONTENTPIPE_* (addresses, tokens, data dir) and without colours."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONTENTPIPE_")}
    env.update({"NO_COLOR": "1", "CONTENTPIPE_CONFIG": "/nonexistent/contentpipe.toml", "COLUMNS": "200"})
    env.update(extra or {})
    return env


def run_cli(
    *args: str, env: Mapping[str, str] | None = None, timeout: float = 120, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """`python -m contentpipe.cli ARGS` from the repository root; stdout is a pipe, so output is plain."""
    return subprocess.run(  # noqa: PLW1510 - callers assert on the exit code
        [sys.executable, "-m", "contentpipe.cli", *args],
        cwd=REPO_ROOT,
        env=cli_environ(env),
        capture_output=True,
        text=True,
        timeout=timeout,
        input=stdin,
    )


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def processes_using(data_dir: Path) -> list[int]:
    """Pids of live processes whose environment has CONTENTPIPE_DATA_DIR=`data_dir` (what `up` gives services)."""
    needle = f"CONTENTPIPE_DATA_DIR={data_dir.resolve()}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if needle in environ and pid_alive(int(entry.name)):
            found.append(int(entry.name))
    return found
