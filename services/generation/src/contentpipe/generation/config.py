"""Configuration of the generation service: CommonSettings plus generation's own variables."""

from __future__ import annotations

import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from contentpipe.common.settings import (
    CommonSettings,
    ConfigError,
    env_bool,
    env_duration,
    env_float,
    env_int,
    env_optional,
    env_str,
    load_common_settings,
)
from contentpipe.common.workqueue import QueueSettings
from contentpipe.generation.domain.model import GenerationKind

SERVICE = "generation"
PROVIDERS = ("local", "replicate", "cog")


@dataclass(frozen=True, slots=True)
class ProviderLimits:
    concurrency: int
    creates_per_second: float


@dataclass(frozen=True, slots=True)
class ReplicateConfig:
    base_url: str
    api_token: str | None = field(repr=False)
    video_model: str
    image_model: str
    text_model: str
    prefer_wait_seconds: int
    poll_initial_seconds: float
    poll_max_seconds: float
    send_cancel_after: bool
    webhook_url: str | None
    webhook_secret: str | None = field(repr=False)
    lookup_attempts: int
    lookup_delay_seconds: float


@dataclass(frozen=True, slots=True)
class StorageConfig:
    backend: str  # local | s3
    local_dir: Path
    bucket: str
    public_base_url: str | None
    s3_endpoint_url: str | None
    s3_region: str
    s3_access_key_id: str | None = field(repr=False)
    s3_secret_access_key: str | None = field(repr=False)
    s3_presign_seconds: int
    s3_create_bucket: bool
    max_output_bytes: int


@dataclass(frozen=True, slots=True)
class GenerationConfig:
    """Everything the generation service reads from the environment, validated once at start-up."""

    common: CommonSettings
    default_provider: str = "local"
    deadline_seconds: float = 1800.0
    local_time_limit_seconds: float = 1800.0
    worker_enabled: bool = True
    # GENERATION_WORKER_ID, _LEASE, _POLL_INTERVAL, _MAX_IN_FLIGHT (the queue's concurrency).
    queue: QueueSettings = field(
        default_factory=lambda: QueueSettings(owner="generation", concurrency=1000, claim_batch=200)
    )
    limits: Mapping[str, ProviderLimits] = field(default_factory=dict)
    replicate: ReplicateConfig | None = None
    cog_models: Mapping[str, tuple[GenerationKind, str]] = field(default_factory=dict)
    storage: StorageConfig | None = None
    webhook_port: int = 0
    webhook_host: str = "127.0.0.1"
    webhook_base_url: str | None = None
    webhook_secret: str | None = field(default=None, repr=False)
    webhook_max_body_bytes: int = 256 * 1024 * 1024
    cog_redelivery_wait_seconds: float = 600.0


def parse_cog_models(raw: str) -> dict[str, tuple[GenerationKind, str]]:
    """`name:KIND=http://host:port,name2:KIND=...` (KIND: VIDEO, IMAGE or TEXT)."""
    models: dict[str, tuple[GenerationKind, str]] = {}
    for entry in filter(None, (part.strip() for part in raw.split(","))):
        head, sep, url = entry.partition("=")
        name, colon, kind = head.partition(":")
        if not sep or not colon or not name or not url.startswith(("http://", "https://")):
            raise ConfigError(f"COG_MODELS: expected name:KIND=http://host:port entries, got {entry!r}")
        try:
            models[name.strip()] = (GenerationKind(kind.strip().upper()), url.strip())
        except ValueError:
            raise ConfigError(f"COG_MODELS: kind must be VIDEO, IMAGE or TEXT, got {kind!r}") from None
    return models


