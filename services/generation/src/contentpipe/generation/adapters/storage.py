"""The `generated-content` bucket: outputs are fetched at once, checked, probed and stored on local disk or S3.

Replicate deletes API outputs after an hour, and platforms fetch media by URL minutes later, so every output is
copied into our storage and handed out as a URL that we control (public base URL, pre-signed URL or file://).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import logging
import os
import re
import shutil
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol
from urllib.parse import quote, unquote, urlsplit

import httpx
from contentpipe.generation.adapters.media import MediaError, probe_image_size, probe_video, sniff_content_type
from contentpipe.generation.domain.model import Asset, ErrorReason, GenerationFailure, GenerationKind
from contentpipe.generation.service_layer.ports import OutputFile

_log = logging.getLogger(__name__)

_CHUNK = 256 * 1024
_SAFE_SEGMENT = re.compile(r"[^A-Za-z0-9._-]")
_EXTENSION = {
    "video/mp4": "mp4",
    "video/quicktime": "mov",
    "video/webm": "webm",
    "image/png": "png",
    "image/jpeg": "jpg",
    "image/webp": "webp",
    "image/gif": "gif",
}
_ACCEPTED = {
    GenerationKind.VIDEO: {"video/mp4", "video/quicktime", "video/webm"},
    GenerationKind.IMAGE: {"image/png", "image/jpeg", "image/webp"},
}


class BlobBackend(Protocol):
    """Where stored outputs live: local files here, an S3 bucket in `s3_blobs` (imported only when configured: its
    libraries cost ~15 MB of memory in every process that imports them)."""

    bucket: str

    async def ensure_bucket(self) -> None:
        """Check (or create) the bucket before the service turns SERVING."""

    async def aclose(self) -> None: ...

    async def put_file(self, path: Path, key: str, content_type: str, sha256: str) -> None: ...

    def uri(self, key: str, now: datetime) -> tuple[str, datetime | None]: ...

    async def read(self, key: str) -> bytes: ...


class LocalBlobs:
    """Files under `<root>/<bucket>/…`; URIs are `file://` (or `public_base_url/<key>` when served over HTTP)."""

    def __init__(self, root: Path, bucket: str = "generated-content", public_base_url: str | None = None) -> None:
        self.root = root.resolve()
        self.bucket = bucket
        self._public = public_base_url.rstrip("/") if public_base_url else None

    async def ensure_bucket(self) -> None:
        """Nothing to check: folders are created by the first write."""

    async def aclose(self) -> None:
        """Nothing to release."""

    def _path(self, key: str) -> Path:
        path = (self.root / self.bucket / key).resolve()
        if self.root not in path.parents:
            raise ValueError(f"storage key escapes the storage root: {key!r}")
        return path

    async def put_file(self, path: Path, key: str, content_type: str, sha256: str) -> None:
        target = self._path(key)

        def move() -> None:
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(f".{target.name}.{os.getpid()}.part")
            shutil.move(str(path), tmp)
            os.replace(tmp, target)  # atomic: readers never see half a file

        await asyncio.to_thread(move)

    def uri(self, key: str, now: datetime) -> tuple[str, datetime | None]:
        if self._public:
            return f"{self._public}/{self.bucket}/{quote(key)}", None
        return self._path(key).as_uri(), None

    async def read(self, key: str) -> bytes:
        return await asyncio.to_thread(self._path(key).read_bytes)


class StoredAssets:
    """AssetStore: fetch outputs (URL, `data:` URI or a local provider's file), check, probe and store them."""

    def __init__(
        self,
        blobs: BlobBackend,
        client: httpx.AsyncClient,
        *,
        scratch_dir: Path,
        max_bytes: int,
        fetch_timeout: float = 300.0,
        download_concurrency: int = 16,
    ) -> None:
        self._blobs = blobs
        self._client = client
        self._scratch = scratch_dir.resolve()
        self._max_bytes = max_bytes
        self._fetch_timeout = fetch_timeout
        self._downloads = asyncio.Semaphore(download_concurrency)

    def scratch_file(self, suffix: str) -> Path:
        self._scratch.mkdir(parents=True, exist_ok=True)
        handle, name = tempfile.mkstemp(dir=self._scratch, suffix=suffix)
        os.close(handle)
        return Path(name)

    async def ingest(self, output: OutputFile) -> Asset:
        path = self.scratch_file(".part")
        try:
            header_type = await self._fetch(output.source, path)
            size = path.stat().st_size
            digest, head = await asyncio.to_thread(_sha256_and_head, path)
            content_type = sniff_content_type(head)
            accepted = _ACCEPTED.get(output.kind, set())
            if content_type not in accepted:
                raise GenerationFailure(
                    ErrorReason.OUTPUT_UNREADABLE,
                    f"the provider returned {content_type or header_type or 'an unknown file type'} where "
                    f"{output.kind.value} output ({', '.join(sorted(accepted))}) was expected",
                )
            asset = await self._describe(path, content_type)
            owner, _, rest = output.key.partition("/")
            key = f"{_SAFE_SEGMENT.sub('_', owner)}/{rest.rsplit('.', 1)[0]}.{_EXTENSION[content_type]}"
            await self._blobs.put_file(path, key, content_type, digest)
            now = datetime.now(UTC)
            uri, expire = self._blobs.uri(key, now)
            return Asset(
                uri=uri,
                content_type=content_type,
                size_bytes=size,
                sha256=digest,
                storage_key=f"{self._blobs.bucket}/{key}",
                width=asset.width,
                height=asset.height,
                duration_seconds=asset.duration_seconds,
                frame_count=asset.frame_count,
                fps=asset.fps,
                expire_time=expire,
                metadata=dict(output.metadata),
            )
        finally:
            path.unlink(missing_ok=True)

    def present(self, asset: Asset, now: datetime) -> Asset:
        if asset.expire_time is None:
            return asset
        key = asset.storage_key.removeprefix(f"{self._blobs.bucket}/")
        uri, expire = self._blobs.uri(key, now)
        return asset.with_uri(uri, expire)

    async def inline_source(self, asset: Asset) -> str:
        if asset.uri.startswith(("http://", "https://")):
            return self.present(asset, datetime.now(UTC)).uri
        data = await self._blobs.read(asset.storage_key.removeprefix(f"{self._blobs.bucket}/"))
        return f"data:{asset.content_type};base64,{base64.b64encode(data).decode()}"

    async def _describe(self, path: Path, content_type: str) -> Asset:
        try:
            if content_type.startswith("video/"):
                info = await probe_video(path)
                return Asset("", content_type, 0, "", "", info.width, info.height, info.duration_seconds,
                             info.frame_count, info.fps)  # fmt: skip
            width, height = await probe_image_size(path)
            return Asset("", content_type, 0, "", "", width, height)
        except MediaError as exc:
            raise GenerationFailure(ErrorReason.OUTPUT_UNREADABLE, f"the output file cannot be read: {exc}") from exc

    async def _fetch(self, source: str, path: Path) -> str:
        """Copy `source` into `path` (size-capped); returns the Content-Type the source declared, if any."""
        if source.startswith("data:"):
            header, _, payload = source.partition(",")
            if len(payload) * 3 // 4 > self._max_bytes:
                raise self._too_large()
            try:
                raw = (
                    base64.b64decode(payload, validate=True)
                    if header.endswith(";base64")
                    else unquote(payload).encode()
                )
            except (binascii.Error, ValueError) as exc:
                raise GenerationFailure(
                    ErrorReason.OUTPUT_UNREADABLE, "the provider returned a broken data: URI"
                ) from exc
            await asyncio.to_thread(path.write_bytes, raw)
            return header.removeprefix("data:").split(";", 1)[0]
        if source.startswith("file://"):
            # Only the local provider produces file:// outputs, always inside our scratch directory.
            local = Path(unquote(urlsplit(source).path))
            if self._scratch not in local.parents:
                raise GenerationFailure(ErrorReason.OUTPUT_UNREADABLE, "file output outside the scratch directory")
            if (await asyncio.to_thread(local.stat)).st_size > self._max_bytes:
                raise self._too_large()
            await asyncio.to_thread(shutil.move, str(local), str(path))
            return ""
        if not source.startswith(("http://", "https://")):
            raise GenerationFailure(ErrorReason.OUTPUT_UNREADABLE, "the provider returned an output that is not a URL")
        return await self._download(source, path)

    async def _download(self, url: str, path: Path) -> str:
        last_error = ""
        for attempt in range(4):
            try:
                # Few downloads at once: waiting here is cheap, while httpx's pool rescans every queued request
                # on each event (quadratic CPU with hundreds waiting).
                async with self._downloads, asyncio.timeout(self._fetch_timeout):
                    return await self._download_once(url, path)
            except GenerationFailure:
                raise
            except (httpx.TransportError, TimeoutError, _RetryableStatus) as exc:
                last_error = str(exc) or type(exc).__name__
                await asyncio.sleep(min(8.0, 0.5 * 2**attempt))
        raise GenerationFailure(
            ErrorReason.PROVIDER_UNAVAILABLE,
            f"could not download the output from the provider ({last_error}); it may have expired",
            retryable=True,
        )

    async def _download_once(self, url: str, path: Path) -> str:
        async with self._client.stream("GET", url, follow_redirects=True) as response:
            if response.status_code in (408, 429) or response.status_code >= 500:
                raise _RetryableStatus(f"HTTP {response.status_code}")
            if response.status_code >= 400:
                raise GenerationFailure(
                    ErrorReason.OUTPUT_UNREADABLE,
                    f"the output URL answered HTTP {response.status_code}; outputs are deleted after an hour",
                )
            declared = response.headers.get("content-type", "").split(";", 1)[0].strip().lower()
            if declared and not declared.startswith(("video/", "image/", "application/octet-stream", "binary/")):
                raise GenerationFailure(ErrorReason.OUTPUT_UNREADABLE, f"the output URL served {declared}, not media")
            length = response.headers.get("content-length", "")
            if length.isdigit() and int(length) > self._max_bytes:
                raise self._too_large()
            written = 0
            with path.open("wb") as handle:
                async for chunk in response.aiter_bytes(_CHUNK):
                    written += len(chunk)
                    if written > self._max_bytes:
                        raise self._too_large()
                    await asyncio.to_thread(handle.write, chunk)
            return str(declared)

    def _too_large(self) -> GenerationFailure:
        return GenerationFailure(
            ErrorReason.OUTPUT_TOO_LARGE,
            f"the output is larger than {self._max_bytes:,} bytes (GENERATION_MAX_OUTPUT_BYTES)",
        )


class _RetryableStatus(Exception):
    pass


def _sha256_and_head(path: Path) -> tuple[str, bytes]:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        head = handle.read(64)
        digest.update(head)
        while chunk := handle.read(1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest(), head
