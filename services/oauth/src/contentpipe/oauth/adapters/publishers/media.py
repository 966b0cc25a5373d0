"""Access to a post's media: `file://` inside contentpipe's storage, or http(s) fetched to a scratch file.

`MediaPolicy.check` runs at CreatePost (InvalidArgument naming the field) and again when the media is fetched at
publish time, on every redirect hop (DNS answers change between the two; a redirect can point anywhere): the fetch
client never follows redirects by itself. Publishers then read the bytes in chunks from a local file, so a chunked
upload can be resumed at any offset.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urljoin, urlsplit

import httpx
from contentpipe.common.errors import InvalidArgument
from contentpipe.common.http import OutboundUrlPolicy
from contentpipe.oauth.domain.posts import Media
from contentpipe.oauth.service_layer.posting_ports import RejectedFailure, RetryableFailure

MAX_MEDIA_REDIRECTS = 5
# CreatePost reads at most this much of an http(s) original to probe it (an MP4 with its index first, an image).
HEAD_BYTES = 8 * 1024 * 1024


def file_path(uri: str) -> Path:
    parts = urlsplit(uri)
    if parts.netloc not in ("", "localhost"):
        raise ValueError("file:// URI with a host")
    return Path(unquote(parts.path))


def looks_like_media(path: Path) -> bool:
    """Image or video by its first bytes: a `file://` URI can never post a database, a key file or /etc/passwd."""
    try:
        with path.open("rb") as handle:
            head = handle.read(16)
    except OSError:
        return False
    return (
        head.startswith((b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF87a", b"GIF89a", b"\x1a\x45\xdf\xa3"))
        or (head[:4] == b"RIFF" and head[8:12] in (b"WEBP", b"AVI "))
        or head[4:8] == b"ftyp"
    )


class MediaPolicy:
    """What media URIs a post may name: public http(s) (the SSRF policy) or image/video files in storage.

    `file://` must lie under one of the storage roots (OAUTH_MEDIA_FILE_ROOTS, default the data dir); with
    CONTENTPIPE_ALLOW_PRIVATE_URLS (local demos, where each service may have its own data dir) anywhere. Either
    way the file must be an image or a video by its content.
    """

    def __init__(self, *, allow_private: bool, file_roots: Sequence[Path]) -> None:
        self._allow_private = allow_private
        self._roots = [root.resolve() for root in file_roots]

    def allows_file(self, uri: str) -> Path | None:
        try:
            path = file_path(uri).resolve()
        except (ValueError, OSError):
            return None
        if not self._allow_private and not any(path.is_relative_to(root) for root in self._roots):
            return None
        return path if path.is_file() and looks_like_media(path) else None

    def owned_by(self, path: Path, owner: str) -> bool:
        """Whether a stored file is `owner`'s: generation stores outputs under `<bucket>/<owner>/<generation>/`,
        so the owner's id is a folder between the storage root and the file."""
        root = next((r for r in self._roots if path.is_relative_to(r)), None)
        folders = (path.relative_to(root) if root is not None else path).parts[:-1]
        return bool(owner) and owner in folders

    async def check(self, uri: str, field: str, owner: str | None = None) -> None:
        try:
            scheme = urlsplit(uri).scheme
        except ValueError:
            raise InvalidArgument.single(field, "not a valid URL") from None
        if scheme == "file":
            path = self.allows_file(uri)
            # Another user's file gets the same answer as a missing one: no oracle for what others stored.
            if path is None or (owner is not None and not self.owned_by(path, owner)):
                raise InvalidArgument.single(
                    field,
                    "file:// media must be an existing image or video file among your own outputs in contentpipe's "
                    "storage (…/<your user id>/<generation id>/<file>)",
                )
            return
        try:
            await OutboundUrlPolicy(allow_private=self._allow_private, field=field).check(uri)
        except ValueError:  # e.g. a port out of range
            raise InvalidArgument.single(field, "not a valid URL") from None


@dataclass(slots=True)
class LocalMedia:
    path: Path
    size: int
    content_type: str
    temporary: bool = False
    truncated: bool = False  # only the head was read (`size` is then the declared length, if any)

    async def read(self, offset: int, length: int) -> bytes:
        def _read() -> bytes:
            with self.path.open("rb") as handle:
                handle.seek(offset)
                return handle.read(length)

        return await asyncio.to_thread(_read)

    async def read_all(self) -> bytes:
        return await asyncio.to_thread(self.path.read_bytes)

    def close(self) -> None:
        if self.temporary:
            with contextlib.suppress(OSError):
                self.path.unlink()


