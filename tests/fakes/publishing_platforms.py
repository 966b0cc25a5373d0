"""Loopback fakes of the six platforms' publishing APIs, following the platforms' API references.

Each fake keeps what it "published" (`posts`), every media file it checked (`media_checked`), the ordered call log
(`calls`, e.g. "POST /2/tweets"), and knobs for the failures that matter: processing that takes several polls, 429
with reset headers for one account, a 5xx in the middle of an upload, and a create call that succeeds at the platform
but answers too late for the client (`create_delay`), plus `on_create` (called right after a post is recorded, e.g.
to SIGKILL the service).
Tokens: `tokens` maps an accepted access token to its account id; anything else is 401.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import threading
import time
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field
from email import policy as email_policy
from email.parser import BytesParser
from typing import Any
from urllib.parse import parse_qs

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.fakes.media_rules import media_problem


@dataclass
class FakePost:
    id: str
    account: str
    text: str
    media: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    created: float = field(default_factory=time.time)


class FakePlatform:
    name = "platform"

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.posts: list[FakePost] = []
        self.tokens: dict[str, str] = {}
        self.processing_polls = 2
        self.fail_upload_once = False
        self.limited_accounts: dict[str, float] = {}  # account -> reset epoch: 429 on create until then
        self.create_delay = 0.0
        self.on_create: Callable[[FakePost], None] | None = None
        self.base_url = ""  # set by the test once the server listens
        self.second_url = ""  # the second host's URL, for platforms that have one (`second_app`)
        self._ids = itertools.count(1000)
        self._lock = threading.Lock()
        self._upload_failed = False
        self.media_checked: list[bytes] = []

    def next_id(self) -> str:
        return str(next(self._ids))

    def log(self, request: Request, label: str | None = None) -> None:
        with self._lock:
            self.calls.append(label or f"{request.method} {request.url.path}")

    def account_of(self, request: Request) -> str | None:
        auth = request.headers.get("authorization", "")
        token = (
            auth.removeprefix("Bearer ") if auth.startswith("Bearer ") else request.query_params.get("access_token", "")
        )
        return self.tokens.get(token)

    def should_fail_upload(self) -> bool:
        with self._lock:
            if self.fail_upload_once and not self._upload_failed:
                self._upload_failed = True
                return True
        return False

    async def check_media(self, kind: str, data: bytes) -> str | None:
        """This platform's refusal of `data` as `kind` (tests/fakes/media_rules.py); keeps the bytes it was given."""
        with self._lock:
            self.media_checked.append(data)
        return await media_problem(self.name, kind, data)

    async def fetch_media(self, url: str, kind: str) -> str | None:
        """Download `url` as the platform does (Instagram, TikTok pull) and check it like `check_media`."""
        async with httpx.AsyncClient() as client:
            response = await client.get(url)
        if response.status_code != 200:
            return f"media fetch failed with HTTP {response.status_code}"
        return await self.check_media(kind, response.content)

    def held(self, text: str) -> list[FakePost]:
        return [p for p in self.posts if p.text == text]

    async def record(self, post: FakePost) -> None:
        with self._lock:
            self.posts.append(post)
        if self.on_create is not None:
            self.on_create(post)
        if self.create_delay:
            await asyncio.sleep(self.create_delay)

    def app(self) -> Starlette:
        raise NotImplementedError

    def second_app(self) -> Starlette | None:
        """A second host of the same platform (Facebook's graph-video), served on its own port; None: none."""
        return None


async def read_form(request: Request) -> dict[str, Any]:
    """multipart/form-data (files as bytes) or urlencoded fields, parsed with the standard library."""
    body = await request.body()
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("multipart/form-data"):
        message = BytesParser(policy=email_policy.HTTP).parsebytes(
            f"Content-Type: {content_type}\r\n\r\n".encode() + body
        )
        fields: dict[str, Any] = {}
        for part in message.iter_parts():
            name = part.get_param("name", header="content-disposition")
            payload: Any = part.get_payload(decode=True) or b""
            fields[str(name)] = payload if part.get_filename() else payload.decode()
        return fields
    return {k: v[-1] for k, v in parse_qs(body.decode(), keep_blank_values=True).items()}


def _unauthorized() -> JSONResponse:
    return JSONResponse({"title": "Unauthorized", "status": 401, "detail": "Unauthorized"}, status_code=401)


# ---------------------------------------------------------------------------------------------------- X

X_URL = re.compile(r"https?://\S+", re.IGNORECASE)
# twitter-text v3: these code point ranges weigh 1, everything else 2; an emoji (sequence) weighs 2; a URL 23.
X_LIGHT = ((0, 4351), (8192, 8205), (8208, 8223), (8242, 8247))
X_POST_FIELDS = {
    "text", "media", "reply", "quote_tweet_id", "reply_settings", "poll", "community_id", "share_with_followers",
    "for_super_followers_only", "nullcast", "geo", "card_uri", "made_with_ai", "paid_partnership",
    "direct_message_deep_link",
}  # fmt: skip


def x_weighted_length(text: str) -> int:
    """X's count, written from the published rules (not the client's library): a cross-check of our validation."""
    text = unicodedata.normalize("NFC", text)
    total = 23 * len(X_URL.findall(text))
    rest = X_URL.sub("", text)
    index = 0
    while index < len(rest):
        char = rest[index]
        index += 1
        # an emoji sequence (ZWJ joins, variation selectors, skin tones) counts once
        while index < len(rest) and (rest[index] in "\u200d\ufe0f" or 0x1F3FB <= ord(rest[index]) <= 0x1F3FF):
            index += 2 if rest[index] == "\u200d" else 1
        point = ord(char)
        total += 1 if any(low <= point <= high for low, high in X_LIGHT) else 2
    return total