def load_config(environ: Mapping[str, str]) -> GenerationConfig:
    """Build the config from `environ`; raises ConfigError naming the bad variable."""
    common = load_common_settings(SERVICE, environ)
    default_provider = env_str(environ, "GENERATION_DEFAULT_PROVIDER", "local")
    if default_provider not in PROVIDERS:
        raise ConfigError(
            f"GENERATION_DEFAULT_PROVIDER: expected one of {', '.join(PROVIDERS)}, got {default_provider!r}"
        )
    defaults = {"local": (2, 0.0), "replicate": (200, 10.0), "cog": (4, 0.0)}
    limits = {
        name: ProviderLimits(
            concurrency=env_int(environ, f"GENERATION_{name.upper()}_CONCURRENCY", conc, minimum=1, maximum=100_000),
            creates_per_second=env_float(environ, f"GENERATION_{name.upper()}_CREATES_PER_SECOND", rate, minimum=0.0),
        )
        for name, (conc, rate) in defaults.items()
    }
    replicate = ReplicateConfig(
        base_url=env_str(environ, "REPLICATE_BASE_URL", "https://api.replicate.com"),
        api_token=env_optional(environ, "REPLICATE_API_TOKEN"),
        video_model=env_str(
            environ,
            "REPLICATE_VIDEO_MODEL",
            "stability-ai/stable-video-diffusion:3f0457e4619daac51203dedb472816fd4af51f3149fa7a9e0b5ffcf1b8172438",
        ),
        image_model=env_str(environ, "REPLICATE_IMAGE_MODEL", "black-forest-labs/flux-schnell"),
        text_model=env_str(environ, "REPLICATE_TEXT_MODEL", "meta/meta-llama-3-8b-instruct"),
        prefer_wait_seconds=env_int(environ, "REPLICATE_PREFER_WAIT_SECONDS", 10, minimum=0, maximum=60),
        poll_initial_seconds=env_duration(environ, "REPLICATE_POLL_INITIAL", 0.5),
        poll_max_seconds=env_duration(environ, "REPLICATE_POLL_MAX", 5.0),
        send_cancel_after=env_bool(environ, "REPLICATE_CANCEL_AFTER", True),
        webhook_url=env_optional(environ, "REPLICATE_WEBHOOK_URL"),
        webhook_secret=env_optional(environ, "REPLICATE_WEBHOOK_SECRET"),
        lookup_attempts=env_int(environ, "REPLICATE_CREATE_LOOKUPS", 3, minimum=1, maximum=20),
        lookup_delay_seconds=env_duration(environ, "REPLICATE_CREATE_LOOKUP_DELAY", 1.0),
    )
    if replicate.webhook_url and not replicate.webhook_secret:
        raise ConfigError("REPLICATE_WEBHOOK_SECRET: required when REPLICATE_WEBHOOK_URL is set (whsec_…)")
    if not replicate.base_url.startswith(("http://", "https://")):
        raise ConfigError(f"REPLICATE_BASE_URL: expected an http(s) URL, got {replicate.base_url!r}")
    backend = env_str(environ, "GENERATION_STORAGE_BACKEND", "local").lower()
    if backend not in ("local", "s3"):
        raise ConfigError(f"GENERATION_STORAGE_BACKEND: expected local or s3, got {backend!r}")
    storage = StorageConfig(
        backend=backend,
        local_dir=Path(env_str(environ, "GENERATION_STORAGE_DIR", str(common.data_dir))),
        bucket=env_str(environ, "GENERATION_STORAGE_BUCKET", "generated-content"),
        public_base_url=env_optional(environ, "GENERATION_PUBLIC_BASE_URL"),
        s3_endpoint_url=env_optional(environ, "S3_ENDPOINT_URL"),
        s3_region=env_str(environ, "S3_REGION", "us-east-1"),
        s3_access_key_id=env_optional(environ, "S3_ACCESS_KEY_ID"),
        s3_secret_access_key=env_optional(environ, "S3_SECRET_ACCESS_KEY"),
        s3_presign_seconds=int(env_duration(environ, "S3_PRESIGN_EXPIRY", 3600.0)),
        s3_create_bucket=env_bool(environ, "S3_CREATE_BUCKET", False),
        max_output_bytes=env_int(environ, "GENERATION_MAX_OUTPUT_BYTES", 512 * 1024 * 1024, minimum=1024),
    )
    if backend == "s3":
        for name, value in (
            ("S3_ENDPOINT_URL", storage.s3_endpoint_url),
            ("S3_ACCESS_KEY_ID", storage.s3_access_key_id),
            ("S3_SECRET_ACCESS_KEY", storage.s3_secret_access_key),
        ):
            if not value:
                raise ConfigError(f"{name}: required when GENERATION_STORAGE_BACKEND=s3")
        if not 1 <= storage.s3_presign_seconds <= 604800:
            raise ConfigError("S3_PRESIGN_EXPIRY: expected 1s to 7 days")
    if default_provider == "replicate" and not replicate.api_token:
        raise ConfigError("REPLICATE_API_TOKEN: required when GENERATION_DEFAULT_PROVIDER=replicate")
    cog_models = parse_cog_models(environ.get("COG_MODELS", ""))
    if default_provider == "cog" and not cog_models:
        raise ConfigError("COG_MODELS: required when GENERATION_DEFAULT_PROVIDER=cog")
    webhook_port = env_int(environ, "GENERATION_WEBHOOK_PORT", 0, minimum=0, maximum=65535)
    webhook_host = env_str(environ, "GENERATION_WEBHOOK_HOST", "127.0.0.1")
    webhook_base_url = env_optional(environ, "GENERATION_WEBHOOK_BASE_URL")
    if webhook_port and webhook_base_url is None:
        if webhook_host in ("0.0.0.0", "::"):  # nosec B104 - a comparison, not a bind
            raise ConfigError(
                "GENERATION_WEBHOOK_BASE_URL: required when GENERATION_WEBHOOK_HOST listens on all addresses"
            )
        webhook_base_url = f"http://{webhook_host}:{webhook_port}"
    webhook_secret = env_optional(environ, "GENERATION_WEBHOOK_SECRET") or common.jwt_secret
    if webhook_port and not webhook_secret:
        raise ConfigError("GENERATION_WEBHOOK_SECRET: required with GENERATION_WEBHOOK_PORT when no JWT secret is set")
    deadline_seconds = env_duration(environ, "GENERATION_DEADLINE", 1800.0)
    if deadline_seconds <= 0:
        raise ConfigError(f"GENERATION_DEADLINE: expected a positive duration, got {deadline_seconds:g}s")
    # The local provider's encoder limit lives under the deadline: longer could never apply (the deadline
    # cancels first), and shorter ends a runaway encode early with an error that names this setting.
    local_time_limit = env_duration(environ, "GENERATION_LOCAL_TIME_LIMIT", deadline_seconds)
    if not 0 < local_time_limit <= deadline_seconds:
        raise ConfigError(
            f"GENERATION_LOCAL_TIME_LIMIT: expected a duration above 0 and at most GENERATION_DEADLINE "
            f"({deadline_seconds:g}s), got {local_time_limit:g}s"
        )
    return GenerationConfig(
        common=common,
        default_provider=default_provider,
        deadline_seconds=deadline_seconds,
        local_time_limit_seconds=local_time_limit,
        worker_enabled=env_bool(environ, "GENERATION_WORKER_ENABLED", True),
        queue=QueueSettings(
            owner=env_str(environ, "GENERATION_WORKER_ID", f"{socket.gethostname()}:{common.grpc_port}"),
            lease_seconds=env_duration(environ, "GENERATION_WORKER_LEASE", 30.0),
            poll_interval=env_duration(environ, "GENERATION_WORKER_POLL_INTERVAL", 1.0),
            concurrency=env_int(environ, "GENERATION_WORKER_MAX_IN_FLIGHT", 1000, minimum=1, maximum=100_000),
            claim_batch=200,
        ),
        limits=limits,
        replicate=replicate,
        cog_models=cog_models,
        storage=storage,
        webhook_port=webhook_port,
        webhook_host=webhook_host,
        webhook_base_url=webhook_base_url,
        webhook_secret=webhook_secret,
        # Cog inlines outputs as base64 data: URIs (4/3 of the file): 256 MiB takes a ~190 MB video.
        webhook_max_body_bytes=env_int(
            environ, "GENERATION_WEBHOOK_MAX_BODY", 256 * 1024 * 1024, minimum=64 * 1024, maximum=2**40
        ),
        cog_redelivery_wait_seconds=env_duration(environ, "COG_REDELIVERY_WAIT", 600.0),
    )
