"""Posting settings from the environment: platform endpoints (real by default), queue, polling, caps, media."""

from __future__ import annotations

import json
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from contentpipe.common.settings import ConfigError, env_bool, env_duration, env_int, env_str
from contentpipe.common.workqueue import QueueSettings
from contentpipe.oauth.adapters.publishers.calls import LimitPolicy
from contentpipe.oauth.domain.media_specs import SpecTable, with_overrides
from contentpipe.oauth.domain.posts import Platform
from contentpipe.oauth.service_layer.posting_worker import PostingWorkerSettings

MB = 1024 * 1024
# Daily caps per account (0: none). Instagram: 25/50/100 by source (sources say 25, 50 or 100): the safe middle.
DEFAULT_DAILY_CAPS = {
    Platform.INSTAGRAM: 50,
    Platform.GOOGLE: 100,
    Platform.TIKTOK: 0,
    Platform.TWITTER: 0,
    Platform.LINKEDIN: 0,
    Platform.FACEBOOK: 0,
    Platform.OUTBOX: 0,
}


@dataclass(frozen=True, slots=True)
class PublisherSettings:
    outbox_dir: Path
    scratch_dir: Path
    twitter_url: str = "https://api.x.com"
    linkedin_url: str = "https://api.linkedin.com"
    linkedin_version: str = "202601"
    instagram_url: str = "https://graph.instagram.com"
    instagram_version: str = "v23.0"
    facebook_url: str = "https://graph.facebook.com"
    facebook_version: str = "v23.0"
    facebook_video_url: str = "https://graph-video.facebook.com"  # video file uploads go to this host
    tiktok_url: str = "https://open.tiktokapis.com"
    # Domains (`example.com`) or URL prefixes (`https://cdn.example.com/media/`) verified for the TikTok app:
    # media under them is pulled by TikTok (PULL_FROM_URL); videos elsewhere are uploaded, photos elsewhere fail.
    tiktok_verified_url_prefixes: tuple[str, ...] = ()
    youtube_url: str = "https://www.googleapis.com"
    poll_interval: float = 5.0
    poll_max_interval: float = 60.0
    processing_timeout: float = 900.0
    reconcile_grace: float = 120.0
    request_timeout: float = 30.0
    x_chunk_bytes: int = 1 * MB
    youtube_chunk_bytes: int = 8 * MB
    tiktok_chunk_bytes: int = 10 * MB
    max_media_bytes: int = 1024 * MB
    limits: LimitPolicy = field(default_factory=LimitPolicy)


@dataclass(frozen=True, slots=True)
class MediaConversionConfig:
    """Media conformance: bounds of one ffmpeg run and where renditions are stored (docs/media.md)."""

    enabled: bool
    renditions_dir: Path
    renditions_public_url: str | None = None
    storage_root: Path | None = None  # the media storage originals live in (generation's local bucket)
    storage_public_url: str | None = None  # the http(s) URL that serves `storage_root`
    timeout_seconds: float = 300.0
    memory_bytes: int = 2048 * MB
    threads: int = 2
    concurrency: int = 2
    specs: SpecTable | None = None  # OAUTH_MEDIA_SPEC_OVERRIDES applied to the shipped table


@dataclass(frozen=True, slots=True)
class PostingConfig:
    worker_enabled: bool
    worker: PostingWorkerSettings
    publishers: PublisherSettings
    media_roots: tuple[Path, ...]
    media: MediaConversionConfig = field(default_factory=lambda: MediaConversionConfig(False, Path("renditions")))


def _optional_url(environ: Mapping[str, str], name: str) -> str | None:
    value = environ.get(name, "").strip().rstrip("/")
    if not value:
        return None
    if not value.startswith(("http://", "https://")):
        raise ConfigError(f"{name}: expected an http(s) URL, got {value!r}")
    return value


