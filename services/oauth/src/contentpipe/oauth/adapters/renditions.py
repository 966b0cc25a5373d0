"""Renditions: media converted to what one platform accepts, stored once and reused by every post to that platform.

Where a rendition lives:
- beside its original in the media storage when the original is a file there (a `file://` URI, or an http(s) URL
  under the storage's public URL, `OAUTH_MEDIA_STORAGE_PUBLIC_URL` ↔ `OAUTH_MEDIA_STORAGE_ROOT`):
  `<original>.renditions/<platform>.<ext>`; the original's key is owner-prefixed, so the rendition is too;
- otherwise (any other http(s) original, or storage we cannot write) in oauth's own renditions folder, keyed by owner
  and the original's content hash: `<OAUTH_RENDITIONS_DIR>/<owner>/<sha256>/<platform>.<ext>`, published under
  `OAUTH_RENDITIONS_PUBLIC_URL` when that is set (platforms that fetch media by URL need it).
A rendition is written to a temporary name and renamed into place, and checked with the same probe before it is used:
an interrupted or stale one is simply made again.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import re
import time
import uuid
from dataclasses import dataclass, replace
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit

from contentpipe.common.errors import FieldViolation
from contentpipe.oauth.adapters.media_tools import MediaToolError, MediaTools
from contentpipe.oauth.adapters.publishers.media import LocalMedia, MediaFetcher, file_path
from contentpipe.oauth.domain.media_conformance import Assessment, MediaProbe, RenditionPlan, Verdict, assess
from contentpipe.oauth.domain.media_conformance import violations as rule_violations
from contentpipe.oauth.domain.media_specs import MediaSpec, SpecTable, spec_for
from contentpipe.oauth.domain.posts import Media, MediaKind, Platform, Post
from contentpipe.oauth.service_layer.metrics import default_metrics
from contentpipe.oauth.service_layer.posting_ports import PublishFailure, RejectedFailure

_log = logging.getLogger(__name__)
_SAFE = re.compile(r"[^A-Za-z0-9._-]")
_EXTENSIONS = {"image/jpeg": "jpg", "video/mp4": "mp4"}
# Platforms that fetch media from a URL themselves: a rendition for them must have a public http(s) URL.
_FETCHED_BY_URL = {(Platform.INSTAGRAM, MediaKind.IMAGE), (Platform.INSTAGRAM, MediaKind.VIDEO),
                   (Platform.TIKTOK, MediaKind.IMAGE)}  # fmt: skip
# JPEG quality (ffmpeg's 2-31, lower is better) and scale tried in turn until an image fits the byte limit.
_IMAGE_ATTEMPTS = ((3, 1.0), (7, 1.0), (12, 1.0), (7, 0.7), (10, 0.5))
# What CreatePost may spend reading and probing one media item; beyond it the check is left to publish time.
INSPECT_SECONDS = 5.0


@dataclass(frozen=True, slots=True)
class StorageArea:
    root: Path
    public_url: str | None = None  # http(s) base that serves `root`

    def uri(self, path: Path) -> str:
        if self.public_url:
            relative = path.resolve().relative_to(self.root.resolve())
            return f"{self.public_url.rstrip('/')}/{quote(relative.as_posix())}"
        return path.resolve().as_uri()

    def local(self, url: str) -> Path | None:
        """The file behind an http(s) URL this area publishes, if it is one."""
        if not self.public_url:
            return None
        base = self.public_url.rstrip("/") + "/"
        if not url.startswith(base):
            return None
        candidate = (self.root / unquote(urlsplit(url).path[len(urlsplit(base).path) :])).resolve()
        return candidate if candidate.is_relative_to(self.root.resolve()) and candidate.is_file() else None


@dataclass(frozen=True, slots=True)
class RenditionSettings:
    own: StorageArea  # oauth's renditions folder
    shared: StorageArea | None = None  # the media storage originals live in (generation's bucket)
    specs: SpecTable | None = None  # the media spec table with configured overrides (None: as shipped)


class Renditions:
    """MediaConformer: measures each media item, converts it when its platform needs that, reuses renditions."""

    def __init__(self, tools: MediaTools, fetcher: MediaFetcher, settings: RenditionSettings) -> None:
        self._tools = tools
        self._fetcher = fetcher
        self._settings = settings
        self._locks: dict[Path, asyncio.Lock] = {}
        self.metrics = default_metrics()

    # ------------------------------------------------------------------ CreatePost

    async def inspect(self, platform: Platform, media: tuple[Media, ...]) -> list[FieldViolation]:
        """Violations for media that no conversion can make acceptable (a bounded read of each original)."""
        found: list[FieldViolation] = []
        for index, item in enumerate(media):
            spec = spec_for(platform, item.kind, self._settings.specs)
            if spec is None:
                continue
            field = f"post.media[{index}]"
            try:
                # Bounded in time too: a slow media host must not make CreatePost miss its caller's deadline.
                async with asyncio.timeout(INSPECT_SECONDS), self._fetcher.open(item, head_only=True) as local:
                    probe = await self._tools.probe(local.path)
                    if local.truncated:
                        probe = replace(probe, size_bytes=local.size)
            except PublishFailure as failure:
                if failure.reason in ("MEDIA_NOT_FOUND", "MEDIA_URL_REFUSED"):
                    found.append(FieldViolation(f"{field}.uri", failure.message))
                continue  # a transient fetch problem: decided at publish time
            except (MediaToolError, TimeoutError):
                continue  # not known in time: decided at publish time
            if local.truncated and not probe.width:
                continue  # the head alone does not tell (index at the end): decided at publish time
            result = assess(probe, spec)
            if result.verdict is Verdict.IMPOSSIBLE and result.blocking is not None:
                found.append(FieldViolation(field, f"{result.blocking.rule}: {result.message}"))
            elif (
                result.verdict is Verdict.CONVERT and self._needs_public(platform, item) and not self._can_publish(item)
            ):
                found.append(FieldViolation(field, self._not_public_message(spec)))
        return found

    # ------------------------------------------------------------------ publishing

    async def conform(self, post: Post) -> tuple[Media, ...]:
        """The post's media as its platform accepts them: originals that conform, renditions for the rest."""
        out = []
        for index, item in enumerate(post.media):
            spec = spec_for(post.platform, item.kind, self._settings.specs)
            out.append(item if spec is None else await self._conform_one(post, index, item, spec))
        return tuple(out)

    async def _conform_one(self, post: Post, index: int, item: Media, spec: MediaSpec) -> Media:
        try:
            async with self._fetcher.open(item) as local:
                try:
                    probe = await self._tools.probe(local.path)
                except MediaToolError as exc:
                    raise RejectedFailure(exc.reason, f"post.media[{index}]: {exc.message}") from None
                result = assess(probe, spec)
                if result.verdict is Verdict.CONFORMS:
                    self.metrics.media_checked(post.platform.value, item.kind.value, "conforms")
                    return item
                if result.verdict is Verdict.IMPOSSIBLE or result.plan is None:
                    raise RejectedFailure("MEDIA_NOT_CONVERTIBLE", f"post.media[{index}]: {result.message}")
                return await self._rendition(post, index, item, local, spec=spec, result=result)
        except PublishFailure as failure:
            self.metrics.media_checked(post.platform.value, item.kind.value, failure.reason.lower())
            raise

    async def _rendition(
        self, post: Post, index: int, item: Media, local: LocalMedia, *, spec: MediaSpec, result: Assessment
    ) -> Media:
        assert result.plan is not None
        area, path = await self._location(post, item, local, spec)
        # Uploading publishers read the file directly; only platforms that fetch media themselves get the URL.
        uri = area.uri(path) if self._needs_public(post.platform, item) else path.resolve().as_uri()
        if not uri.startswith(("http://", "https://", "file:")) or (
            self._needs_public(post.platform, item) and uri.startswith("file:")
        ):
            raise RejectedFailure("RENDITION_NOT_PUBLIC", f"post.media[{index}]: {self._not_public_message(spec)}")
        lock = self._locks.setdefault(path, asyncio.Lock())
        async with lock:
            probe = await self._existing(path, spec)
            if probe is None:
                _log.info(
                    "converting media",
                    extra={"post_id": post.id, "platform": post.platform.value, "plan": result.plan.describe()},
                )
                started = time.monotonic()
                probe = await self._render(local.path, result.plan, path, spec, index)
                self.metrics.media_converted(post.platform.value, item.kind.value, time.monotonic() - started)
                self.metrics.media_checked(post.platform.value, item.kind.value, "converted")
            else:
                self.metrics.media_checked(post.platform.value, item.kind.value, "reused")
        self._locks.pop(path, None)
        return Media(
            uri=uri,
            kind=item.kind,
            content_type=spec.output,
            size_bytes=probe.size_bytes,
            duration_seconds=probe.duration,
            width=probe.width,
            height=probe.height,
        )

    async def _existing(self, path: Path, spec: MediaSpec) -> MediaProbe | None:
        """A rendition made before (by another post, or before a restart) that still meets the rules."""
        if not await asyncio.to_thread(path.is_file):
            return None
        try:
            probe = await self._tools.probe(path)
        except MediaToolError:
            return None
        return probe if not rule_violations(probe, spec) else None

    async def _render(self, source: Path, plan: RenditionPlan, path: Path, spec: MediaSpec, index: int) -> MediaProbe:
        await asyncio.to_thread(path.parent.mkdir, parents=True, exist_ok=True)
        await asyncio.to_thread(_remove_abandoned, path, self._tools.limits.timeout_seconds * 2)
        scratch = path.with_name(f".{path.name}.{uuid.uuid4().hex}.part")
        try:
            attempts = _IMAGE_ATTEMPTS if plan.kind is MediaKind.IMAGE else ((3, 1.0),)
            probe: MediaProbe | None = None
            for quality, scale in attempts:
                attempt = plan if scale == 1.0 else _scaled(plan, scale)
                try:
                    await self._tools.render(source, attempt, scratch, quality=quality)
                except MediaToolError as exc:
                    raise RejectedFailure(exc.reason, f"post.media[{index}]: {exc.message}") from None
                probe = await self._tools.probe(scratch)
                if not plan.max_bytes or probe.size_bytes <= plan.max_bytes:
                    break
            assert probe is not None
            problems = rule_violations(probe, spec)
            if problems:
                raise RejectedFailure(
                    "CONVERSION_DID_NOT_CONFORM",
                    f"post.media[{index}]: the converted file still breaks {spec.name} rules: "
                    + "; ".join(p.description for p in problems),
                )
            await asyncio.to_thread(os.replace, scratch, path)
            return probe
        finally:
            with contextlib.suppress(OSError):
                scratch.unlink()

    async def _location(self, post: Post, item: Media, local: LocalMedia, spec: MediaSpec) -> tuple[StorageArea, Path]:
        """Beside the original when it is a file we may write next to (and, for a platform that fetches by URL,
        one the storage publishes); else oauth's own folder, by owner and content hash."""
        name = f"{post.platform.value}.{_EXTENSIONS.get(spec.output, 'bin')}"
        shared = self._settings.shared
        original: Path | None = None
        if item.uri.startswith("file:"):
            original = file_path(item.uri).resolve()
        elif shared is not None:
            original = shared.local(item.uri)
        if original is not None:
            if shared is not None and original.is_relative_to(shared.root.resolve()):
                area = shared
            else:
                area = StorageArea(original.parent)
            folder = original.parent / f"{original.name}.renditions"
            usable = area.public_url or not self._needs_public(post.platform, item)
            if usable and await asyncio.to_thread(_writable, folder):
                return area, folder / name
        digest = await _sha256(local.path)  # of the bytes we have, never the hash the caller claims
        own = self._settings.own
        return own, own.root / _SAFE.sub("_", post.owner) / digest / name

    def _needs_public(self, platform: Platform, item: Media) -> bool:
        return (platform, item.kind) in _FETCHED_BY_URL

    def _can_publish(self, item: Media) -> bool:
        """Whether a rendition of `item` would get a public URL."""
        if self._settings.own.public_url:
            return True
        shared = self._settings.shared
        if shared is None or not shared.public_url:
            return False
        if item.uri.startswith("file:"):
            return file_path(item.uri).resolve().is_relative_to(shared.root.resolve())
        return shared.local(item.uri) is not None

    @staticmethod
    def _not_public_message(spec: MediaSpec) -> str:
        return (
            f"{spec.label} fetches media by URL and this {spec.kind.value.lower()} must be converted first, but "
            "converted media have no public URL here: set OAUTH_RENDITIONS_PUBLIC_URL (serving OAUTH_RENDITIONS_DIR) "
            "or OAUTH_MEDIA_STORAGE_ROOT with OAUTH_MEDIA_STORAGE_PUBLIC_URL, or post media that already conform"
        )


def _scaled(plan: RenditionPlan, factor: float) -> RenditionPlan:
    def even(value: float) -> int:
        return max(2, int(value * factor) // 2 * 2)

    return replace(
        plan,
        width=even(plan.width),
        height=even(plan.height),
        canvas_width=even(plan.canvas_width),
        canvas_height=even(plan.canvas_height),
    )


def _remove_abandoned(path: Path, older_than: float) -> None:
    """Temporary files of this rendition left by a process killed mid-conversion (none survives a normal run)."""
    cutoff = time.time() - older_than
    for leftover in path.parent.glob(f".{path.name}.*.part"):
        with contextlib.suppress(OSError):
            if leftover.stat().st_mtime < cutoff:
                leftover.unlink()


def _writable(folder: Path) -> bool:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return False
    return os.access(folder, os.W_OK)


async def _sha256(path: Path) -> str:
    def digest() -> str:
        hasher = hashlib.sha256()
        with path.open("rb") as handle:
            while chunk := handle.read(1 << 20):
                hasher.update(chunk)
        return hasher.hexdigest()

    return await asyncio.to_thread(digest)