class FakeX(FakePlatform):
    """X API v2: `/2/media/upload/{initialize,append,finalize}`, STATUS polls, `POST /2/tweets`, user timeline."""

    name = "twitter"

    def __init__(self) -> None:
        super().__init__()
        self.media: dict[str, dict[str, Any]] = {}

    def app(self) -> Starlette:
        async def initialize(request: Request) -> Response:
            self.log(request)
            if self.account_of(request) is None:
                return _unauthorized()
            body = await request.json()
            media_id = self.next_id()
            self.media[media_id] = {
                "total": int(body["total_bytes"]),
                "type": body["media_type"],
                "category": body["media_category"],
                "segments": {},
                "polls": 0,
            }
            return JSONResponse({"data": {"id": media_id, "media_key": f"7_{media_id}", "expires_after_secs": 86400}})

        async def append(request: Request) -> Response:
            self.log(request, "POST /2/media/upload/{id}/append")
            if self.account_of(request) is None:
                return _unauthorized()
            form = await read_form(request)
            item = self.media[request.path_params["media_id"]]
            if self.should_fail_upload():
                return JSONResponse({"title": "Service Unavailable"}, status_code=503)
            upload = form["media"]
            data = upload if isinstance(upload, bytes) else str(upload).encode()
            item["segments"][int(str(form["segment_index"]))] = data
            return Response(status_code=204)

        async def finalize(request: Request) -> Response:
            self.log(request, "POST /2/media/upload/{id}/finalize")
            media_id = request.path_params["media_id"]
            item = self.media[media_id]
            size = sum(len(v) for v in item["segments"].values())
            if size != item["total"]:
                return JSONResponse(
                    {
                        "title": "Invalid Request",
                        "detail": f"got {size} of {item['total']} bytes",
                        "type": "https://api.x.com/2/problems/invalid-request",
                    },
                    status_code=400,
                )
            kind = "video" if item["category"] == "tweet_video" else "image"
            blob = b"".join(item["segments"][i] for i in sorted(item["segments"]))
            if problem := await self.check_media(kind, blob):
                return JSONResponse(
                    {
                        "title": "Invalid Request",
                        "detail": f"InvalidMedia: {problem}",
                        "type": "https://api.x.com/2/problems/invalid-request",
                    },
                    status_code=400,
                )
            data: dict[str, Any] = {"id": media_id, "media_key": f"7_{media_id}", "size": size}
            if item["category"] == "tweet_video" and self.processing_polls:
                data["processing_info"] = {"state": "pending", "check_after_secs": 1}
            return JSONResponse({"data": data})

        async def status(request: Request) -> Response:
            self.log(request, "GET /2/media/upload?command=STATUS")
            item = self.media[request.query_params["media_id"]]
            item["polls"] += 1
            state = "succeeded" if item["polls"] >= self.processing_polls else "in_progress"
            return JSONResponse(
                {
                    "data": {
                        "id": request.query_params["media_id"],
                        "processing_info": {"state": state, "check_after_secs": 1, "progress_percent": 50},
                    }
                }
            )

        async def tweets(request: Request) -> Response:
            self.log(request)
            account = self.account_of(request)
            if account is None:
                return _unauthorized()
            reset = self.limited_accounts.get(account)
            if reset and reset > time.time():
                return JSONResponse(
                    {"title": "Too Many Requests", "detail": "Too Many Requests", "type": "about:blank", "status": 429},
                    status_code=429,
                    headers={
                        "x-rate-limit-limit": "100",
                        "x-rate-limit-remaining": "0",
                        "x-rate-limit-reset": str(int(reset)),
                    },
                )
            body = await request.json()
            unknown = set(body) - X_POST_FIELDS
            if unknown:  # the OpenAPI schema has additionalProperties: false
                return JSONResponse(
                    {
                        "title": "Invalid Request",
                        "detail": f"One or more parameters to your request was invalid: {sorted(unknown)}",
                        "type": "https://api.x.com/2/problems/invalid-request",
                    },
                    status_code=400,
                )
            if x_weighted_length(str(body.get("text", ""))) > 280:
                return JSONResponse(
                    {
                        "detail": "Your Tweet text is too long. For more information on how Twitter determines text "
                        "length see https://github.com/twitter/twitter-text.",
                        "type": "about:blank",
                        "title": "Forbidden",
                        "status": 403,
                    },
                    status_code=403,
                )
            for media_id in (body.get("media") or {}).get("media_ids", []):
                item = self.media.get(media_id)
                if item is None or (item["category"] == "tweet_video" and item["polls"] < self.processing_polls):
                    return JSONResponse(
                        {
                            "title": "Invalid Request",
                            "detail": "media not ready",
                            "type": "https://api.x.com/2/problems/invalid-request",
                        },
                        status_code=400,
                    )
            post = FakePost(
                self.next_id(),
                account,
                body.get("text", ""),
                (body.get("media") or {}).get("media_ids", []),
                {"made_with_ai": body.get("made_with_ai", False)},
            )
            await self.record(post)
            return JSONResponse(
                {"data": {"id": post.id, "text": post.text, "edit_history_tweet_ids": [post.id]}},
                status_code=201,
                headers={
                    "x-rate-limit-limit": "100",
                    "x-rate-limit-remaining": "99",
                    "x-rate-limit-reset": str(int(time.time()) + 900),
                },
            )

        async def timeline(request: Request) -> Response:
            self.log(request, "GET /2/users/{id}/tweets")
            user = request.path_params["user_id"]
            data = [
                {
                    "id": p.id,
                    "text": p.text,
                    "created_at": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(p.created)),
                }
                for p in reversed(self.posts)
                if p.account == user
            ]
            return JSONResponse({"data": data, "meta": {"result_count": len(data)}})

        return Starlette(
            routes=[
                Route("/2/media/upload/initialize", initialize, methods=["POST"]),
                Route("/2/media/upload/{media_id}/append", append, methods=["POST"]),
                Route("/2/media/upload/{media_id}/finalize", finalize, methods=["POST"]),
                Route("/2/media/upload", status, methods=["GET"]),
                Route("/2/tweets", tweets, methods=["POST"]),
                Route("/2/users/{user_id}/tweets", timeline, methods=["GET"]),
            ]
        )


# ---------------------------------------------------------------------------------------------------- LinkedIn


