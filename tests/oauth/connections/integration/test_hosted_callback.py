"""The hosted OAuth callback in a real headless browser (Chromium + chromedriver through Selenium).

The browser opens the authorization URL, the fake platform redirects it to the oauth service's callback port, and
the page that comes back is checked in the DOM and on a screenshot: success (started by `contentpipe connections
connect x --remote`, which then sees the connection), a refused consent, a replayed callback, a forged state.
"""

from __future__ import annotations

import shutil
import struct
import subprocess
import sys
import zlib
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from contentpipe.api.oauth.v1 import connection_service_pb2 as pb
from contentpipe.api.oauth.v1 import connection_service_pb2_grpc, platform_pb2

from tests.cli.harness import REPO_ROOT, cli_environ
from tests.fakes import LoopbackHTTPServer
from tests.fakes.oauth_platforms import FakePlatforms
from tests.support import TEST_JWT_SECRET, ServiceProcess, bearer, free_port, mint_token

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        not (shutil.which("chromium") and shutil.which("chromedriver")),
        reason="needs Debian's chromium and chromium-driver (installed by .ci/run)",
    ),
]


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[tuple[ServiceProcess, FakePlatforms, str]]:
    fakes = FakePlatforms()
    port = free_port()
    callback = f"http://127.0.0.1:{port}/oauth/callback"
    with LoopbackHTTPServer(fakes.app()) as server:
        env = {
            **FakePlatforms.env(server.url),
            "OAUTH_TOKEN_KEYS": "k1:" + "MTExMTExMTExMTExMTExMTExMTExMTExMTExMTExMTE=",
            "OAUTH_CALLBACK_URL": callback,
            "OAUTH_CALLBACK_PORT": str(port),
        }
        service = ServiceProcess("oauth", tmp_path / "oauth", env=env).start()
        try:
            yield service, fakes, callback
        finally:
            service.terminate()


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[object]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or "chromium"
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=900,700"):
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path / 'chromium-profile'}")
    driver = webdriver.Chrome(options=options, service=Service(executable_path=shutil.which("chromedriver")))
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def _start(service: ServiceProcess, user: str = "user-1") -> pb.StartConnectionResponse:
    with grpc.insecure_channel(service.address) as channel:
        stub = connection_service_pb2_grpc.ConnectionServiceStub(channel)
        request = pb.StartConnectionRequest(platform=platform_pb2.PLATFORM_TWITTER)  # no redirect_uri: hosted
        started: pb.StartConnectionResponse = stub.StartConnection(request, metadata=bearer(user), timeout=10)
        return started


def _png_is_not_blank(path: Path) -> bool:
    """Decode the PNG's pixel stream (zlib of the IDAT chunks) and look for more than a couple of colours."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    offset, idat = 8, b""
    while offset < len(data):
        (length,) = struct.unpack(">I", data[offset : offset + 4])
        kind = data[offset + 4 : offset + 8]
        if kind == b"IDAT":
            idat += data[offset + 8 : offset + 8 + length]
        offset += 12 + length
    return len(set(zlib.decompress(idat))) > 16


def _page(driver: object, url: str, shot: Path) -> tuple[str, str]:
    from selenium.webdriver.common.by import By

    driver.get(url)  # type: ignore[attr-defined]
    heading = driver.find_element(By.TAG_NAME, "h1").text  # type: ignore[attr-defined]
    text = driver.find_element(By.TAG_NAME, "main").text  # type: ignore[attr-defined]
    assert driver.find_element(By.TAG_NAME, "html").get_attribute("lang") == "en"  # type: ignore[attr-defined]
    driver.save_screenshot(str(shot))  # type: ignore[attr-defined]
    assert _png_is_not_blank(shot), f"blank screenshot {shot}"
    return heading, text


def test_remote_connect_completes_in_the_browser_and_the_cli_sees_the_connection(
    stack: tuple[ServiceProcess, FakePlatforms, str], browser: object, tmp_path: Path
) -> None:
    service, fakes, callback = stack
    env = cli_environ(
        {"CONTENTPIPE_OAUTH_ADDR": service.address, "CONTENTPIPE_TOKEN": mint_token(TEST_JWT_SECRET, "user-1")}
    )
    cli = subprocess.Popen(
        [sys.executable, "-m", "contentpipe.cli", "connections", "connect", "x", "--remote", "--wait-timeout", "60"],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert cli.stdout is not None
        url = cli.stdout.readline().strip()  # the authorization URL is the first line on stdout
        assert url.startswith("http://127.0.0.1") and "redirect_uri=" in url, url
        assert f"redirect_uri={callback.replace(':', '%3A').replace('/', '%2F')}" in url

        heading, text = _page(browser, url, tmp_path / "connected.png")
        assert heading == "Connected to X"
        assert "@alice_x" in text and "connections/" in text
        out, err = cli.communicate(timeout=60)
    finally:
        if cli.poll() is None:
            cli.kill()
            cli.wait()
    assert cli.returncode == 0, err
    assert "alice_x" in out and "ACTIVE" in out
    assert not any(token in text or token in out for token in fakes.issued)  # no code or token on the page

    # The same redirect again (back button, a reload, a leaked link): refused, the connection is untouched.
    replay_heading, replay_text = _page(browser, browser.current_url, tmp_path / "replayed.png")  # type: ignore[attr-defined]
    assert replay_heading == "This link was already used"
    assert "contentpipe connections list" in replay_text


def test_refused_consent_and_forged_state_say_what_happened_and_what_to_do(
    stack: tuple[ServiceProcess, FakePlatforms, str], browser: object, tmp_path: Path
) -> None:
    service, fakes, callback = stack
    fakes.refuse_consent.add("twitter")
    heading, text = _page(browser, _start(service).authorization_uri, tmp_path / "refused.png")
    assert heading == "Connection not made"
    assert "X did not grant access: you chose not to allow it." in text
    assert "contentpipe connections connect x --remote" in text

    forged_heading, forged_text = _page(browser, f"{callback}?code=abc&state=forged", tmp_path / "forged.png")
    assert forged_heading == "This link is not valid"
    assert "start a new connection" in forged_text
    with grpc.insecure_channel(service.address) as channel:
        listed = connection_service_pb2_grpc.ConnectionServiceStub(channel).ListConnections(
            pb.ListConnectionsRequest(), metadata=bearer("user-1"), timeout=10
        )
    assert list(listed.connections) == []
