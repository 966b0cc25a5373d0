"""Typed, validated settings read from an environment mapping at start-up (never at import time)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

SERVICES = ("generation", "oauth", "pipelines", "scheduler")
DEFAULT_PORTS: dict[str, int] = {"generation": 50051, "oauth": 50052, "pipelines": 50053, "scheduler": 50054}

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}
_LOG_LEVELS = {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}
# HS256 keys shorter than the hash output (RFC 7518 §3.2) are guessable offline from one token.
MIN_JWT_SECRET_BYTES = 32


class ConfigError(Exception):
    """A bad or missing variable; the message is one line naming it, printed as is by `__main__`."""


def env_str(environ: Mapping[str, str], name: str, default: str | None = None) -> str:
    value = environ.get(name)
    if value is None or value == "":
        if default is None:
            raise ConfigError(f"{name}: required but not set")
        return default
    return value


def env_optional(environ: Mapping[str, str], name: str) -> str | None:
    value = environ.get(name, "").strip()
    return value or None


def env_int(
    environ: Mapping[str, str],
    name: str,
    default: int,
    *,
    minimum: int | None = None,
    maximum: int | None = None,
) -> int:
    raw = environ.get(name, "").strip()
    if raw == "":
        return default
    bounds = ""
    if minimum is not None and maximum is not None:
        bounds = f" {minimum}-{maximum}"
    elif minimum is not None:
        bounds = f" >= {minimum}"
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name}: expected an integer{bounds}, got {raw!r}") from None
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        raise ConfigError(f"{name}: expected an integer{bounds}, got {raw!r}")
    return value


def env_float(environ: Mapping[str, str], name: str, default: float, *, minimum: float | None = None) -> float:
    raw = environ.get(name, "").strip()
    if raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name}: expected a number, got {raw!r}") from None
    if minimum is not None and value < minimum:
        raise ConfigError(f"{name}: expected a number >= {minimum}, got {raw!r}")
    return value


def env_bool(environ: Mapping[str, str], name: str, default: bool) -> bool:
    raw = environ.get(name)
    if raw is None:
        return default
    lowered = raw.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False if lowered else default
    raise ConfigError(f"{name}: expected 1/0/true/false, got {raw!r}")


def env_duration(environ: Mapping[str, str], name: str, default: float) -> float:
    """Seconds from `30`, `30s`, `500ms`, `5m` or `1h`."""
    raw = environ.get(name, "").strip()
    if raw == "":
        return default
    match = _DURATION.match(raw)
    if match is None:
        raise ConfigError(f"{name}: expected a duration like 30s, 500ms, 5m or 1h, got {raw!r}")
    return float(match.group(1)) * _DURATION_UNITS[match.group(2)]


def normalize_database_url(name: str, url: str) -> str:
    """Accept the URLs people paste (`postgres://`, `postgresql://`) and pick the async drivers we ship."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    if url.startswith("sqlite://") and not url.startswith("sqlite+aiosqlite://"):
        return "sqlite+aiosqlite://" + url[len("sqlite://") :]
    if url.startswith(("postgresql+psycopg://", "sqlite+aiosqlite://")):
        return url
    scheme = url.split(":", maxsplit=1)[0]
    raise ConfigError(f"{name}: expected a postgresql:// or sqlite+aiosqlite:/// URL, got scheme {scheme!r}")


def _address(environ: Mapping[str, str], name: str, default: str) -> str:
    value = env_str(environ, name, default)
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ConfigError(f"{name}: expected host:port, got {value!r}")
    return value


# ---------------------------------------------------------------- TLS (see contentpipe.common.tls)
CERT_FILE = "CONTENTPIPE_TLS_CERT_FILE"
KEY_FILE = "CONTENTPIPE_TLS_KEY_FILE"
CLIENT_CA_FILE = "CONTENTPIPE_TLS_CLIENT_CA_FILE"
CA_FILE = "CONTENTPIPE_TLS_CA_FILE"
CLIENT_CERT_FILE = "CONTENTPIPE_TLS_CLIENT_CERT_FILE"
CLIENT_KEY_FILE = "CONTENTPIPE_TLS_CLIENT_KEY_FILE"
SERVER_NAME = "CONTENTPIPE_TLS_SERVER_NAME"