class FakeLinkedIn(FakePlatform):
    """LinkedIn REST: images/videos initializeUpload, PUT parts with ETags, finalize, status polls, `/rest/posts`.

    Section F2: a post may only reference media that is AVAILABLE (an image becomes so `image_processing_seconds`
    after its PUT; a video after `processing_polls` status reads) and is refused with "not in AVAILABLE state"
    otherwise. Member (`w_member_social`) tokens cannot read image status nor list posts (403 ACCESS_DENIED)
    unless `member_reads` is set.
    """

    name = "linkedin"
    version = "202601"
    part_size = 256 * 1024

    def __init__(self) -> None:
        super().__init__()
        self.videos: dict[str, dict[str, Any]] = {}
        self.images: dict[str, bytes] = {}
        self.image_ready_at: dict[str, float] = {}
        self.image_processing_seconds = 0.3
        self.member_reads = False

    @staticmethod
    def _access_denied(resource: str) -> JSONResponse:
        return JSONResponse(
            {
                "serviceErrorCode": 100,
                "code": "ACCESS_DENIED",
                "message": f"Not enough permissions to access: {resource}",
                "status": 403,
            },
            status_code=403,
        )

    def _media_status(self, urn: str) -> str | None:
        if urn.startswith("urn:li:image:"):
            ready = self.image_ready_at.get(urn)
            if ready is None:
                return None
            return "AVAILABLE" if time.time() >= ready else "PROCESSING"
        video = self.videos.get(urn)
        return None if video is None else str(video["status"])

    def _versioned(self, request: Request) -> Response | None:
        if (
            request.headers.get("linkedin-version") != self.version
            or request.headers.get("x-restli-protocol-version") != "2.0.0"
        ):
            return JSONResponse({"status": 426, "message": "API version is sunset or missing"}, status_code=426)
        if self.account_of(request) is None:
            return JSONResponse(
                {"status": 401, "serviceErrorCode": 65600, "message": "Invalid access token"}, status_code=401
            )
        return None

    def app(self) -> Starlette:
        async def images(request: Request) -> Response:
            self.log(request, "POST /rest/images?action=initializeUpload")
            if (refused := self._versioned(request)) is not None:
                return refused
            image_id = self.next_id()
            return JSONResponse(
                {
                    "value": {
                        "uploadUrlExpiresAt": int(time.time() * 1000) + 3600_000,
                        "uploadUrl": f"{self.base_url}/dms-uploads/image/{image_id}",
                        "image": f"urn:li:image:{image_id}",
                    }
                }
            )

        async def put_image(request: Request) -> Response:
            self.log(request, "PUT {image uploadUrl}")
            body = await request.body()
            if problem := await self.check_media("image", body):
                return JSONResponse({"status": 400, "message": f"Invalid image: {problem}"}, status_code=400)
            urn = f"urn:li:image:{request.path_params['image_id']}"
            self.images[urn] = body
            self.image_ready_at[urn] = time.time() + self.image_processing_seconds
            return Response(status_code=201)

        async def image_status(request: Request) -> Response:
            self.log(request, "GET /rest/images/{urn}")
            if (refused := self._versioned(request)) is not None:
                return refused
            if not self.member_reads:
                return self._access_denied("images.GET.20260101")
            urn = request.path_params["urn"]
            status = self._media_status(urn)
            if status is None:
                return JSONResponse({"status": 404, "message": "Not Found"}, status_code=404)
            return JSONResponse({"id": urn, "status": status})

        async def videos(request: Request) -> Response:
            action = request.query_params.get("action")
            self.log(request, f"POST /rest/videos?action={action}")
            if (refused := self._versioned(request)) is not None:
                return refused
            body = await request.json()
            if action == "initializeUpload":
                size = int(body["initializeUploadRequest"]["fileSizeBytes"])
                video_id = self.next_id()
                parts = [
                    {
                        "uploadUrl": f"{self.base_url}/dms-uploads/video/{video_id}/{i}",
                        "firstByte": first,
                        "lastByte": min(size, first + self.part_size) - 1,
                    }
                    for i, first in enumerate(range(0, size, self.part_size))
                ]
                urn = f"urn:li:video:{video_id}"
                self.videos[urn] = {"size": size, "parts": {}, "etags": [], "polls": 0, "status": "WAITING_UPLOAD"}
                return JSONResponse(
                    {
                        "value": {
                            "uploadUrlsExpireAt": int(time.time() * 1000) + 3600_000,
                            "video": urn,
                            "uploadInstructions": parts,
                            "uploadToken": "",
                        }
                    }
                )
            request_body = body["finalizeUploadRequest"]
            video = self.videos[request_body["video"]]
            expected = [video["parts"][i][1] for i in sorted(video["parts"])]
            if request_body["uploadedPartIds"] != expected:
                return JSONResponse({"status": 400, "message": "uploadedPartIds do not match"}, status_code=400)
            blob = b"".join(video["parts"][i][0] for i in sorted(video["parts"]))
            if problem := await self.check_media("video", blob):
                return JSONResponse({"status": 400, "message": f"Video does not meet requirements: {problem}"}, 400)
            video["status"] = "PROCESSING"
            return Response(status_code=200)

        async def put_part(request: Request) -> Response:
            self.log(request, "PUT {video uploadUrl}")
            if self.should_fail_upload():
                return JSONResponse({"status": 500, "message": "Internal Server Error"}, status_code=500)
            urn = f"urn:li:video:{request.path_params['video_id']}"
            data = await request.body()
            etag = f"etag-{request.path_params['part']}-{len(data)}"
            self.videos[urn]["parts"][int(request.path_params["part"])] = (data, etag)
            return Response(status_code=200, headers={"ETag": etag})

        async def video_status(request: Request) -> Response:
            self.log(request, "GET /rest/videos/{urn}")
            video = self.videos[request.path_params["urn"]]
            if video["status"] == "PROCESSING":
                video["polls"] += 1
                if video["polls"] >= self.processing_polls:
                    video["status"] = "AVAILABLE"
            return JSONResponse({"id": request.path_params["urn"], "status": video["status"]})

        async def posts(request: Request) -> Response:
            if request.method == "GET":
                self.log(request, "GET /rest/posts?q=author")
                if not self.member_reads:  # w_member_social alone may not read the member's posts
                    return self._access_denied("partnerApiPostsExternal.FINDER-author.20260101")
                author = request.query_params.get("author", "")
                return JSONResponse(
                    {
                        "elements": [
                            {"id": p.id, "commentary": p.text, "author": author}
                            for p in reversed(self.posts)
                            if f"urn:li:person:{p.account}" == author
                        ]
                    }
                )
            self.log(request)
            if (refused := self._versioned(request)) is not None:
                return refused
            account = self.account_of(request) or ""
            reset = self.limited_accounts.get(account)
            if reset and reset > time.time():
                return JSONResponse(
                    {"status": 429, "message": "Resource level throttle limit"},
                    status_code=429,
                    headers={"Retry-After": str(max(1, int(reset - time.time())))},
                )
            body = await request.json()
            content = body.get("content") or {}
            media = (content.get("media") or {}).get("id")
            referenced = [media] if media else [i["id"] for i in (content.get("multiImage") or {}).get("images", [])]
            for urn in referenced:
                status = self._media_status(urn)
                if status is None:
                    return JSONResponse({"status": 400, "message": f"{urn} does not exist"}, status_code=400)
                if status != "AVAILABLE":
                    return JSONResponse(
                        {"status": 400, "message": f"Media asset {urn} is not in AVAILABLE state (status: {status})"},
                        status_code=400,
                    )
            post = FakePost(f"urn:li:share:{self.next_id()}", account, body["commentary"], referenced)
            await self.record(post)
            return Response(status_code=201, headers={"x-restli-id": post.id})

        return Starlette(
            routes=[
                Route("/rest/images", images, methods=["POST"]),
                Route("/dms-uploads/image/{image_id}", put_image, methods=["PUT"]),
                Route("/rest/images/{urn:path}", image_status, methods=["GET"]),
                Route("/rest/videos", videos, methods=["POST"]),
                Route("/dms-uploads/video/{video_id}/{part}", put_part, methods=["PUT"]),
                Route("/rest/videos/{urn:path}", video_status, methods=["GET"]),
                Route("/rest/posts", posts, methods=["GET", "POST"]),
            ]
        )


