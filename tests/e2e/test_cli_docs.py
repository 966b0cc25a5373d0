"""The commands in docs/api.md work when pasted: every bash block runs against the four services (on free ports),
and the error examples fail the way the text says."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from tests.cli.harness import REPO_ROOT, cli_environ, run_cli
from tests.support import free_port

pytestmark = pytest.mark.e2e

DEFAULT_PORTS = {"50051": "generation", "50052": "oauth", "50053": "pipelines", "50054": "scheduler"}


def bash_blocks(markdown: str) -> list[str]:
    return re.findall(r"```bash\n(.*?)```", markdown, flags=re.DOTALL)


def on_ports(block: str, addresses: dict[str, str]) -> str:
    """The pasted commands with the test's ports instead of the defaults (nothing on this machine may use those)."""
    for port, service in DEFAULT_PORTS.items():
        block = block.replace(f"127.0.0.1:{port}", addresses[service])
    return block


def localize(block: str, addresses: dict[str, str]) -> str:
    """Point the pasted commands at the test's stack: its ports instead of the defaults; it is already up."""
    block = on_ports(block, addresses)
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
        assert '"state": "PIPELINE_RUN_STATE_SUCCEEDED"' in result.stdout  # WaitPipelineRun waited for the end
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


COMMAND_FENCE = re.compile(r"^```(?:bash|sh|shell|console)\n(.*?)^```", flags=re.DOTALL | re.MULTILINE)
NOT_EXECUTED = re.compile(r"<!-- not executed: (.+?) -->\s*$")
# api.md has its own test above (its last block must fail the way the text says); the rest run in order.
OWN_TESTS = {"docs/api.md"}


def documents() -> list[str]:
    return ["README.md", *sorted(str(p.relative_to(REPO_ROOT)) for p in (REPO_ROOT / "docs").glob("*.md"))]


def command_blocks(markdown: str) -> list[tuple[str, str | None]]:
    """Every shell block with the reason it is not executed (the `<!-- not executed: ... -->` line above it)."""
    blocks = []
    for match in COMMAND_FENCE.finditer(markdown):
        before = markdown[: match.start()].rstrip("\n").rsplit("\n", 1)[-1]
        reason = NOT_EXECUTED.search(before)
        blocks.append((match.group(1), reason.group(1).strip() if reason else None))
    return blocks


def test_every_command_block_runs_or_says_why_not() -> None:
    for doc in documents():
        for block, reason in command_blocks((REPO_ROOT / doc).read_text()):
            if reason is not None:
                assert len(reason.split()) >= 3, f"{doc}: say why this block is not executed:\n{block}"
                assert re.search(r"needs|is |runs in|covered", reason), f"{doc}: not a reason: {reason!r}"
    assert any(reason is None for block, reason in command_blocks((REPO_ROOT / "README.md").read_text()))


@pytest.mark.timeout(600)
@pytest.mark.parametrize("doc", [d for d in documents() if d not in OWN_TESTS])
def test_doc_commands_work_when_pasted(doc: str, tmp_path: Path) -> None:
    """The doc's executed blocks, in order, as one script: the user's environment names free ports and a fresh
    data dir (as CONTENTPIPE_<SERVICE>_ADDR and CONTENTPIPE_DATA_DIR), nothing else is changed."""
    blocks = [block for block, reason in command_blocks((REPO_ROOT / doc).read_text()) if reason is None]
    if not blocks:
        pytest.skip(f"{doc}: every command block says why it is not executed")
    addresses = {svc: f"127.0.0.1:{free_port()}" for svc in DEFAULT_PORTS.values()}
    data = tmp_path / "data"
    env = {"CONTENTPIPE_DATA_DIR": str(data)} | {f"CONTENTPIPE_{s.upper()}_ADDR": a for s, a in addresses.items()}
    # -x: a failure shows which pasted command failed, with what it printed.
    script = "set -xeuo pipefail\n" + "\n".join(on_ports(block, addresses) for block in blocks)
    try:
        result = subprocess.run(  # noqa: PLW1510 - asserted below
            ["bash", "-c", script], cwd=REPO_ROOT, env=cli_environ(env), capture_output=True, text=True, timeout=540
        )
    finally:
        run_cli("--data-dir", str(data), "down")
    assert result.returncode == 0, f"{doc}:\n{result.stdout[-3000:]}\n{result.stderr[-8000:]}"
    if doc == "README.md":
        assert "SUCCEEDED" in result.stdout
        assert "0 9 * * *" in result.stdout  # jobs list shows the schedule the run set
        assert '"expression": "0 9 * * *"' in result.stdout  # and grpcurl, as `local`, sees the same job
        assert '"status": "SERVING"' in result.stdout
