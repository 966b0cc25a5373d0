"""Where the CLI sends calls and with which token: flags, environment, a config file, the local stack state."""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from contentpipe.cli.errors import EXIT_USAGE, CliError
from contentpipe.common.settings import ConfigError, TlsSettings, load_tls_settings

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
    [tls]  # services that serve TLS: the CA bundle, and a client certificate when they require one
    ca_file = "/etc/contentpipe/ca.crt"
    cert_file = "/etc/contentpipe/client.crt"
    key_file = "/etc/contentpipe/client.key"
    ```
    """

    addresses: Mapping[str, str]
    data_dir: str | None = None
    user: str | None = None
    token: str | None = None
    tls: Mapping[str, str] = field(default_factory=dict)


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
    tls = raw.get("tls", {})
    if not isinstance(tls, dict) or any(k not in _TLS_FILE_KEYS for k in tls):
        raise CliError(f"config file {path}: [tls] takes only {', '.join(_TLS_FILE_KEYS)}", EXIT_USAGE)
    return FileConfig(
        tls={_TLS_FILE_KEYS[k]: str(v) for k, v in tls.items()},
        addresses={k: str(v) for k, v in addresses.items()},
        data_dir=raw.get("data_dir"),
        user=raw.get("user"),
        token=raw.get("token"),
    )


# config file [tls] key → the variable with the same meaning (the environment wins)
_TLS_FILE_KEYS = {
    "ca_file": "CONTENTPIPE_TLS_CA_FILE",
    "cert_file": "CONTENTPIPE_TLS_CLIENT_CERT_FILE",
    "key_file": "CONTENTPIPE_TLS_CLIENT_KEY_FILE",
    "server_name": "CONTENTPIPE_TLS_SERVER_NAME",
}


def resolve_tls(environ: Mapping[str, str], file_tls: Mapping[str, str]) -> TlsSettings:
    """TLS towards the services: plaintext unless a CA bundle is given (environment or config file)."""
    chosen = {name: environ.get(name) or file_tls.get(name, "") for name in _TLS_FILE_KEYS.values()}
    try:
        return load_tls_settings(chosen)
    except ConfigError as exc:
        raise CliError(str(exc), EXIT_USAGE) from None


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
    tls: TlsSettings = field(default_factory=TlsSettings)

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
        tls=resolve_tls(environ, file_config.tls),
    )
