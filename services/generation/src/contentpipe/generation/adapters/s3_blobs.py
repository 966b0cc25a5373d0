"""The S3-compatible bucket backend of the `generated-content` storage (see `storage`), in its own module so that
botocore, aiobotocore and aiohttp are imported only by a service configured with S3 storage."""

from __future__ import annotations

import asyncio
import base64
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import botocore.session
from aiobotocore.config import AioConfig
from aiobotocore.session import ClientCreatorContext, get_session
from botocore.config import Config as BotoConfig
from botocore.exceptions import ClientError

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client


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
    """An S3-compatible bucket through aiobotocore (botocore's signing, retries and error model on asyncio).

    `start()` opens the client (bootstrap, once), `aclose()` closes it. Pre-signed URLs are computed locally by a
    plain botocore client with the same credentials (no request is made), so `uri()` stays synchronous.
    """

    def __init__(self, settings: S3Settings) -> None:
        self._s = settings
        self.bucket = settings.bucket
        options: dict[str, Any] = {
            "region_name": settings.region,
            "signature_version": "s3v4",
            "s3": {"addressing_style": "path"},
            "retries": {"mode": "standard", "max_attempts": 4},  # jittered backoff; throttling and 5xx retried
            "connect_timeout": 10,
            "read_timeout": 60,
        }
        self._config = AioConfig(**options)
        # botocore builds its client classes at run time: the sync one only signs URLs locally.
        self._signer: Any = botocore.session.get_session().create_client(
            "s3",
            endpoint_url=settings.endpoint_url,
            aws_access_key_id=settings.access_key_id,
            aws_secret_access_key=settings.secret_access_key,
            config=BotoConfig(**options),
        )
        self._context: ClientCreatorContext[S3Client] | None = None
        self._client: S3Client | None = None
        self._opening = asyncio.Lock()

    async def start(self) -> None:
        async with self._opening:
            if self._client is None:
                await self._open()

    async def _open(self) -> None:
        self._context = get_session().create_client(
            "s3",
            endpoint_url=self._s.endpoint_url,
            aws_access_key_id=self._s.access_key_id,
            aws_secret_access_key=self._s.secret_access_key,
            config=self._config,
        )
        self._client = await self._context.__aenter__()

    async def aclose(self) -> None:
        context, self._context, self._client = self._context, None, None
        if context is not None:
            await context.__aexit__(None, None, None)

    async def _s3(self) -> S3Client:
        if self._client is None:
            await self.start()
        assert self._client is not None
        return self._client

    def presign(self, key: str, expires: int) -> str:
        """A pre-signed GET URL valid for `expires` seconds from now (query-string SigV4)."""
        url: str = self._signer.generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": key}, ExpiresIn=expires
        )
        return url

    async def ensure_bucket(self) -> None:
        client = await self._s3()
        try:
            await client.head_bucket(Bucket=self.bucket)
            return
        except ClientError as exc:
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if status != 404 or not self._s.create_bucket:
                raise OSError(f"S3 bucket {self.bucket!r} is not usable: HTTP {status}") from exc
        try:
            await client.create_bucket(Bucket=self.bucket)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                raise OSError(f"S3 bucket {self.bucket!r} cannot be created: {code}") from exc

    async def put_file(self, path: Path, key: str, content_type: str, sha256: str) -> None:
        client = await self._s3()
        checksum = base64.b64encode(bytes.fromhex(sha256)).decode()
        try:
            with path.open("rb") as handle:  # a PUT of the same bytes to the same key is idempotent (retried)
                await client.put_object(
                    Bucket=self.bucket, Key=key, Body=handle, ContentType=content_type, ChecksumSHA256=checksum
                )
        except ClientError as exc:
            error = exc.response.get("Error", {})
            raise OSError(f"S3 PUT {key} refused: {error.get('Code', '')} {error.get('Message', '')}") from exc
        await asyncio.to_thread(path.unlink, True)

    def uri(self, key: str, now: datetime) -> tuple[str, datetime | None]:
        if self._s.public_base_url:
            return f"{self._s.public_base_url.rstrip('/')}/{quote(key, safe='/~')}", None
        return self.presign(key, self._s.presign_seconds), now + timedelta(seconds=self._s.presign_seconds)

    async def read(self, key: str) -> bytes:
        client = await self._s3()
        response = await client.get_object(Bucket=self.bucket, Key=key)
        async with response["Body"] as body:
            data: bytes = await body.read()
        return data
