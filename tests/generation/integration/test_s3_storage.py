"""The S3 backend against moto's S3 server on loopback: upload, pre-signed URLs, and the service end to end."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import boto3  # type: ignore[import-untyped]
import httpx
import pytest
from contentpipe.api.generation.v1 import generation_service_pb2 as pb
from contentpipe.common.http import create_http_client
from contentpipe.generation.adapters.s3_blobs import S3Blobs, S3Settings
from contentpipe.generation.adapters.storage import StoredAssets
from contentpipe.generation.domain.model import GenerationKind
from contentpipe.generation.service_layer.ports import OutputFile

from tests.generation.support import GenerationClient
from tests.support import ServiceProcess, free_port

pytestmark = pytest.mark.integration

KEY_ID, SECRET = "AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"


@pytest.fixture(scope="module")
def moto_s3() -> Iterator[str]:
    port = free_port()
    process = subprocess.Popen(
        [str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(url, timeout=1)
                break
            except httpx.HTTPError:
                assert time.monotonic() < deadline, "moto server did not start"
                time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)


def _boto(url: str) -> object:
    return boto3.client(
        "s3", endpoint_url=url, aws_access_key_id=KEY_ID, aws_secret_access_key=SECRET, region_name="us-east-1"
    )


def _settings(url: str, bucket: str, **extra: object) -> S3Settings:
    return S3Settings(
        endpoint_url=url, bucket=bucket, region="us-east-1", access_key_id=KEY_ID, secret_access_key=SECRET,
        **extra,  # type: ignore[arg-type]
    )  # fmt: skip


async def test_presigned_url_fetches_the_object_and_a_tampered_one_is_refused(moto_s3: str, tmp_path: Path) -> None:
    _boto(moto_s3).create_bucket(Bucket="gen-presign")  # type: ignore[attr-defined]
    _boto(moto_s3).put_object(Bucket="gen-presign", Key="user-1/g1/0.mp4", Body=b"video bytes")  # type: ignore[attr-defined]
    blobs = S3Blobs(_settings(moto_s3, "gen-presign"))
    try:
        url = blobs.presign("user-1/g1/0.mp4", 900)
        params = dict(httpx.URL(url).params)
        assert params["X-Amz-Expires"] == "900" and params["X-Amz-Algorithm"] == "AWS4-HMAC-SHA256"
        assert url.startswith(f"{moto_s3}/gen-presign/user-1/g1/0.mp4?")
        async with httpx.AsyncClient() as client:
            assert (await client.get(url)).content == b"video bytes"
        assert await blobs.read("user-1/g1/0.mp4") == b"video bytes"
    finally:
        await blobs.aclose()


async def test_missing_bucket_is_created_only_when_asked(moto_s3: str) -> None:
    refused = S3Blobs(_settings(moto_s3, "gen-missing"))
    try:
        with pytest.raises(OSError, match=r"gen-missing.*not usable: HTTP 404"):
            await refused.ensure_bucket()
    finally:
        await refused.aclose()
    created = S3Blobs(_settings(moto_s3, "gen-missing", create_bucket=True))
    try:
        await created.ensure_bucket()
        await created.ensure_bucket()  # idempotent
    finally:
        await created.aclose()
    assert _boto(moto_s3).head_bucket(Bucket="gen-missing")["ResponseMetadata"]["HTTPStatusCode"] == 200  # type: ignore[attr-defined]


async def test_ingest_uploads_to_s3_and_hands_out_a_fetchable_presigned_url(moto_s3: str, tmp_path: Path) -> None:
    _boto(moto_s3).create_bucket(Bucket="gen-direct")  # type: ignore[attr-defined]
    png = tmp_path / "scratch" / "in.png"
    png.parent.mkdir()
    subprocess.run(
        [sys.executable, "-c", "import imageio_ffmpeg,subprocess,sys;subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(),"
         "'-loglevel','error','-f','lavfi','-i','testsrc2=s=96x64','-frames:v','1','-y',sys.argv[1]],check=True)",
         str(png)],
        check=True,
    )  # fmt: skip
    async with create_http_client() as client:
        blobs = S3Blobs(_settings(moto_s3, "gen-direct", presign_seconds=600))
        await blobs.ensure_bucket()
        assets = StoredAssets(blobs, client, scratch_dir=tmp_path / "scratch", max_bytes=10_000_000)
        asset = await assets.ingest(
            OutputFile(png.as_uri(), "user 1/g1/0.img", GenerationKind.IMAGE, {"provider": "x"})
        )
        assert (asset.content_type, asset.width, asset.height) == ("image/png", 96, 64)
        assert asset.storage_key == "gen-direct/user_1/g1/0.png"
        assert asset.expire_time is not None and 590 < (asset.expire_time - datetime.now(UTC)).total_seconds() <= 600
        fetched = await client.get(asset.uri)
        assert fetched.status_code == 200
        assert hashlib.sha256(fetched.content).hexdigest() == asset.sha256
        stored = _boto(moto_s3).get_object(Bucket="gen-direct", Key="user_1/g1/0.png")  # type: ignore[attr-defined]
        assert stored["ContentType"] == "image/png"
        assert stored["ContentLength"] == asset.size_bytes
        refreshed = assets.present(asset, datetime.now(UTC))
        assert refreshed.expire_time is not None and refreshed.expire_time >= asset.expire_time

        public = S3Blobs(_settings(moto_s3, "gen-direct", public_base_url="https://cdn.example.com/media"))
        assert public.uri("a/b.mp4", datetime.now(UTC)) == ("https://cdn.example.com/media/a/b.mp4", None)
        await blobs.aclose()


def test_service_with_s3_backend_stores_the_local_video_in_the_bucket(
    moto_s3: str, start_service: Callable[..., ServiceProcess]
) -> None:
    env = {
        "GENERATION_STORAGE_BACKEND": "s3",
        "GENERATION_STORAGE_BUCKET": "generated-content",
        "S3_ENDPOINT_URL": moto_s3,
        "S3_ACCESS_KEY_ID": KEY_ID,
        "S3_SECRET_ACCESS_KEY": SECRET,
        "S3_CREATE_BUCKET": "1",
        "S3_PRESIGN_EXPIRY": "15m",
    }
    service = start_service("generation", env=env)
    with GenerationClient(service.address) as client:
        created = client.create(
            kind=pb.GENERATION_KIND_VIDEO,
            prompt="s3",
            options={"width": 160, "height": 96, "fps": 5, "duration_seconds": 1},
        )
        done = client.wait(created.name)
    assert done.state == pb.GENERATION_STATE_SUCCEEDED, done.error
    (asset,) = done.outputs
    assert asset.uri.startswith(f"{moto_s3}/generated-content/user-1/") and "X-Amz-Signature=" in asset.uri
    assert asset.HasField("expire_time")
    body = httpx.get(asset.uri, timeout=10).content
    assert hashlib.sha256(body).hexdigest() == asset.sha256
    assert (asset.width, asset.height, asset.frame_count) == (160, 96, 5)
