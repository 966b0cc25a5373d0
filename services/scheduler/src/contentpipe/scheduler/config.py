"""Configuration of the scheduler service: CommonSettings plus scheduler's own variables."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from contentpipe.common.settings import (
    CommonSettings,
    ConfigError,
    env_duration,
    env_int,
    env_optional,
    load_common_settings,
)

SERVICE = "scheduler"


@dataclass(frozen=True, slots=True)
class SchedulerConfig:
    """Everything the scheduler service reads from the environment, validated once at start-up."""

    common: CommonSettings
    # The serve loop: one pass every interval (at once again when a pass was full).
    process_interval_seconds: float = 5.0
    process_limit: int = 500
    batch_size: int = 500
    dispatch_concurrency: int = 64
    trigger_batch_size: int = 100
    poll_interval_seconds: float = 10.0
    webhook_url: str | None = None
    webhook_secret: str | None = field(default=None, repr=False)


def load_config(environ: Mapping[str, str]) -> SchedulerConfig:
    """Build the config from `environ`; raises ConfigError naming the bad variable."""
    webhook_url = env_optional(environ, "NOTIFICATION_WEBHOOK_URL")
    webhook_secret = env_optional(environ, "NOTIFICATION_WEBHOOK_SECRET")
    if webhook_url is not None:
        if not webhook_url.startswith(("http://", "https://")):
            raise ConfigError(f"NOTIFICATION_WEBHOOK_URL: expected an http(s) URL, got {webhook_url!r}")
        if webhook_secret is None:
            raise ConfigError("NOTIFICATION_WEBHOOK_SECRET: required when NOTIFICATION_WEBHOOK_URL is set")
        from contentpipe.scheduler.adapters.webhook import decode_secret

        try:
            decode_secret(webhook_secret)
        except ValueError as exc:
            raise ConfigError(f"NOTIFICATION_WEBHOOK_SECRET: {exc}") from None
    return SchedulerConfig(
        common=load_common_settings(SERVICE, environ),
        process_interval_seconds=env_duration(environ, "SCHEDULER_PROCESS_INTERVAL", 5.0),
        process_limit=env_int(environ, "SCHEDULER_PROCESS_LIMIT", 500, minimum=1, maximum=10_000),
        batch_size=env_int(environ, "SCHEDULER_BATCH_SIZE", 500, minimum=1, maximum=5_000),
        dispatch_concurrency=env_int(environ, "SCHEDULER_DISPATCH_CONCURRENCY", 64, minimum=1, maximum=1_000),
        trigger_batch_size=env_int(environ, "SCHEDULER_TRIGGER_BATCH_SIZE", 100, minimum=1, maximum=500),
        poll_interval_seconds=env_duration(environ, "SCHEDULER_POLL_INTERVAL", 10.0),
        webhook_url=webhook_url,
        webhook_secret=webhook_secret,
    )
