"""Every command documents itself with examples; addresses and tokens resolve in the documented order."""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path

import pytest
from contentpipe.cli.__main__ import build_parser
from contentpipe.cli.config import resolve_config
from contentpipe.cli.errors import EXIT_USAGE, CliError
from contentpipe.cli.session import Session

pytestmark = pytest.mark.unit


def _leaves(parser: argparse.ArgumentParser, path: str = "contentpipe") -> list[tuple[str, argparse.ArgumentParser]]:
    found: list[tuple[str, argparse.ArgumentParser]] = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                found.extend(_leaves(child, f"{path} {name}"))
    if not found and parser.get_default("handler") is not None:
        found.append((path, parser))
    return found


def test_every_command_has_help_with_runnable_examples() -> None:
    leaves = _leaves(build_parser())
    assert len(leaves) >= 45
    for path, parser in leaves:
        epilog = parser.epilog or ""
        assert epilog.startswith("examples:\n"), f"{path} has no examples"
        examples = [line.strip() for line in epilog.splitlines()[1:] if line.strip()]
        command = path.split()[1]
        assert examples and all(e.split()[0] in {"contentpipe", "export", "cat"} for e in examples), path
        assert any(command in e for e in examples), f"{path}: examples do not use the command"


@pytest.mark.parametrize(
    "command",
    [
        "up",
        "down",
        "status",
        "token",
        "pipelines create",
        "pipelines run",
        "pipelines pause",
        "pipelines resume",
        "pipelines runs",
        "pipelines cancel",
        "runs watch",
        "runs resume",
        "jobs create",
        "jobs list",
        "jobs preview",
        "jobs trigger",
        "jobs pause",
        "jobs resume",
        "connections connect",
        "connections list",
        "connections refresh",
        "connections delete",
        "generations create",
        "posts list",
        "notifications list",
        "notifications get",
        "completion",
        "runs list",
        "runs get",
        "runs cancel",
    ],
)
def test_the_commands_of_the_issue_exist(command: str) -> None:
    paths = {path for path, _ in _leaves(build_parser())}
    assert f"contentpipe {command}" in paths


def test_options_work_before_and_after_the_subcommand() -> None:
    parser = build_parser()
    before = parser.parse_args(["--data-dir", "/a", "pipelines", "list"])
    after = parser.parse_args(["pipelines", "list", "--data-dir", "/b", "-o", "json"])
    assert (before.data_dir, after.data_dir, after.output) == ("/a", "/b", "json")


def _config(tmp_path: Path, environ: dict[str, str], **kwargs: str | None):
    return resolve_config(
        environ=environ,
        data_dir=kwargs.get("data_dir", str(tmp_path)),
        token=kwargs.get("token"),
        config_path=kwargs.get("config_path"),
        timeout=5,
    )


def test_addresses_come_from_env_then_config_file_then_local_stack_then_defaults(tmp_path: Path) -> None:
    (tmp_path / "stack.json").write_text(
        json.dumps(
            {
                "data_dir": str(tmp_path),
                "started_at": "",
                "supervisor_pid": None,
                "services": {
                    svc: {
                        "service": svc,
                        "pid": 1,
                        "port": 60000 + i,
                        "address": f"127.0.0.1:{60000 + i}",
                        "log": "",
                        "database_url": "",
                    }
                    for i, svc in enumerate(["oauth", "pipelines", "scheduler"])
                },
            }
        )
    )
    config_file = tmp_path / "config.toml"
    config_file.write_text('user = "carol"\n[addresses]\npipelines = "pipes.internal:7000"\n')
    config = _config(tmp_path, {"CONTENTPIPE_OAUTH_ADDR": "oauth.internal:9000"}, config_path=str(config_file))
    assert config.addresses == {
        "generation": "127.0.0.1:50051",
        "oauth": "oauth.internal:9000",
        "pipelines": "pipes.internal:7000",
        "scheduler": "127.0.0.1:60002",
    }
    assert config.address_sources["scheduler"] == "contentpipe up"
    assert config.user == "carol"


def test_a_bad_address_names_the_variable(tmp_path: Path) -> None:
    with pytest.raises(CliError, match="CONTENTPIPE_PIPELINES_ADDR: expected host:port") as caught:
        _config(tmp_path, {"CONTENTPIPE_PIPELINES_ADDR": "nohost"})
    assert caught.value.exit_code == EXIT_USAGE


def test_a_local_token_is_minted_only_for_the_local_stack(tmp_path: Path) -> None:
    (tmp_path / "jwt-secret").write_text("s" * 48)
    (tmp_path / "stack.json").write_text(
        json.dumps(
            {
                "data_dir": str(tmp_path),
                "started_at": "",
                "supervisor_pid": None,
                "services": {
                    "pipelines": {
                        "service": "pipelines",
                        "pid": 1,
                        "port": 60001,
                        "address": "127.0.0.1:60001",
                        "log": "",
                        "database_url": "",
                    }
                },
            }
        )
    )
    local = Session(_config(tmp_path, {}))
    import jwt

    claims = jwt.decode(asyncio.run(local.token_for("pipelines")), "s" * 48, algorithms=["HS256"])
    assert claims["sub"] == "local"
    explicit = Session(_config(tmp_path, {"CONTENTPIPE_TOKEN": "abc"}))
    assert asyncio.run(explicit.token_for("pipelines")) == "abc"
