"""Configuration of the scheduler service: CommonSettings plus scheduler's own variables."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from contentpipe.common.settings import CommonSettings, load_common_settings

SERVICE = "scheduler"


@dataclass(frozen=True, slots=True)
class SchedulerConfig:
    """Everything the scheduler service reads from the environment, validated once at start-up."""

    common: CommonSettings


def load_config(environ: Mapping[str, str]) -> SchedulerConfig:
    """Build the config from `environ`; raises ConfigError naming the bad variable."""
    return SchedulerConfig(common=load_common_settings(SERVICE, environ))
