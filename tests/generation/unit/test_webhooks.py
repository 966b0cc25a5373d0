"""The webhook ASGI app (signature checks, body limit, spooling of data: URIs) without a network."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path
from typing import Any

import httpx
import pytest
from contentpipe.generation.entrypoints.webhook_spool import extract_data_uris, remove_stale_files
from contentpipe.generation.entrypoints.webhooks import WebhookSettings, cog_signature, webhook_app

pytestmark = pytest.mark.unit

KEY = b"k" * 32


class Deliveries:
    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.refused: list[tuple[str, str]] = []

    async def receive(self, prediction: dict[str, Any]) -> None:
        self.received.append(prediction)

    async def refuse(self, prediction_id: str, message: str) -> None:
        self.refused.append((prediction_id, message))


def test_data_uris_are_decoded_to_files_and_the_rest_of_the_json_is_kept(tmp_path: Path) -> None:
    video = os.urandom(3 * 1024 * 1024 + 7)  # spans several read chunks, not a multiple of 3
    image = b"\xff\xd8\xff" + os.urandom(1000)
    document = {
        "id": "g1-video",
        "status": "succeeded",
        "output": [f"data:video/mp4;base64,{base64.b64encode(video).decode()}",
                   f"data:image/jpeg;base64,{base64.b64encode(image).decode()}"],
        "logs": 'said "data:nothing" here',
        "note": "data:text/plain,hello",
    }  # fmt: skip
    body = tmp_path / "body.json"
    body.write_text(json.dumps(document).replace("/", "\\/"))  # a sender that escapes slashes
    parsed = extract_data_uris(body, tmp_path / "out")
    first, second = (Path(uri.removeprefix("file://")) for uri in parsed["output"])
    assert first.read_bytes() == video and first.suffix == ".mp4"
    assert second.read_bytes() == image
    assert parsed["logs"] == 'said "data:nothing" here'
    assert parsed["note"] == "data:text/plain,hello"
    assert (parsed["id"], parsed["status"]) == ("g1-video", "succeeded")


async def _post(app: Any, path: str, body: bytes, headers: dict[str, str] | None = None) -> httpx.Response:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://hooks") as client:
        return await client.post(path, content=body, headers=headers or {})


async def test_cog_delivery_needs_the_url_signature_and_is_handed_over_with_files(tmp_path: Path) -> None:
    deliveries = Deliveries()
    app = webhook_app(WebhookSettings(KEY, tmp_path / "spool", 1024 * 1024), deliveries)
    mp4 = b"\x00\x00\x00\x18ftypmp42" + os.urandom(5000)
    body = json.dumps({"id": "gen1-video", "status": "succeeded",
                       "output": "data:video/mp4;base64," + base64.b64encode(mp4).decode()}).encode()  # fmt: skip
    assert (await _post(app, "/webhooks/cog?id=gen1-video&sig=bad", body)).status_code == 401
    assert (await _post(app, f"/webhooks/cog?id=other&sig={cog_signature(KEY, 'other')}", body)).status_code == 400
    ok = await _post(app, f"/webhooks/cog?id=gen1-video&sig={cog_signature(KEY, 'gen1-video')}", body)
    assert ok.status_code == 200
    (delivered,) = deliveries.received
    assert Path(delivered["output"].removeprefix("file://")).read_bytes() == mp4
    assert not list((tmp_path / "spool").glob("*.json"))  # the raw body is gone once parsed


async def test_an_oversized_cog_delivery_is_refused_and_fails_its_generation(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    deliveries = Deliveries()
    app = webhook_app(WebhookSettings(KEY, tmp_path / "spool", 64 * 1024), deliveries)
    body = json.dumps({"id": "gen2-video", "output": "data:video/mp4;base64," + "A" * 100_000}).encode()
    response = await _post(app, f"/webhooks/cog?id=gen2-video&sig={cog_signature(KEY, 'gen2-video')}", body)
    assert response.status_code == 413
    assert not deliveries.received
    ((prediction_id, message),) = deliveries.refused
    assert prediction_id == "gen2-video" and "GENERATION_WEBHOOK_MAX_BODY" in message
    assert any(getattr(r, "generation_id", None) == "gen2" for r in caplog.records)


async def test_routes_and_methods(tmp_path: Path) -> None:
    app = webhook_app(WebhookSettings(KEY, tmp_path, 1024), Deliveries())
    assert (await _post(app, "/elsewhere", b"{}")).status_code == 404
    assert (await _post(app, "/webhooks/replicate", b"{}")).status_code == 404  # no Replicate secret configured
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://hooks") as client:
        assert (await client.get("/webhooks/cog")).status_code == 405


def test_spooled_files_nobody_took_are_removed_after_their_age(tmp_path: Path) -> None:
    old, fresh = tmp_path / "outputs" / "old.mp4", tmp_path / "outputs" / "fresh.mp4"
    old.parent.mkdir()
    old.write_bytes(b"x")
    fresh.write_bytes(b"y")
    os.utime(old, (1_000_000, 1_000_000))
    assert remove_stale_files(tmp_path, older_than_seconds=3600) == 1
    assert not old.exists() and fresh.exists()
    assert remove_stale_files(tmp_path / "missing", older_than_seconds=1) == 0
