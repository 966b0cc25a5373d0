"""Configuration of the pipelines service: CommonSettings plus pipelines's own variables."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from contentpipe.common.settings import CommonSettings, load_common_settings

SERVICE = "pipelines"


@dataclass(frozen=True, slots=True)
class PipelinesConfig:
    """Everything the pipelines service reads from the environment, validated once at start-up."""

    common: CommonSettings


def load_config(environ: Mapping[str, str]) -> PipelinesConfig:
    """Build the config from `environ`; raises ConfigError naming the bad variable."""
    return PipelinesConfig(common=load_common_settings(SERVICE, environ))
