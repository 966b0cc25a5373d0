"""`contentpipe connections connect` against the real oauth service and a loopback fake of the platform: the CLI
prints the authorization URL, the "user" consents at the fake, the platform redirects to the CLI's loopback
listener, and the connection is completed, listed, refreshed and deleted."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from urllib.parse import urljoin

import httpx
import pytest

from tests.cli.harness import REPO_ROOT, cli_environ, run_cli
from tests.fakes import LoopbackHTTPServer
from tests.fakes.oauth_platforms import FakePlatforms
from tests.support import free_port

pytestmark = pytest.mark.e2e


def consent(authorization_uri: str, redirect_uri: str) -> str:
    """Follow the platform's redirects like a browser until it sends the user back; return that URL."""
    with httpx.Client(follow_redirects=False, timeout=10) as browser:
        url = authorization_uri
        for _ in range(10):
            if url.startswith(redirect_uri):
                return url
            response = browser.get(url)
            assert response.status_code in (302, 303), (response.status_code, response.text[:300])
            url = urljoin(url, response.headers["location"])
    raise AssertionError("the platform never redirected back")


def test_connect_linkedin_through_the_loopback_listener(tmp_path: Path) -> None:
    data = tmp_path / "data"
    cp = ("--data-dir", str(data))
    redirect_uri = f"http://127.0.0.1:{free_port()}/callback"
    with LoopbackHTTPServer(FakePlatforms().app()) as platform:
        env = {**FakePlatforms.env(platform.url), "OAUTH_REDIRECT_URIS": redirect_uri}
        up = run_cli(*cp, "up", "--detach", "--ports", "auto", env=env)
        assert up.returncode == 0, up.stderr
        try:
            platforms = json.loads(run_cli(*cp, "connections", "platforms", "-o", "json").stdout)
            assert "LINKEDIN" in {p["platform"] for p in platforms["platforms"]}

            process = subprocess.Popen(
                [sys.executable, "-m", "contentpipe.cli", *cp, "connections", "connect", "linkedin",
                 "--no-browser", "--redirect-uri", redirect_uri, "-o", "json"],
                cwd=REPO_ROOT, env=cli_environ(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            )  # fmt: skip
            assert process.stdout is not None
            authorization_uri = process.stdout.readline().strip()
            assert authorization_uri.startswith(f"{platform.url}/linkedin/oauth/v2/authorization?")
            back = consent(authorization_uri, redirect_uri)
            assert httpx.get(back, timeout=10).status_code == 200  # the browser lands on the CLI's listener
            out, err = process.communicate(timeout=60)
            assert process.returncode == 0, err
            connection = json.loads(out)
            assert (connection["platform"], connection["status"]) == ("LINKEDIN", "ACTIVE")

            listed = run_cli(*cp, "connections", "list", "--platform", "linkedin", "-o", "name")
            assert listed.stdout.split() == [connection["name"]]
            refreshed = run_cli(*cp, "connections", "refresh", connection["name"], "-o", "json")
            assert refreshed.returncode == 0, refreshed.stderr
            assert json.loads(refreshed.stdout)["status"] == "ACTIVE"
            deleted = run_cli(*cp, "connections", "delete", connection["name"])
            assert deleted.returncode == 0, deleted.stderr
            assert deleted.stdout.startswith(f"deleted {connection['name']}; revoked at the platform")
            gone = run_cli(*cp, "connections", "get", connection["name"])
            assert gone.returncode == 4
        finally:
            run_cli(*cp, "down")
