"""Configuration of the pipelines service: CommonSettings plus the run engine's limits."""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass

from contentpipe.common.settings import (
    CommonSettings,
    ConfigError,
    env_bool,
    env_float,
    env_int,
    env_optional,
    load_common_settings,
)

SERVICE = "pipelines"


@dataclass(frozen=True, slots=True)
class PipelinesConfig:
    """Everything the pipelines service reads from the environment, validated once at start-up."""

    common: CommonSettings
    # Run the engine inside `serve` (off: an API-only replica; runs are executed elsewhere).
    worker_enabled: bool
    worker_id: str
    max_in_flight: int
    max_runs_per_user: int
    lease_seconds: float
    claim_interval_seconds: float
    poll_initial_seconds: float
    poll_max_seconds: float


def load_config(environ: Mapping[str, str]) -> PipelinesConfig:
    """Build the config from `environ`; raises ConfigError naming the bad variable."""
    common = load_common_settings(SERVICE, environ)
    if common.jwt_secret is None:
        # The engine acts for run owners with HS256 service tokens that the peers verify.
        raise ConfigError("CONTENTPIPE_JWT_SECRET: required by the pipelines engine to mint service tokens")
    lease = env_float(environ, "PIPELINES_LEASE_SECONDS", 30.0, minimum=0.5)
    poll_initial = env_float(environ, "PIPELINES_POLL_INITIAL_SECONDS", 0.5, minimum=0.01)
    poll_max = env_float(environ, "PIPELINES_POLL_MAX_SECONDS", 10.0, minimum=0.01)
    if poll_max < poll_initial:
        raise ConfigError(f"PIPELINES_POLL_MAX_SECONDS: must be >= PIPELINES_POLL_INITIAL_SECONDS ({poll_initial})")
    return PipelinesConfig(
        common=common,
        worker_enabled=env_bool(environ, "PIPELINES_WORKER_ENABLED", True),
        worker_id=env_optional(environ, "PIPELINES_WORKER_ID") or f"{socket.gethostname()}-{os.getpid()}",
        max_in_flight=env_int(environ, "PIPELINES_MAX_RUNS_IN_FLIGHT", 200, minimum=1, maximum=10_000),
        max_runs_per_user=env_int(environ, "PIPELINES_MAX_RUNS_PER_USER", 20, minimum=1, maximum=10_000),
        lease_seconds=lease,
        claim_interval_seconds=env_float(environ, "PIPELINES_CLAIM_INTERVAL_SECONDS", 1.0, minimum=0.01),
        poll_initial_seconds=poll_initial,
        poll_max_seconds=poll_max,
    )
