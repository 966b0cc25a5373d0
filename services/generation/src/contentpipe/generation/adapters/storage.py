"""The `generated-content` bucket: outputs are fetched at once, checked, probed and stored on local disk or S3.

Replicate deletes API outputs after an hour, and platforms fetch media by URL minutes later, so every output is
copied into our storage and handed out as a URL that we control (public base URL, pre-signed URL or file://).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import logging
import os
import re
import shutil
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
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
    bucket: str

    async def put_file(self, path: Path, key: str, content_type: str, sha256: str) -> None: ...

    def uri(self, key: str, now: datetime) -> tuple[str, datetime | None]: ...

    async def read(self, key: str) -> bytes: ...


class LocalBlobs:
    """Files under `<root>/<bucket>/…`; URIs are `file://` (or `public_base_url/<key>` when served over HTTP)."""

    def __init__(self, root: Path, bucket: str = "generated-content", public_base_url: str | None = None) -> None:
        self.root = root.resolve()
        self.bucket = bucket
        self._public = public_base_url.rstrip("/") if public_base_url else None

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


@dataclass(frozen=True, slots=True)
class S3Settings:
    endpoint_url: str
    bucket: str
    region: str
    access_key_id: str
    secret_access_key: str
    public_base_url: str | None = None
    presign_seconds: int = 3600
    create_bucket: bool = False


class S3Blobs:
    """An S3-compatible bucket over the shared httpx client, signed with AWS Signature Version 4 (path-style)."""

    def __init__(self, settings: S3Settings, client: httpx.AsyncClient) -> None:
        self._s = settings
        self._client = client
        self.bucket = settings.bucket
        parts = urlsplit(settings.endpoint_url)
        self._host = parts.netloc
        self._base = f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}"
        self._prefix = parts.path.rstrip("/")

    def _canonical_uri(self, key: str) -> str:
        return (
            f"{self._prefix}/{quote(self.bucket, safe='')}/{quote(key, safe='/~')}"
            if key
            else (f"{self._prefix}/{quote(self.bucket, safe='')}")
        )

    def _signing_key(self, date: str) -> bytes:
        key = ("AWS4" + self._s.secret_access_key).encode()
        for part in (date, self._s.region, "s3", "aws4_request"):
            key = hmac.new(key, part.encode(), hashlib.sha256).digest()
        return key

    def _sign(self, string_to_sign: str, date: str) -> str:
        return hmac.new(self._signing_key(date), string_to_sign.encode(), hashlib.sha256).hexdigest()

    def _auth_headers(
        self, method: str, key: str, payload_sha256: str, extra: dict[str, str], now: datetime
    ) -> dict[str, str]:
        amz_date = now.strftime("%Y%m%dT%H%M%SZ")
        date = amz_date[:8]
        headers = {"host": self._host, "x-amz-content-sha256": payload_sha256, "x-amz-date": amz_date}
        headers.update({k.lower(): v.strip() for k, v in extra.items()})
        signed = ";".join(sorted(headers))
        canonical_headers = "".join(f"{k}:{headers[k]}\n" for k in sorted(headers))
        canonical = "\n".join([method, self._canonical_uri(key), "", canonical_headers, signed, payload_sha256])
        scope = f"{date}/{self._s.region}/s3/aws4_request"
        to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()])
        headers["authorization"] = (
            f"AWS4-HMAC-SHA256 Credential={self._s.access_key_id}/{scope}, SignedHeaders={signed}, "
            f"Signature={self._sign(to_sign, date)}"
        )
        headers.pop("host")
        return headers

    def presign(self, key: str, now: datetime, expires: int) -> str:
        """A pre-signed GET URL valid for `expires` seconds from `now` (query-string SigV4)."""
        amz_date = now.strftime("%Y%m%dT%H%M%SZ")
        date = amz_date[:8]
        scope = f"{date}/{self._s.region}/s3/aws4_request"
        query = {
            "X-Amz-Algorithm": "AWS4-HMAC-SHA256",
            "X-Amz-Credential": f"{self._s.access_key_id}/{scope}",
            "X-Amz-Date": amz_date,
            "X-Amz-Expires": str(expires),
            "X-Amz-SignedHeaders": "host",
        }
        canonical_query = "&".join(f"{quote(k, safe='~')}={quote(v, safe='~')}" for k, v in sorted(query.items()))
        canonical = "\n".join(
            ["GET", self._canonical_uri(key), canonical_query, f"host:{self._host}\n", "host", "UNSIGNED-PAYLOAD"]
        )
        to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()])
        signature = self._sign(to_sign, date)
        path = self._canonical_uri(key)[len(self._prefix) :]
        return f"{self._base}{path}?{canonical_query}&X-Amz-Signature={signature}"

    async def ensure_bucket(self) -> None:
        empty = hashlib.sha256(b"").hexdigest()
        headers = self._auth_headers("HEAD", "", empty, {}, datetime.now(UTC))
        response = await self._client.head(f"{self._base}/{self.bucket}", headers=headers)
        if response.status_code == 404 and self._s.create_bucket:
            headers = self._auth_headers("PUT", "", empty, {}, datetime.now(UTC))
            response = await self._client.put(f"{self._base}/{self.bucket}", headers=headers)
        if response.status_code >= 300:
            raise OSError(f"S3 bucket {self.bucket!r} is not usable: HTTP {response.status_code}")

    async def put_file(self, path: Path, key: str, content_type: str, sha256: str) -> None:
        size = (await asyncio.to_thread(path.stat)).st_size
        headers = self._auth_headers(
            "PUT", key, sha256, {"content-type": content_type, "content-length": str(size)}, datetime.now(UTC)
        )

        async def body() -> AsyncIterator[bytes]:
            with path.open("rb") as handle:
                while chunk := await asyncio.to_thread(handle.read, 1024 * 1024):
                    yield chunk

        for attempt in range(3):  # a PUT of the same bytes to the same key is idempotent
            try:
                response = await self._client.put(
                    f"{self._base}/{self.bucket}/{quote(key, safe='/~')}", content=body(), headers=headers
                )
            except httpx.TransportError:
                if attempt == 2:
                    raise
                await asyncio.sleep(0.5 * 2**attempt)
                continue
            if response.status_code < 300:
                await asyncio.to_thread(path.unlink, True)
                return
            if response.status_code < 500 or attempt == 2:
                raise OSError(f"S3 PUT {key} answered HTTP {response.status_code}: {response.text[:200]}")
            await asyncio.sleep(0.5 * 2**attempt)

    def uri(self, key: str, now: datetime) -> tuple[str, datetime | None]:
        if self._s.public_base_url:
            return f"{self._s.public_base_url.rstrip('/')}/{quote(key, safe='/~')}", None
        return self.presign(key, now, self._s.presign_seconds), now + timedelta(seconds=self._s.presign_seconds)

    async def read(self, key: str) -> bytes:
        response = await self._client.get(self.presign(key, datetime.now(UTC), 300))
        response.raise_for_status()
        return response.content


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