class MediaFetcher:
    """Opens media as local files; http(s) media is downloaded once per publish into the scratch folder."""

    def __init__(self, http: httpx.AsyncClient, policy: MediaPolicy, scratch: Path, max_bytes: int) -> None:
        self._http = http
        self._policy = policy
        self._scratch = scratch
        self._max_bytes = max_bytes

    @contextlib.asynccontextmanager
    async def open(self, media: Media, *, head_only: bool = False) -> AsyncIterator[LocalMedia]:
        """The media as a local file; `head_only`: at most HEAD_BYTES of an http(s) original (to probe it)."""
        local = await self._open(media, HEAD_BYTES if head_only else None)
        try:
            yield local
        finally:
            local.close()

    async def _open(self, media: Media, head: int | None = None) -> LocalMedia:
        if urlsplit(media.uri).scheme == "file":
            path = self._policy.allows_file(media.uri)
            if path is None:
                raise RejectedFailure("MEDIA_NOT_FOUND", "a file:// media item is gone from storage")
            return LocalMedia(path, path.stat().st_size, media.mime)
        self._scratch.mkdir(parents=True, exist_ok=True)
        target = self._scratch / f"media-{uuid.uuid4().hex}"
        size = 0
        truncated = False
        url = media.uri
        try:
            for _hop in range(MAX_MEDIA_REDIRECTS + 1):
                await self._check_url(url)
                async with self._http.stream("GET", url, follow_redirects=False) as response:
                    location = response.headers.get("location", "")
                    if 300 <= response.status_code < 400 and location:
                        try:
                            url = urljoin(url, location)
                        except ValueError:
                            raise RejectedFailure("MEDIA_FETCH_FAILED", "media redirect to an invalid URL") from None
                        continue
                    if not 200 <= response.status_code < 300:
                        # Anything but a 2xx is not the media body (a 3xx with no Location included).
                        transient = response.status_code >= 500 or response.status_code in (408, 429)
                        failure = RetryableFailure if transient else RejectedFailure
                        raise failure("MEDIA_FETCH_FAILED", f"fetching media answered {response.status_code}")
                    with target.open("wb") as handle:
                        async for chunk in response.aiter_bytes(1 << 20):
                            size += len(chunk)
                            if head is not None and size > head:
                                declared = response.headers.get("content-length", "")
                                size = int(declared) if declared.isdigit() else size
                                truncated = True
                                break
                            if size > self._max_bytes:
                                raise RejectedFailure("MEDIA_TOO_LARGE", f"media is over {self._max_bytes} bytes")
                            await asyncio.to_thread(handle.write, chunk)
                    content_type = response.headers.get("content-type", "").split(";")[0] or media.mime
                    break
            else:
                raise RejectedFailure("MEDIA_FETCH_FAILED", f"media redirected more than {MAX_MEDIA_REDIRECTS} times")
        except httpx.TransportError as exc:
            with contextlib.suppress(OSError):
                os.unlink(target)
            raise RetryableFailure("MEDIA_FETCH_FAILED", f"fetching media failed ({type(exc).__name__})") from None
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(target)
            raise
        return LocalMedia(target, size, media.content_type or content_type, temporary=True, truncated=truncated)

    async def _check_url(self, url: str) -> None:
        """The outbound URL policy at fetch time: the host may resolve elsewhere now, or a redirect lead inside."""
        if urlsplit(url).scheme not in ("http", "https"):  # a redirect never leads to a file:// in storage
            raise RejectedFailure("MEDIA_URL_REFUSED", "media URL refused at fetch time: not http(s)")
        try:
            await self._policy.check(url, "media.uri")
        except InvalidArgument as exc:
            detail = "; ".join(violation.description for violation in exc.violations) or str(exc)
            if "does not resolve" in detail:  # DNS may be back on the next try
                raise RetryableFailure("MEDIA_FETCH_FAILED", f"media host does not resolve ({detail})") from None
            raise RejectedFailure("MEDIA_URL_REFUSED", f"media URL refused at fetch time: {detail}") from None
