"""Composition of the posting half of the oauth service (called from `bootstrap.py`, the one composition root).

Kept apart so the connections half and posting can be wired (and tested) independently: given the engine, the
common settings, posting's config and the connections' TokenProvider, it builds the servicer, the queue worker
and the HTTP clients the publishers share.
"""

from __future__ import annotations

from dataclasses import dataclass

import httpx
from contentpipe.api.oauth.v1 import posting_service_pb2, posting_service_pb2_grpc
from contentpipe.common.changes import ChangeNotifier
from contentpipe.common.http import create_http_client
from contentpipe.common.notify import ChangeChannel, PgWakeChannel, change_channel, close_channels, wake_channel
from contentpipe.common.pagination import PageTokenCodec
from contentpipe.common.server import ServiceRegistration
from contentpipe.common.settings import CommonSettings
from contentpipe.oauth.adapters.media_tools import MediaTools, ToolLimits
from contentpipe.oauth.adapters.post_repository import SqlPostRepository, SqlRateLimitStore
from contentpipe.oauth.adapters.publishers.facebook import FacebookPublisher
from contentpipe.oauth.adapters.publishers.instagram import InstagramPublisher
from contentpipe.oauth.adapters.publishers.linkedin import LinkedInPublisher
from contentpipe.oauth.adapters.publishers.media import MediaFetcher, MediaPolicy
from contentpipe.oauth.adapters.publishers.outbox import OutboxPublisher
from contentpipe.oauth.adapters.publishers.settings import PostingConfig
from contentpipe.oauth.adapters.publishers.tiktok import TikTokPublisher
from contentpipe.oauth.adapters.publishers.twitter import TwitterPublisher
from contentpipe.oauth.adapters.publishers.youtube import YouTubePublisher
from contentpipe.oauth.adapters.renditions import Renditions, RenditionSettings, StorageArea
from contentpipe.oauth.domain.posts import Platform
from contentpipe.oauth.entrypoints.grpc_posting import PostingServiceServicer
from contentpipe.oauth.service_layer.posting import PostingServices
from contentpipe.oauth.service_layer.posting_ports import Publisher
from contentpipe.oauth.service_layer.posting_watch import NotifyingPostRepository
from contentpipe.oauth.service_layer.posting_worker import PostingWorker
from contentpipe.oauth.service_layer.tokens import TokenProvider
from sqlalchemy.ext.asyncio import AsyncEngine


@dataclass(slots=True)
class PostingApplication:
    services: PostingServices
    worker: PostingWorker
    registration: ServiceRegistration
    clients: list[httpx.AsyncClient]
    worker_enabled: bool
    notify: PgWakeChannel | None = None  # CreatePost on another replica wakes this worker (PostgreSQL)
    changes: ChangeChannel | None = None  # a post saved by another replica wakes WaitPost here (PostgreSQL)

    async def close(self) -> None:
        await close_channels(self.notify, self.changes)
        for client in self.clients:
            await client.aclose()


def build_posting(
    common: CommonSettings, config: PostingConfig, engine: AsyncEngine, tokens: TokenProvider
) -> PostingApplication:
    s = config.publishers
    timeout = httpx.Timeout(connect=5.0, read=s.request_timeout, write=s.request_timeout, pool=10.0)
    platform_client = create_http_client(timeout=timeout, max_connections=100)
    fetch_client = create_http_client(timeout=httpx.Timeout(connect=10.0, read=60.0, write=60.0, pool=30.0))
    m = config.media
    # Renditions are read back as files by the uploading publishers: their folders are storage roots too.
    roots = (*config.media_roots, m.renditions_dir, *((m.storage_root,) if m.storage_root else ()))
    policy = MediaPolicy(allow_private=common.allow_private_urls, file_roots=roots)
    media = MediaFetcher(fetch_client, policy, s.scratch_dir, s.max_media_bytes)
    renditions = (
        Renditions(
            MediaTools(ToolLimits(m.timeout_seconds, m.memory_bytes, m.threads, m.concurrency)),
            media,
            RenditionSettings(
                own=StorageArea(m.renditions_dir, m.renditions_public_url),
                shared=StorageArea(m.storage_root, m.storage_public_url) if m.storage_root else None,
                specs=m.specs,
            ),
        )
        if m.enabled
        else None
    )
    publishers: dict[Platform, Publisher] = {
        Platform.OUTBOX: OutboxPublisher(s.outbox_dir, media),
        Platform.TWITTER: TwitterPublisher(platform_client, s, media),
        Platform.LINKEDIN: LinkedInPublisher(platform_client, s, media),
        Platform.INSTAGRAM: InstagramPublisher(platform_client, s, media),
        Platform.TIKTOK: TikTokPublisher(platform_client, s, media),
        Platform.FACEBOOK: FacebookPublisher(platform_client, s, media),
        Platform.GOOGLE: YouTubePublisher(platform_client, s, media),
    }
    changes = ChangeNotifier(recheck_seconds=common.long_poll_recheck_seconds)
    repository = NotifyingPostRepository(SqlPostRepository(engine), changes)
    worker = PostingWorker(
        repository, tokens, publishers, SqlRateLimitStore(engine), config.worker, conformer=renditions
    )
    services = PostingServices(
        repository=repository,
        tokens=tokens,
        media_check=policy.check,
        media_inspect=renditions.inspect if renditions is not None else None,
        media_specs=m.specs,
        wake_worker=worker.wake,  # also wakes the other replicas (NOTIFY), even when this one runs no worker
        dispatch=worker.queue,
        changes=changes,
    )
    page_tokens = PageTokenCodec(common.jwt_secret or common.jwks_url, purpose="posting-page")
    registration = ServiceRegistration(
        full_name=posting_service_pb2.DESCRIPTOR.services_by_name["PostingService"].full_name,
        add_to_server=posting_service_pb2_grpc.add_PostingServiceServicer_to_server,
        servicer=PostingServiceServicer(services, page_tokens),
    )
    return PostingApplication(
        services,
        worker,
        registration,
        [platform_client, fetch_client],
        config.worker_enabled,
        notify=wake_channel(engine, "contentpipe_posting", worker.queue.wake),
        changes=change_channel(engine, "contentpipe_posting_changes", changes),
    )
