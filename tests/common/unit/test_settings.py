"""Settings: defaults, validation messages naming the variable, URL normalisation."""

from __future__ import annotations

from pathlib import Path

import pytest
from contentpipe.common.settings import ConfigError, env_duration, load_common_settings

pytestmark = pytest.mark.unit
BASE = {"CONTENTPIPE_JWT_SECRET": "x" * 32}


def test_defaults_follow_the_documented_table() -> None:
    settings = load_common_settings("scheduler", BASE)
    assert settings.grpc_port == 50054
    assert settings.grpc_host == "127.0.0.1"
    assert settings.database_url == "sqlite+aiosqlite:///.contentpipe/scheduler.db"
    assert settings.peers == {
        "generation": "127.0.0.1:50051",
        "oauth": "127.0.0.1:50052",
        "pipelines": "127.0.0.1:50053",
        "scheduler": "127.0.0.1:50054",
    }
    assert settings.auto_migrate is True
    assert settings.reflection is True
    assert settings.shutdown_grace_seconds == 10.0
    assert settings.data_dir == Path(".contentpipe")


def test_bad_port_names_the_variable_and_value() -> None:
    with pytest.raises(ConfigError) as info:
        load_common_settings("scheduler", {**BASE, "SCHEDULER_GRPC_PORT": "abc"})
    assert str(info.value) == "SCHEDULER_GRPC_PORT: expected an integer 1-65535, got 'abc'"


def test_port_out_of_range_is_rejected() -> None:
    with pytest.raises(ConfigError, match="GENERATION_GRPC_PORT"):
        load_common_settings("generation", {**BASE, "GENERATION_GRPC_PORT": "70000"})


def test_missing_jwt_secret_and_jwks_refuses_to_start() -> None:
    with pytest.raises(ConfigError, match="CONTENTPIPE_JWT_SECRET or CONTENTPIPE_JWKS_URL"):
        load_common_settings("oauth", {})


@pytest.mark.parametrize("prefix", ["postgres://", "postgresql://"])
def test_postgres_urls_are_rewritten_to_psycopg(prefix: str) -> None:
    settings = load_common_settings("pipelines", {**BASE, "PIPELINES_DATABASE_URL": f"{prefix}u:p@h:5432/db"})
    assert settings.database_url == "postgresql+psycopg://u:p@h:5432/db"


def test_unknown_database_scheme_is_rejected() -> None:
    with pytest.raises(ConfigError, match="PIPELINES_DATABASE_URL"):
        load_common_settings("pipelines", {**BASE, "PIPELINES_DATABASE_URL": "mysql://x/y"})


def test_bad_bool_and_peer_address_are_named() -> None:
    with pytest.raises(ConfigError, match="CONTENTPIPE_AUTO_MIGRATE"):
        load_common_settings("oauth", {**BASE, "CONTENTPIPE_AUTO_MIGRATE": "maybe"})
    with pytest.raises(ConfigError, match="CONTENTPIPE_OAUTH_ADDR"):
        load_common_settings("pipelines", {**BASE, "CONTENTPIPE_OAUTH_ADDR": "nohostport"})


def test_durations_accept_units() -> None:
    env = {"A": "500ms", "B": "5m", "C": "30"}
    assert env_duration(env, "A", 1) == 0.5
    assert env_duration(env, "B", 1) == 300
    assert env_duration(env, "C", 1) == 30
    with pytest.raises(ConfigError, match="D: expected a duration"):
        env_duration({"D": "soon"}, "D", 1)


def test_jwt_secret_is_not_in_repr() -> None:
    assert "x" * 32 not in repr(load_common_settings("oauth", BASE))


def test_short_jwt_secret_is_refused_with_how_to_make_one() -> None:
    with pytest.raises(ConfigError) as info:
        load_common_settings("oauth", {"CONTENTPIPE_JWT_SECRET": "changeme"})
    message = str(info.value)
    assert message.startswith("CONTENTPIPE_JWT_SECRET: must be at least 32 bytes, got 8")
    assert "secrets.token_urlsafe(48)" in message
    assert "changeme" not in message


def test_secret_of_exactly_32_bytes_is_accepted() -> None:
    assert load_common_settings("oauth", {"CONTENTPIPE_JWT_SECRET": "y" * 32}).jwt_secret == "y" * 32