# ---------------------------------------------------------------------------------------------------- Meta


class _FakeGraph(FakePlatform):
    version = "v23.0"

    def __init__(self) -> None:
        super().__init__()
        self.app_usage: dict[str, int] | None = None
        self.buc_usage: dict[str, Any] | None = None

    def headers(self) -> dict[str, str]:
        out = {}
        if self.app_usage is not None:
            out["X-App-Usage"] = json.dumps(self.app_usage)
        if self.buc_usage is not None:
            out["X-Business-Use-Case-Usage"] = json.dumps(self.buc_usage)
        return out

    def error(self, message: str, code: int, status: int = 400, subcode: int | None = None) -> JSONResponse:
        err: dict[str, Any] = {"message": message, "type": "OAuthException", "code": code, "fbtrace_id": "x"}
        if subcode:
            err["error_subcode"] = subcode
        return JSONResponse({"error": err}, status_code=status, headers=self.headers())

    def ok(self, body: dict[str, Any]) -> JSONResponse:
        return JSONResponse(body, headers=self.headers())

    def limited(self, account: str) -> JSONResponse | None:
        reset = self.limited_accounts.get(account)
        if reset and reset > time.time():
            minutes = max(1, int((reset - time.time()) / 60 + 0.999))
            self.buc_usage = {
                account: [
                    {
                        "type": "pages",
                        "call_count": 100,
                        "total_cputime": 20,
                        "total_time": 20,
                        "estimated_time_to_regain_access": minutes,
                    }
                ]
            }
            try:
                return self.error("(#80001) There have been too many calls to this Page account", 80001)
            finally:
                self.buc_usage = None
        return None


class FakeInstagram(_FakeGraph):
    """Instagram Graph: `POST /{ig}/media` containers (fetched from their URLs), status polls, `media_publish`."""

    name = "instagram"

    def __init__(self) -> None:
        super().__init__()
        self.containers: dict[str, dict[str, Any]] = {}

    def app(self) -> Starlette:
        async def create_container(request: Request) -> Response:
            self.log(request, "POST /{ig-user-id}/media")
            account = self.account_of(request)
            if account is None or account != request.path_params["ig"]:
                return self.error("Invalid OAuth access token.", 190, 401)
            params = dict(request.query_params)
            url = params.get("image_url") or params.get("video_url")
            children = params.get("children")
            if url:
                async with httpx.AsyncClient() as client:  # Meta cURLs the media itself
                    fetched = await client.get(url)
                if fetched.status_code != 200:
                    return self.error("Media fetch failed", 9004, subcode=2207052)
                kind = "image" if params.get("image_url") else "video"
                if problem := await self.check_media(kind, fetched.content):
                    aspect = "aspect ratio" in problem
                    return self.error(
                        f"The media is not supported: {problem}", 36003 if aspect else 9004, subcode=2207026
                    )
            container_id = self.next_id()
            self.containers[container_id] = {
                "status": "IN_PROGRESS",
                "polls": 0,
                "params": params,
                "children": children.split(",") if children else [],
            }
            return self.ok({"id": container_id})

        async def node(request: Request) -> Response:
            node_id = request.path_params["node"]
            if node_id in self.containers:
                self.log(request, "GET /{container-id}?fields=status_code")
                container = self.containers[node_id]
                if container["status"] == "IN_PROGRESS":
                    container["polls"] += 1
                    if container["polls"] >= self.processing_polls:
                        container["status"] = "FINISHED"
                return self.ok({"id": node_id, "status_code": container["status"], "status": "Finished: Media"})
            self.log(request, "GET /{ig-media-id}?fields=permalink")
            return self.ok({"id": node_id, "permalink": f"https://www.instagram.com/p/{node_id}/"})

        async def publish(request: Request) -> Response:
            self.log(request, "POST /{ig-user-id}/media_publish")
            account = self.account_of(request)
            if account is None:
                return self.error("Invalid OAuth access token.", 190, 401)
            if (refused := self.limited(account)) is not None:
                return refused
            container = self.containers.get(request.query_params.get("creation_id", ""))
            if container is None or container["status"] != "FINISHED":
                return self.error("Media is not ready to be published", 9007, subcode=2207027)
            container["status"] = "PUBLISHED"
            post = FakePost(
                self.next_id(),
                account,
                container["params"].get("caption", ""),
                [container["params"].get("image_url") or container["params"].get("video_url") or "carousel"],
            )
            await self.record(post)
            return self.ok({"id": post.id})

        async def media(request: Request) -> Response:
            self.log(request, "GET /{ig-user-id}/media")
            return self.ok(
                {
                    "data": [
                        {"id": p.id, "caption": p.text, "permalink": f"https://www.instagram.com/p/{p.id}/"}
                        for p in self.posts
                    ]
                }
            )

        async def media_route(request: Request) -> Response:
            return await (create_container(request) if request.method == "POST" else media(request))

        return Starlette(
            routes=[
                Route(f"/{self.version}/{{ig}}/media", media_route, methods=["GET", "POST"]),
                Route(f"/{self.version}/{{ig}}/media_publish", publish, methods=["POST"]),
                Route(f"/{self.version}/{{node}}", node, methods=["GET"]),
            ]
        )