def load_media_config(environ: Mapping[str, str], data_dir: Path) -> MediaConversionConfig:
    """`OAUTH_MEDIA_*` and `OAUTH_RENDITIONS_*`."""
    storage_root = environ.get("OAUTH_MEDIA_STORAGE_ROOT", "").strip()
    storage_url = _optional_url(environ, "OAUTH_MEDIA_STORAGE_PUBLIC_URL")
    if storage_url and not storage_root:
        raise ConfigError("OAUTH_MEDIA_STORAGE_PUBLIC_URL: needs OAUTH_MEDIA_STORAGE_ROOT (the folder it serves)")
    overrides = environ.get("OAUTH_MEDIA_SPEC_OVERRIDES", "").strip()
    specs = None
    if overrides:
        try:
            parsed = json.loads(overrides)
            if not isinstance(parsed, dict) or not all(isinstance(v, dict) for v in parsed.values()):
                raise ValueError('expected a JSON object like {"twitter/video": {"duration": [0.5, 600]}}')
            specs = with_overrides(parsed)
        except ValueError as exc:  # json.JSONDecodeError is a ValueError
            raise ConfigError(f"OAUTH_MEDIA_SPEC_OVERRIDES: {exc}") from None
    return MediaConversionConfig(
        specs=specs,
        enabled=env_bool(environ, "OAUTH_MEDIA_CONFORM", True),
        renditions_dir=Path(env_str(environ, "OAUTH_RENDITIONS_DIR", str(data_dir / "renditions"))),
        renditions_public_url=_optional_url(environ, "OAUTH_RENDITIONS_PUBLIC_URL"),
        storage_root=Path(storage_root) if storage_root else None,
        storage_public_url=storage_url,
        timeout_seconds=env_duration(environ, "OAUTH_MEDIA_CONVERT_TIMEOUT", 300.0),
        memory_bytes=env_int(environ, "OAUTH_MEDIA_CONVERT_MEMORY_MB", 2048, minimum=128, maximum=65536) * MB,
        threads=env_int(environ, "OAUTH_MEDIA_CONVERT_THREADS", 2, minimum=1, maximum=64),
        concurrency=env_int(environ, "OAUTH_MEDIA_CONVERT_CONCURRENCY", 2, minimum=1, maximum=64),
    )


def _url(environ: Mapping[str, str], name: str, default: str) -> str:
    value = env_str(environ, name, default).rstrip("/")
    if not value.startswith(("http://", "https://")):
        raise ConfigError(f"{name}: expected an http(s) URL, got {value!r}")
    return value


