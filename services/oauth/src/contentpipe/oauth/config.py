"""Configuration of the oauth service: CommonSettings plus oauth's own variables."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from contentpipe.common.settings import CommonSettings, load_common_settings

SERVICE = "oauth"


@dataclass(frozen=True, slots=True)
class OauthConfig:
    """Everything the oauth service reads from the environment, validated once at start-up."""

    common: CommonSettings


def load_config(environ: Mapping[str, str]) -> OauthConfig:
    """Build the config from `environ`; raises ConfigError naming the bad variable."""
    return OauthConfig(common=load_common_settings(SERVICE, environ))