class FakeFacebook(_FakeGraph):
    """Facebook Pages with Page tokens: `/feed`, `/photos` (published or not); video files only on the graph-video
    host (`second_app`: a `source` upload or the Resumable Upload API start/transfer/finish); listings for
    reconcile. A video file sent to the graph host is refused; a user token is refused (Page token required);
    `no_publish_permission` Pages answer Graph's (#200) permission error."""

    name = "facebook"
    transfer_chunk = 256 * 1024

    def __init__(self) -> None:
        super().__init__()
        self.sessions: dict[str, dict[str, Any]] = {}
        self.no_publish_permission: set[str] = set()

    def _page_refusal(self, request: Request, page: str) -> Response | None:
        if self.account_of(request) != page:
            return self.error("Invalid OAuth access token - page token required.", 190, 400)
        if page in self.no_publish_permission:
            return self.error("(#200) The user hasn't authorized the application to perform this action", 200, 403)
        return None

    async def _publish_video(self, page: str, text: str, data: bytes, video_id: str = "") -> Response:
        if problem := await self.check_media("video", data):
            return self.error(f"There was a problem uploading your video file: {problem}", 6000)
        if (refused := self.limited(page)) is not None:
            return refused
        post = FakePost(video_id or self.next_id(), page, text, [], {"edge": "videos", "size": len(data)})
        await self.record(post)
        return self.ok({"id": post.id})

    def second_app(self) -> Starlette:
        """graph-video.facebook.com: video file uploads."""

        async def videos(request: Request) -> Response:
            page = request.path_params["page"]
            form = await read_form(request)
            phase = str(form.get("upload_phase") or "")
            self.log(request, f"POST graph-video /{{page-id}}/videos {phase or 'source'}".rstrip())
            if (refused := self._page_refusal(request, page)) is not None:
                return refused
            if not phase:
                upload = form.get("source")
                if not isinstance(upload, bytes) or not upload:
                    return self.error("(#100) source is required", 100)
                return await self._publish_video(page, str(form.get("description") or ""), upload)
            if phase == "start":
                size = int(str(form.get("file_size") or 0))
                if size <= 0:
                    return self.error("(#100) file_size is required", 100)
                session = self.next_id()
                video_id = self.next_id()
                self.sessions[session] = {"page": page, "size": size, "data": b"", "video_id": video_id}
                end = min(size, self.transfer_chunk)
                return self.ok(
                    {"video_id": video_id, "upload_session_id": session, "start_offset": "0", "end_offset": str(end)}
                )
            session_data = self.sessions.get(str(form.get("upload_session_id") or ""))
            if session_data is None or session_data["page"] != page:
                return self.error("(#100) Invalid upload_session_id", 100)
            if phase == "transfer":
                chunk = form.get("video_file_chunk")
                if not isinstance(chunk, bytes):
                    return self.error("(#100) video_file_chunk is required", 100)
                if self.should_fail_upload():
                    return self.error("An unknown error has occurred.", 1, 500)
                offset = int(str(form.get("start_offset") or 0))
                if offset == len(session_data["data"]):
                    session_data["data"] += chunk
                received = len(session_data["data"])
                end = min(session_data["size"], received + self.transfer_chunk)
                return self.ok({"start_offset": str(received), "end_offset": str(end)})
            if phase == "finish":
                if len(session_data["data"]) != session_data["size"]:
                    return self.error("(#6001) The video upload is incomplete", 6001)
                answer = await self._publish_video(
                    page, str(form.get("description") or ""), session_data["data"], session_data["video_id"]
                )
                if answer.status_code != 200:
                    return answer
                return self.ok({"success": True})
            return self.error("(#100) Invalid upload_phase", 100)

        return Starlette(routes=[Route(f"/{self.version}/{{page}}/videos", videos, methods=["POST"])])

    def app(self) -> Starlette:
        async def edge(request: Request) -> Response:
            page, kind = request.path_params["page"], request.path_params["edge"]
            self.log(request, f"{request.method} /{{page-id}}/{kind}")
            if request.method == "GET" and self.account_of(request) != page:
                return self.error("Invalid OAuth access token - page token required.", 190, 400)
            if request.method == "POST" and (refused := self._page_refusal(request, page)) is not None:
                return refused
            if request.method == "GET":
                field_name = "description" if kind == "videos" else "message"
                return self.ok(
                    {
                        "data": [
                            {"id": p.id, field_name: p.text, "permalink_url": f"https://www.facebook.com/{p.id}"}
                            for p in reversed(self.posts)
                            if p.extra.get("edge") == kind
                        ]
                    }
                )
            form = await read_form(request)
            if kind == "videos" and ("source" in form or "upload_phase" in form):
                return self.error("(#100) Video file uploads must be sent to graph-video.facebook.com", 100)
            if kind in ("photos", "videos"):
                upload = form.get("source")
                if not isinstance(upload, bytes) or not upload:
                    return self.error("(#100) source is required", 100)
                if problem := await self.check_media("video" if kind == "videos" else "image", upload):
                    if kind == "photos":
                        return self.error(f"Photos must be under 4 MB JPG or PNG: {problem}", 100, subcode=1366046)
                    return self.error(f"There was a problem uploading your video file: {problem}", 6000)
                if self.should_fail_upload():
                    return self.error("An unknown error has occurred.", 1, 500)
            if form.get("published", "true") == "false":
                return self.ok({"id": self.next_id()})
            if (refused := self.limited(page)) is not None:
                return refused
            text = str(form.get("description" if kind == "videos" else "message") or "")
            attached = [str(v) for k, v in form.items() if k.startswith("attached_media")]
            post = FakePost(f"{page}_{self.next_id()}", page, text, attached, {"edge": kind})
            await self.record(post)
            if kind == "photos":
                return self.ok({"id": self.next_id(), "post_id": post.id})
            if kind == "videos":
                return self.ok({"id": post.id})
            return self.ok({"id": post.id, "permalink_url": f"https://www.facebook.com/{post.id}"})

        return Starlette(routes=[Route(f"/{self.version}/{{page}}/{{edge}}", edge, methods=["GET", "POST"])])


