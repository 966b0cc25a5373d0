"""The commands in docs/api.md work when pasted: every bash block runs against the four services (on free ports),
and the error examples fail the way the text says."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from tests.cli.harness import REPO_ROOT, cli_environ, run_cli

pytestmark = pytest.mark.e2e

DEFAULT_PORTS = {"50051": "generation", "50052": "oauth", "50053": "pipelines", "50054": "scheduler"}


def bash_blocks(markdown: str) -> list[str]:
    return re.findall(r"```bash\n(.*?)```", markdown, flags=re.DOTALL)


def localize(block: str, addresses: dict[str, str]) -> str:
    """Point the pasted commands at the test's stack: its ports instead of the defaults; it is already up."""
    for port, service in DEFAULT_PORTS.items():
        block = block.replace(f"127.0.0.1:{port}", addresses[service])
    block = re.sub(r"^contentpipe up --detach.*$", ":", block, flags=re.MULTILINE)
    return re.sub(r"^uv sync.*$", ":", block, flags=re.MULTILINE)


def test_api_doc_commands_work_when_pasted(tmp_path: Path) -> None:
    data = tmp_path / "data"
    up = run_cli("--data-dir", str(data), "up", "--detach", "--ports", "auto")
    assert up.returncode == 0, up.stderr
    try:
        status = json.loads(run_cli("--data-dir", str(data), "status", "-o", "json").stdout)
        addresses = {row["service"]: row["address"] for row in status["services"]}
        blocks = bash_blocks((REPO_ROOT / "docs/api.md").read_text())
        assert len(blocks) >= 7
        *working, errors = blocks
        env = cli_environ({"CONTENTPIPE_DATA_DIR": str(data)})
        script = "set -euo pipefail\n" + "\n".join(localize(block, addresses) for block in working)
        result = subprocess.run(  # noqa: PLW1510 - asserted below
            ["bash", "-c", script], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=240
        )
        assert result.returncode == 0, f"{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
        assert '"state": "PIPELINE_RUN_STATE_' in result.stdout
        assert '"status": "SERVING"' in result.stdout

        setup = localize(working[0], addresses)
        expected = ["InvalidArgument", "NotFound", "Unauthenticated"]
        commands = [c for c in re.split(r"\n(?=grpcurl )", localize(errors, addresses).strip()) if c.strip()]
        assert len(commands) == len(expected)
        for command, code in zip(commands, expected, strict=True):
            failed = subprocess.run(  # noqa: PLW1510 - asserted below
                ["bash", "-c", f"{setup}\n{command}"],
                cwd=REPO_ROOT,
                env=env,
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert failed.returncode != 0
            assert f"Code: {code}" in failed.stderr, failed.stderr
        violation = subprocess.run(  # noqa: PLW1510 - the violation names the field
            ["bash", "-c", f"{setup}\n{commands[0]}"],
            cwd=REPO_ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert "generate_content.prompt" in violation.stderr
    finally:
        run_cli("--data-dir", str(data), "down")


def test_readme_cli_commands_work_when_pasted(tmp_path: Path) -> None:
    readme = (REPO_ROOT / "README.md").read_text()
    section = readme.split("## The `contentpipe` CLI", 1)[1]
    block = bash_blocks(section)[0]
    assert "contentpipe up --detach" in block and "contentpipe down" in block
    # Free ports instead of 50051-50054; the data dir comes from the environment, as a user may set it.
    script = "set -euo pipefail\n" + block.replace("contentpipe up --detach", "contentpipe up --detach --ports auto")
    data = tmp_path / "data"
    try:
        result = subprocess.run(  # noqa: PLW1510 - asserted below
            ["bash", "-c", script],
            cwd=REPO_ROOT,
            env=cli_environ({"CONTENTPIPE_DATA_DIR": str(data)}),
            capture_output=True,
            text=True,
            timeout=240,
        )
    finally:
        run_cli("--data-dir", str(data), "down")
    assert result.returncode == 0, f"{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    assert "SUCCEEDED" in result.stdout
    assert "0 9 * * *" in result.stdout  # jobs list shows the schedule the run set