def load_posting_config(environ: Mapping[str, str], data_dir: Path, grpc_port: int) -> PostingConfig:
    """`OAUTH_POSTING_*` queue settings, `OAUTH_PUBLISH_<PLATFORM>_URL` endpoints, `OAUTH_OUTBOX_DIR`."""
    caps = {
        platform: env_int(environ, f"OAUTH_POSTING_DAILY_CAP_{platform.value.upper()}", default, minimum=0)
        for platform, default in DEFAULT_DAILY_CAPS.items()
    }
    youtube_chunk = env_int(environ, "OAUTH_PUBLISH_YOUTUBE_CHUNK_BYTES", 8 * MB, minimum=256 * 1024)
    if youtube_chunk % (256 * 1024):
        raise ConfigError("OAUTH_PUBLISH_YOUTUBE_CHUNK_BYTES: must be a multiple of 262144 (256 KiB)")
    roots = [Path(p) for p in env_str(environ, "OAUTH_MEDIA_FILE_ROOTS", str(data_dir)).split(":") if p]
    concurrency = env_int(environ, "OAUTH_POSTING_CONCURRENCY", 8, minimum=1, maximum=1000)
    worker = PostingWorkerSettings(
        queue=QueueSettings(
            owner=env_str(environ, "OAUTH_POSTING_WORKER_ID", f"{socket.gethostname()}:{grpc_port}:posting"),
            lease_seconds=env_duration(environ, "OAUTH_POSTING_LEASE", 30.0),
            poll_interval=env_duration(environ, "OAUTH_POSTING_POLL_INTERVAL", 1.0),
            concurrency=concurrency,
            claim_batch=concurrency,  # one claim may fill every free slot
        ),
        max_attempts=env_int(environ, "OAUTH_POSTING_MAX_ATTEMPTS", 5, minimum=1, maximum=100),
        backoff_base_seconds=env_duration(environ, "OAUTH_POSTING_BACKOFF", 5.0),
        backoff_max_seconds=env_duration(environ, "OAUTH_POSTING_BACKOFF_MAX", 600.0),
        reconcile_delay_seconds=env_duration(environ, "OAUTH_POSTING_RECONCILE_DELAY", 5.0),
        max_reconcile_attempts=env_int(environ, "OAUTH_POSTING_RECONCILE_ATTEMPTS", 10, minimum=1, maximum=1000),
        daily_caps=caps,
    )
    publishers = PublisherSettings(
        outbox_dir=Path(env_str(environ, "OAUTH_OUTBOX_DIR", str(data_dir / "outbox"))),
        scratch_dir=data_dir / "tmp" / "posting",
        twitter_url=_url(environ, "OAUTH_PUBLISH_TWITTER_URL", "https://api.x.com"),
        linkedin_url=_url(environ, "OAUTH_PUBLISH_LINKEDIN_URL", "https://api.linkedin.com"),
        linkedin_version=env_str(environ, "OAUTH_PUBLISH_LINKEDIN_VERSION", "202601"),
        instagram_url=_url(environ, "OAUTH_PUBLISH_INSTAGRAM_URL", "https://graph.instagram.com"),
        instagram_version=env_str(environ, "OAUTH_PUBLISH_INSTAGRAM_VERSION", "v23.0"),
        facebook_url=_url(environ, "OAUTH_PUBLISH_FACEBOOK_URL", "https://graph.facebook.com"),
        facebook_version=env_str(environ, "OAUTH_PUBLISH_FACEBOOK_VERSION", "v23.0"),
        facebook_video_url=_url(environ, "OAUTH_PUBLISH_FACEBOOK_VIDEO_URL", "https://graph-video.facebook.com"),
        tiktok_url=_url(environ, "OAUTH_PUBLISH_TIKTOK_URL", "https://open.tiktokapis.com"),
        tiktok_verified_url_prefixes=tuple(
            p.strip()
            for p in env_str(environ, "OAUTH_PUBLISH_TIKTOK_VERIFIED_URL_PREFIXES", "").split(",")
            if p.strip()
        ),
        youtube_url=_url(environ, "OAUTH_PUBLISH_YOUTUBE_URL", "https://www.googleapis.com"),
        poll_interval=env_duration(environ, "OAUTH_PUBLISH_POLL_INTERVAL", 5.0),
        poll_max_interval=env_duration(environ, "OAUTH_PUBLISH_POLL_MAX", 60.0),
        processing_timeout=env_duration(environ, "OAUTH_PUBLISH_PROCESSING_TIMEOUT", 900.0),
        reconcile_grace=env_duration(environ, "OAUTH_PUBLISH_RECONCILE_GRACE", 120.0),
        request_timeout=env_duration(environ, "OAUTH_PUBLISH_REQUEST_TIMEOUT", 30.0),
        x_chunk_bytes=env_int(environ, "OAUTH_PUBLISH_X_CHUNK_BYTES", 1 * MB, minimum=1024),
        youtube_chunk_bytes=youtube_chunk,
        tiktok_chunk_bytes=env_int(
            environ, "OAUTH_PUBLISH_TIKTOK_CHUNK_BYTES", 10 * MB, minimum=5 * MB, maximum=64 * MB
        ),
        max_media_bytes=env_int(environ, "OAUTH_PUBLISH_MAX_MEDIA_BYTES", 1024 * MB, minimum=1024),
        limits=LimitPolicy(
            default_block_seconds=env_duration(environ, "OAUTH_POSTING_RATE_LIMIT_BACKOFF", 900.0),
            meta_usage_threshold=float(
                env_int(environ, "OAUTH_POSTING_META_USAGE_THRESHOLD", 90, minimum=1, maximum=100)
            ),
        ),
    )
    return PostingConfig(
        worker_enabled=env_bool(environ, "OAUTH_POSTING_WORKER_ENABLED", True),
        worker=worker,
        publishers=publishers,
        media_roots=tuple(roots),
        media=load_media_config(environ, data_dir),
    )