# ---------------------------------------------------------------------------------------------------- TikTok


TIKTOK_MB = 1024 * 1024


def tiktok_chunk_refusal(size: int, chunk: int, count: int) -> str | None:
    """Why TikTok refuses a FILE_UPLOAD plan (None: valid). Up to 64 MB one chunk of the whole size may go;
    otherwise chunks are 5-64 MB, their count is floor(size / chunk_size) and the last takes the remainder."""
    if size <= 0 or chunk <= 0 or not 1 <= count <= 1000:
        return "video_size, chunk_size and total_chunk_count (1-1000) are required"
    if count == 1 and chunk == size:
        return None if size <= 64 * TIKTOK_MB else "a video over 64 MB must be uploaded in chunks"
    if not 5 * TIKTOK_MB <= chunk <= 64 * TIKTOK_MB:
        return "chunk_size must be between 5 MB and 64 MB"
    if count != size // chunk:
        return "total_chunk_count must be floor(video_size / chunk_size)"
    if size - (count - 1) * chunk > 128 * TIKTOK_MB:
        return "the last chunk may be at most 128 MB"
    return None


class FakeTikTok(FakePlatform):
    """TikTok Content Posting: creator info, `video/init` (FILE_UPLOAD with chunk PUTs, or PULL_FROM_URL),
    `content/init` photo posts (PULL_FROM_URL), `status/fetch` polls.

    Enforces section F2: a video's title (its caption) up to 2,200 characters; a photo post's title up to 90 and
    description up to 4,000; the FILE_UPLOAD chunk plan; an app that has not passed the audit (`audited`, False like
    every new app) posts only SELF_ONLY (403 `unaudited_client_can_only_post_to_private_accounts`); PULL_FROM_URL
    only from `verified_prefixes` (403 `url_ownership_unverified`), and the URL must answer 200.
    """

    name = "tiktok"
    privacy_levels = ("PUBLIC_TO_EVERYONE", "MUTUAL_FOLLOW_FRIENDS", "SELF_ONLY")

    def __init__(self) -> None:
        super().__init__()
        self.publishes: dict[str, dict[str, Any]] = {}
        self.audited = False
        self.verified_prefixes: list[str] = []

    def _refusal(self, body: dict[str, Any], photo: bool) -> JSONResponse | None:
        info, source = body.get("post_info") or {}, body.get("source_info") or {}
        title, description = str(info.get("title") or ""), str(info.get("description") or "")
        if photo and len(title) > 90:
            return self.body({}, "invalid_params", "post_info.title of a photo post is at most 90 characters", 400)
        if photo and len(description) > 4000:
            return self.body({}, "invalid_params", "post_info.description is at most 4000 characters", 400)
        if not photo and len(title) > 2200:
            return self.body({}, "invalid_params", "post_info.title is at most 2200 characters", 400)
        if not photo and "description" in info:
            return self.body({}, "invalid_params", "post_info.description is for photo posts", 400)
        if "is_aigc" in info and not isinstance(info["is_aigc"], bool):
            return self.body({}, "invalid_params", "post_info.is_aigc must be a boolean", 400)
        if info.get("privacy_level") not in self.privacy_levels:
            return self.body({}, "privacy_level_option_mismatch", "privacy level not allowed", 400)
        if not self.audited and info.get("privacy_level") != "SELF_ONLY":
            return self.body(
                {},
                "unaudited_client_can_only_post_to_private_accounts",
                "Please review our integration guidelines at https://developers.tiktok.com/doc/content-sharing-guidelines",
                403,
            )
        if source.get("source") == "PULL_FROM_URL":
            urls = source.get("photo_images") if photo else [source.get("video_url")]
            if not isinstance(urls, list) or not urls or not all(isinstance(u, str) and u for u in urls):
                return self.body({}, "invalid_params", "no media URL", 400)
            for url in urls:
                if not any(url.startswith(prefix) for prefix in self.verified_prefixes):
                    return self.body({}, "url_ownership_unverified", "The URL's domain or prefix is not verified", 403)
            if photo and not 0 <= int(source.get("photo_cover_index", 0)) < len(urls):
                return self.body({}, "invalid_params", "photo_cover_index out of range", 400)
            if photo and len(urls) > 35:
                return self.body({}, "invalid_params", "at most 35 photos", 400)
        elif source.get("source") == "FILE_UPLOAD" and not photo:
            why = tiktok_chunk_refusal(
                int(source.get("video_size") or 0),
                int(source.get("chunk_size") or 0),
                int(source.get("total_chunk_count") or 0),
            )
            if why is not None:
                return self.body({}, "invalid_params", why, 400)
        else:
            return self.body({}, "invalid_params", "source_info.source is not supported here", 400)
        if photo and (
            body.get("media_type") != "PHOTO" or body.get("post_mode") not in ("DIRECT_POST", "MEDIA_UPLOAD")
        ):
            return self.body({}, "invalid_params", "media_type PHOTO and post_mode are required", 400)
        return None

    @staticmethod
    async def _fetchable(urls: list[str]) -> bool:
        async with httpx.AsyncClient() as client:  # TikTok downloads pulled media itself
            for url in urls:
                if (await client.get(url)).status_code != 200:
                    return False
        return True

    @staticmethod
    def body(
        data: dict[str, Any],
        code: str = "ok",
        message: str = "",
        status: int = 200,
        headers: dict[str, str] | None = None,
    ) -> JSONResponse:
        return JSONResponse(
            {"data": data, "error": {"code": code, "message": message, "log_id": "log"}},
            status_code=status,
            headers=headers,
        )

    def app(self) -> Starlette:
        async def creator(request: Request) -> Response:
            self.log(request)
            if self.account_of(request) is None:
                return self.body({}, "access_token_invalid", "The access token is invalid", 401)
            return self.body(
                {
                    "creator_username": "fakecreator",
                    "creator_nickname": "Fake",
                    "privacy_level_options": list(self.privacy_levels),
                    "comment_disabled": False,
                    "duet_disabled": False,
                    "stitch_disabled": False,
                    "max_video_post_duration_sec": 600,
                }
            )

        async def init(request: Request) -> Response:
            self.log(request)
            account = self.account_of(request)
            if account is None:
                return self.body({}, "access_token_invalid", "The access token is invalid", 401)
            reset = self.limited_accounts.get(account)
            if reset and reset > time.time():
                return self.body(
                    {}, "rate_limit_exceeded", "too many requests", 429, {"x-ratelimit-reset": str(int(reset))}
                )
            body = await request.json()
            photo = request.url.path.endswith("/content/init/")
            if (refused := self._refusal(body, photo)) is not None:
                return refused
            info, source = body["post_info"], body["source_info"]
            publish_id = f"v_pub_file~v2-1.{self.next_id()}"
            pulled = source.get("photo_images") or ([source["video_url"]] if source.get("video_url") else [])
            kind = "image" if source.get("photo_images") else "video"
            problems = [p for url in pulled if (p := await self.fetch_media(url, kind))]
            entry = {
                "account": account,
                "title": info.get("title", ""),
                "size": int(source.get("video_size", 0)),
                "chunk_size": int(source.get("chunk_size", 0)),
                "chunks": int(source.get("total_chunk_count", 0)),
                "received": 0,
                "polls": 0,
                "status": "PROCESSING_UPLOAD",
                "post": None,
            }
            self.publishes[publish_id] = entry
            data = {"publish_id": publish_id}
            if source["source"] == "FILE_UPLOAD":
                data["upload_url"] = f"{self.base_url}/upload/{publish_id}"
            else:
                urls = source["photo_images"] if photo else [source["video_url"]]
                entry["status"] = "PROCESSING_DOWNLOAD" if await self._fetchable(urls) else "FAILED"
                entry["fail_reason"] = (
                    "" if entry["status"] != "FAILED" else ("photo_pull_failed" if photo else "video_pull_failed")
                )
            if problems and entry["status"] != "FAILED":  # TikTok takes the init, then fails what it pulled
                entry.update(status="FAILED", fail_reason=_tiktok_reason(problems[0]))
            caption = str(info.get("description", "") if photo else info.get("title", ""))
            extra = {"publish_id": publish_id, "post_info": info, "source": source["source"], "photo": photo}
            post = FakePost(self.next_id() + "7000000000000", account, caption, [], extra)
            entry["post"] = post
            await self.record(post)  # init is the irreversible call
            return self.body(data)

        async def upload(request: Request) -> Response:
            self.log(request, "PUT {upload_url}")
            entry = self.publishes[request.path_params["publish_id"]]
            rng = request.headers.get("content-range", "")
            first, rest = rng.removeprefix("bytes ").split("-")
            _last, total = rest.split("/")
            if self.should_fail_upload():
                return Response(status_code=502)
            if int(first) != entry["received"]:
                return Response(status_code=416)
            data = await request.body()
            index = int(first) // entry["chunk_size"]
            expected = entry["chunk_size"] if index < entry["chunks"] - 1 else entry["size"] - int(first)
            if int(first) % entry["chunk_size"] or len(data) != expected or int(total) != entry["size"]:
                return self.body({}, "invalid_file_upload", "chunk does not match the upload plan", 400)
            entry["received"] += len(data)
            entry["data"] = entry.get("data", b"") + data
            done = entry["received"] >= int(total)
            if done:
                entry["status"] = "PROCESSING_DOWNLOAD"
                if problem := await self.check_media("video", entry.pop("data")):
                    entry.update(status="FAILED", fail_reason=_tiktok_reason(problem))
            return Response(status_code=201 if done else 206)

        async def status(request: Request) -> Response:
            self.log(request)
            body = await request.json()
            entry = self.publishes.get(body.get("publish_id", ""))
            if entry is None:
                return self.body({}, "invalid_params", "unknown publish_id", 400)
            if entry["status"] == "PROCESSING_DOWNLOAD":
                entry["polls"] += 1
                if entry["polls"] >= self.processing_polls:
                    entry["status"] = "PUBLISH_COMPLETE"
            data: dict[str, Any] = {"status": entry["status"], "uploaded_bytes": entry["received"]}
            if entry["status"] == "FAILED":
                data["fail_reason"] = entry.get("fail_reason") or "internal"
            if entry["status"] == "PUBLISH_COMPLETE":
                data["publicaly_available_post_id"] = [int(entry["post"].id)]
            return self.body(data)

        return Starlette(
            routes=[
                Route("/v2/post/publish/creator_info/query/", creator, methods=["POST"]),
                Route("/v2/post/publish/video/init/", init, methods=["POST"]),
                Route("/v2/post/publish/content/init/", init, methods=["POST"]),
                Route("/upload/{publish_id}", upload, methods=["PUT"]),
                Route("/v2/post/publish/status/fetch/", status, methods=["POST"]),
            ]
        )