@dataclass(frozen=True, slots=True)
class TlsSettings:
    """Where the PEM files are; every field None is plaintext (the default)."""

    cert_file: Path | None = None
    key_file: Path | None = None
    client_ca_file: Path | None = None
    ca_file: Path | None = None
    client_cert_file: Path | None = None
    client_key_file: Path | None = None
    server_name: str | None = None

    @property
    def serves_tls(self) -> bool:
        return self.cert_file is not None

    @property
    def requires_client_cert(self) -> bool:
        return self.client_ca_file is not None

    @property
    def peers_use_tls(self) -> bool:
        return self.ca_file is not None

    @property
    def client_identity(self) -> tuple[Path, Path] | None:
        """The certificate and key presented to peers: the explicit client pair, else the serving pair."""
        if self.client_cert_file is not None and self.client_key_file is not None:
            return self.client_cert_file, self.client_key_file
        if self.cert_file is not None and self.key_file is not None:
            return self.cert_file, self.key_file
        return None


def _file(environ: Mapping[str, str], name: str) -> Path | None:
    raw = env_optional(environ, name)
    if raw is None:
        return None
    path = Path(raw)
    if not path.is_file():
        raise ConfigError(f"{name}: {raw} is not a readable file")
    return path


def load_tls_settings(environ: Mapping[str, str]) -> TlsSettings:
    """Read the TLS variables (contentpipe.common.tls builds the credentials from them).

    A half-configured pair or a missing file is a ConfigError naming the variable.
    """
    settings = TlsSettings(
        cert_file=_file(environ, CERT_FILE),
        key_file=_file(environ, KEY_FILE),
        client_ca_file=_file(environ, CLIENT_CA_FILE),
        ca_file=_file(environ, CA_FILE),
        client_cert_file=_file(environ, CLIENT_CERT_FILE),
        client_key_file=_file(environ, CLIENT_KEY_FILE),
        server_name=env_optional(environ, SERVER_NAME),
    )
    for cert, key, cert_name, key_name in (
        (settings.cert_file, settings.key_file, CERT_FILE, KEY_FILE),
        (settings.client_cert_file, settings.client_key_file, CLIENT_CERT_FILE, CLIENT_KEY_FILE),
    ):
        if (cert is None) != (key is None):
            missing = key_name if key is None else cert_name
            raise ConfigError(f"{missing}: required when {cert_name if key is None else key_name} is set")
    if settings.client_ca_file is not None and settings.cert_file is None:
        raise ConfigError(f"{CLIENT_CA_FILE}: requiring client certificates needs {CERT_FILE} and {KEY_FILE}")
    return settings


@dataclass(frozen=True, slots=True)
class CommonSettings:
    """Settings every service has; a service's `config.py` wraps this with its own fields."""

    service: str
    data_dir: Path
    grpc_host: str
    grpc_port: int
    database_url: str
    jwt_secret: str | None = field(repr=False)
    jwks_url: str | None
    jwt_issuer: str | None
    jwt_audience: str | None
    log_level: str
    otlp_endpoint: str | None
    auto_migrate: bool
    shutdown_grace_seconds: float
    peers: Mapping[str, str]
    reflection: bool
    allow_private_urls: bool = False
    tls: TlsSettings = field(default_factory=TlsSettings)
    # Test/chaos only: SIGUSR1 crashes the first background loop (supervision is exercised end to end).
    fault_injection: bool = False
    # PostgreSQL pool overrides (None: sized to the service's worker concurrency, see database.pool_size_for).
    database_pool_size: int | None = None
    database_max_overflow: int | None = None
    # How often a long poll re-reads its row without a notification (lost notifications, restarts).
    long_poll_recheck_seconds: float = 1.0

    @property
    def bind_address(self) -> str:
        host = f"[{self.grpc_host}]" if ":" in self.grpc_host else self.grpc_host
        return f"{host}:{self.grpc_port}"


