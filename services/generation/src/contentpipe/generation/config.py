"""Configuration of the generation service: CommonSettings plus generation's own variables."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from contentpipe.common.settings import CommonSettings, load_common_settings

SERVICE = "generation"


@dataclass(frozen=True, slots=True)
class GenerationConfig:
    """Everything the generation service reads from the environment, validated once at start-up."""

    common: CommonSettings


def load_config(environ: Mapping[str, str]) -> GenerationConfig:
    """Build the config from `environ`; raises ConfigError naming the bad variable."""
    return GenerationConfig(common=load_common_settings(SERVICE, environ))