def _tiktok_reason(problem: str) -> str:
    """TikTok's fail_reason for a media problem (the checker already words video problems that way)."""
    return problem if problem.endswith("_check_failed") else "file_format_check_failed"


# ---------------------------------------------------------------------------------------------------- YouTube


class FakeYouTube(FakePlatform):
    """YouTube resumable upload: session (Location), chunk PUTs (308 + Range), probes, 5xx mid-upload.

    Tokens: `tokens`, or, with `userinfo_url` set (the Google stand-in's), any token that endpoint accepts."""

    name = "google"

    def __init__(self) -> None:
        super().__init__()
        self.sessions: dict[str, dict[str, Any]] = {}
        self.userinfo_url = ""
        self.upload_scope_granted = True  # False: the token lacks youtube.upload (403 insufficientPermissions)

    async def _account(self, request: Request) -> str | None:
        account = self.account_of(request)
        if account is None and self.userinfo_url and request.headers.get("authorization", "").startswith("Bearer "):
            async with httpx.AsyncClient() as client:
                answer = await client.get(
                    self.userinfo_url, headers={"Authorization": request.headers["authorization"]}
                )
            if answer.status_code == 200:
                account = str(answer.json().get("sub") or "") or None
        return account

    def app(self) -> Starlette:
        async def videos(request: Request) -> Response:
            if request.method == "POST":
                self.log(request, "POST /upload/youtube/v3/videos?uploadType=resumable")
                account = await self._account(request)
                if account is None:
                    return JSONResponse(
                        {"error": {"code": 401, "message": "Invalid Credentials", "errors": [{"reason": "authError"}]}},
                        status_code=401,
                    )
                if not self.upload_scope_granted:
                    message = "Request had insufficient authentication scopes."
                    return JSONResponse(
                        {
                            "error": {
                                "code": 403,
                                "message": message,
                                "errors": [
                                    {"message": message, "domain": "global", "reason": "insufficientPermissions"}
                                ],
                                "status": "PERMISSION_DENIED",
                            }
                        },
                        status_code=403,
                    )
                meta = await request.json()
                if (refused := self._metadata_refusal(meta)) is not None:
                    return refused
                session_id = self.next_id()
                self.sessions[session_id] = {
                    "account": account,
                    "total": int(request.headers["x-upload-content-length"]),
                    "data": b"",
                    "video": None,
                    "meta": meta,
                }
                location = f"{self.base_url}/upload/youtube/v3/videos?uploadType=resumable&upload_id={session_id}"
                return Response(status_code=200, headers={"Location": location})
            session = self.sessions.get(request.query_params.get("upload_id", ""))
            if session is None:
                return Response(status_code=404)
            rng = request.headers.get("content-range", "")
            if rng.startswith("bytes */"):
                self.log(request, "PUT {session} probe")
                return self._state(session)
            self.log(request, "PUT {session} chunk")
            first = int(rng.removeprefix("bytes ").split("-")[0])
            if first != len(session["data"]):
                return self._state(session)
            data = await request.body()
            if self.should_fail_upload():  # keep half the bytes, then fail: the client must probe and resume
                session["data"] += data[: len(data) // 2]
                return JSONResponse({"error": {"code": 503, "message": "Backend Error"}}, status_code=503)
            session["data"] += data
            if len(session["data"]) >= session["total"] and (
                problem := await self.check_media("video", session["data"])
            ):
                return JSONResponse(
                    {"error": {"code": 400, "message": problem, "errors": [{"reason": "invalidFile"}]}}, 400
                )
            if len(session["data"]) >= session["total"]:
                snippet = session["meta"]["snippet"]
                post = FakePost(
                    f"yt{self.next_id()}",
                    session["account"],
                    snippet.get("description", ""),
                    extra={
                        "title": snippet["title"],
                        "size": len(session["data"]),
                        "status": session["meta"]["status"],
                    },
                )
                session["video"] = post
                await self.record(post)
            return self._state(session)

        return Starlette(routes=[Route("/upload/youtube/v3/videos", videos, methods=["POST", "PUT"])])

    @staticmethod
    def _metadata_refusal(meta: dict[str, Any]) -> Response | None:
        """videos.insert metadata rules: title 1-100 characters without < or >, description up to 5,000 bytes."""
        snippet, status = meta.get("snippet") or {}, meta.get("status") or {}
        title, description = str(snippet.get("title") or ""), str(snippet.get("description") or "")
        problem = None
        if not title.strip() or len(title) > 100 or "<" in title or ">" in title:
            problem = ("invalidTitle", "The request metadata specifies an invalid video title.")
        elif len(description.encode()) > 5000:
            problem = ("invalidDescription", "The request metadata specifies an invalid video description.")
        elif "containsSyntheticMedia" in status and not isinstance(status["containsSyntheticMedia"], bool):
            problem = ("invalidVideoMetadata", "status.containsSyntheticMedia must be a boolean.")
        if problem is None:
            return None
        reason, message = problem
        return JSONResponse(
            {
                "error": {
                    "code": 400,
                    "message": message,
                    "errors": [{"message": message, "domain": "youtube.video", "reason": reason}],
                }
            },
            status_code=400,
        )

    @staticmethod
    def _state(session: dict[str, Any]) -> Response:
        if session["video"] is not None:
            post = session["video"]
            return JSONResponse(
                {
                    "kind": "youtube#video",
                    "id": post.id,
                    "snippet": session["meta"]["snippet"],
                    "status": {"uploadStatus": "uploaded"},
                },
                status_code=201,
            )
        received = len(session["data"])
        headers = {"Range": f"bytes=0-{received - 1}"} if received else {}
        return Response(status_code=308, headers=headers)


ALL_FAKES: dict[str, type[FakePlatform]] = {
    "twitter": FakeX,
    "linkedin": FakeLinkedIn,
    "instagram": FakeInstagram,
    "facebook": FakeFacebook,
    "tiktok": FakeTikTok,
    "google": FakeYouTube,
}