def load_common_settings(service: str, environ: Mapping[str, str]) -> CommonSettings:
    """Read and validate the shared variables for `service`; raises ConfigError with one clear line."""
    if service not in SERVICES:
        raise ValueError(f"unknown service {service!r}")
    prefix = service.upper()
    data_dir = Path(env_str(environ, "CONTENTPIPE_DATA_DIR", "./.contentpipe"))
    port = env_int(environ, f"{prefix}_GRPC_PORT", DEFAULT_PORTS[service], minimum=1, maximum=65535)
    db_name = f"{prefix}_DATABASE_URL"
    raw_db = env_optional(environ, db_name)
    database_url = (
        normalize_database_url(db_name, raw_db)
        if raw_db
        else f"sqlite+aiosqlite:///{(data_dir / f'{service}.db').as_posix()}"
    )
    jwt_secret = env_optional(environ, "CONTENTPIPE_JWT_SECRET")
    jwks_url = env_optional(environ, "CONTENTPIPE_JWKS_URL")
    if jwt_secret is None and jwks_url is None:
        raise ConfigError(
            "CONTENTPIPE_JWT_SECRET or CONTENTPIPE_JWKS_URL: one is required to verify tokens "
            "(there is no built-in secret)"
        )
    if jwt_secret is not None and len(jwt_secret.encode()) < MIN_JWT_SECRET_BYTES:
        raise ConfigError(
            f"CONTENTPIPE_JWT_SECRET: must be at least {MIN_JWT_SECRET_BYTES} bytes, got "
            f"{len(jwt_secret.encode())}; make one with: python -c 'import secrets; print(secrets.token_urlsafe(48))'"
        )
    if jwks_url is not None and not jwks_url.startswith(("https://", "http://")):
        raise ConfigError(f"CONTENTPIPE_JWKS_URL: expected an http(s) URL, got {jwks_url!r}")
    log_level = env_str(environ, "LOG_LEVEL", "INFO").upper()
    if log_level not in _LOG_LEVELS:
        raise ConfigError(f"LOG_LEVEL: expected one of {', '.join(sorted(_LOG_LEVELS))}, got {log_level!r}")
    peers = {
        name: _address(environ, f"CONTENTPIPE_{name.upper()}_ADDR", f"127.0.0.1:{DEFAULT_PORTS[name]}")
        for name in SERVICES
    }
    return CommonSettings(
        service=service,
        data_dir=data_dir,
        grpc_host=env_str(environ, f"{prefix}_GRPC_HOST", "127.0.0.1"),
        grpc_port=port,
        database_url=database_url,
        jwt_secret=jwt_secret,
        jwks_url=jwks_url,
        jwt_issuer=env_optional(environ, "CONTENTPIPE_JWT_ISSUER"),
        jwt_audience=env_optional(environ, "CONTENTPIPE_JWT_AUDIENCE"),
        log_level=log_level,
        otlp_endpoint=env_optional(environ, "OTEL_EXPORTER_OTLP_ENDPOINT"),
        auto_migrate=env_bool(environ, "CONTENTPIPE_AUTO_MIGRATE", True),
        shutdown_grace_seconds=env_float(environ, "CONTENTPIPE_SHUTDOWN_GRACE_SECONDS", 10.0, minimum=0.0),
        peers=peers,
        reflection=env_bool(environ, "CONTENTPIPE_GRPC_REFLECTION", True),
        allow_private_urls=env_bool(environ, "CONTENTPIPE_ALLOW_PRIVATE_URLS", False),
        tls=load_tls_settings(environ),
        fault_injection=env_bool(environ, "CONTENTPIPE_FAULT_INJECTION", False),
        long_poll_recheck_seconds=env_duration(environ, "CONTENTPIPE_LONG_POLL_RECHECK", 1.0),
        database_pool_size=_optional_int(environ, f"{prefix}_DATABASE_POOL_SIZE", minimum=1),
        database_max_overflow=_optional_int(environ, f"{prefix}_DATABASE_MAX_OVERFLOW", minimum=0),
    )


def _optional_int(environ: Mapping[str, str], name: str, *, minimum: int) -> int | None:
    if env_optional(environ, name) is None:
        return None
    return env_int(environ, name, minimum, minimum=minimum, maximum=1000)
