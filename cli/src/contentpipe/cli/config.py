"""Where the CLI sends calls and with which token: flags, environment, a config file, the local stack state."""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from contentpipe.cli.errors import EXIT_USAGE, CliError

SERVICES = ("generation", "oauth", "pipelines", "scheduler")
DEFAULT_PORTS: dict[str, int] = {"generation": 50051, "oauth": 50052, "pipelines": 50053, "scheduler": 50054}
DEFAULT_DATA_DIR = "./.contentpipe"
DEFAULT_USER = "local"
SECRET_FILE = "jwt-secret"  # noqa: S105 - a file name, not a secret
STATE_FILE = "stack.json"


def default_config_path(environ: Mapping[str, str]) -> Path:
    explicit = environ.get("CONTENTPIPE_CONFIG")
    if explicit:
        return Path(explicit)
    base = environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "contentpipe" / "config.toml"


@dataclass(frozen=True, slots=True)
class FileConfig:
    """The optional TOML config file:

    ```toml
    data_dir = "/srv/contentpipe"
    user = "alice"
    [addresses]
    pipelines = "pipelines.internal:50053"
    ```
    """

    addresses: Mapping[str, str]
    data_dir: str | None = None
    user: str | None = None
    token: str | None = None


def load_file_config(path: Path, *, required: bool) -> FileConfig:
    if not path.exists():
        if required:
            raise CliError(f"config file {path} does not exist", EXIT_USAGE)
        return FileConfig(addresses={})
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise CliError(f"config file {path}: {exc}", EXIT_USAGE) from None
    addresses = raw.get("addresses", {})
    if not isinstance(addresses, dict) or any(k not in SERVICES for k in addresses):
        raise CliError(f"config file {path}: [addresses] takes only {', '.join(SERVICES)}", EXIT_USAGE)
    return FileConfig(
        addresses={k: str(v) for k, v in addresses.items()},
        data_dir=raw.get("data_dir"),
        user=raw.get("user"),
        token=raw.get("token"),
    )


def check_address(name: str, value: str) -> str:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise CliError(f"{name}: expected host:port, got {value!r}", EXIT_USAGE)
    return value


@dataclass(frozen=True, slots=True)
class CliConfig:
    """Everything resolved once per invocation (flags > environment > config file > local stack > defaults)."""

    data_dir: Path
    addresses: Mapping[str, str]
    address_sources: Mapping[str, str]
    token: str | None
    user: str
    timeout: float
    local_addresses: Mapping[str, str]  # what `contentpipe up` recorded in the data dir, if anything

    @property
    def secret_path(self) -> Path:
        return self.data_dir / SECRET_FILE

    @property
    def state_path(self) -> Path:
        return self.data_dir / STATE_FILE


def resolve_config(
    *,
    environ: Mapping[str, str],
    data_dir: str | None,
    token: str | None,
    config_path: str | None,
    timeout: float,
) -> CliConfig:
    from contentpipe.cli import stack  # late: stack imports this module

    file_config = load_file_config(
        Path(config_path) if config_path else default_config_path(environ), required=config_path is not None
    )
    resolved_dir = Path(
        data_dir or environ.get("CONTENTPIPE_DATA_DIR") or file_config.data_dir or DEFAULT_DATA_DIR
    ).expanduser()
    state = stack.read_state(resolved_dir / STATE_FILE)
    local = {svc: info.address for svc, info in state.services.items()} if state else {}
    addresses: dict[str, str] = {}
    sources: dict[str, str] = {}
    for svc in SERVICES:
        env_name = f"CONTENTPIPE_{svc.upper()}_ADDR"
        if environ.get(env_name):
            addresses[svc], sources[svc] = check_address(env_name, environ[env_name]), env_name
        elif svc in file_config.addresses:
            addresses[svc], sources[svc] = check_address(svc, file_config.addresses[svc]), "config file"
        elif svc in local:
            addresses[svc], sources[svc] = local[svc], "contentpipe up"
        else:
            addresses[svc], sources[svc] = f"127.0.0.1:{DEFAULT_PORTS[svc]}", "default"
    return CliConfig(
        data_dir=resolved_dir,
        addresses=addresses,
        address_sources=sources,
        token=token or environ.get("CONTENTPIPE_TOKEN") or file_config.token,
        user=environ.get("CONTENTPIPE_USER") or file_config.user or DEFAULT_USER,
        timeout=timeout,
        local_addresses=local,
    )
