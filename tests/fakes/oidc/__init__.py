"""Runs the real OpenID Connect provider (npm `oidc-provider`, tests/fakes/oidc/provider.mjs) on loopback."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import urllib.request
from pathlib import Path

import pytest

from tests.support.ports import free_port

REPO_ROOT = Path(__file__).resolve().parents[3]
SCRIPT = Path(__file__).with_name("provider.mjs")
YOUTUBE_UPLOAD = "https://www.googleapis.com/auth/youtube.upload"
YOUTUBE_READONLY = "https://www.googleapis.com/auth/youtube.readonly"


class OidcProvider:
    """`with OidcProvider(client_id, secret, redirect_uris) as op:` → op.issuer, op.env() for the google adapter."""

    def __init__(self, client_id: str, client_secret: str, redirect_uris: list[str], *, access_ttl: int = 3600):
        self.client_id = client_id
        self.client_secret = client_secret
        self.port = free_port()
        self.issuer = f"http://127.0.0.1:{self.port}"
        self._env = {
            **os.environ,
            "OIDC_PORT": str(self.port),
            "OIDC_CLIENT_ID": client_id,
            "OIDC_CLIENT_SECRET": client_secret,
            "OIDC_REDIRECT_URIS": ",".join(redirect_uris),
            "OIDC_EXTRA_SCOPES": f"{YOUTUBE_UPLOAD} {YOUTUBE_READONLY}",
            "OIDC_ACCESS_TOKEN_TTL": str(access_ttl),
        }
        self._process: subprocess.Popen[bytes] | None = None

    @staticmethod
    def require() -> None:
        """Skip locally, fail under CI, when node or the npm package is missing (`npm ci` installs it)."""
        missing = None
        if shutil.which("node") is None:
            missing = "node is not installed"
        elif not (REPO_ROOT / "node_modules" / "oidc-provider").is_dir():
            missing = "npm package oidc-provider is not installed (run `npm ci`)"
        if missing:
            if os.environ.get("CI", "").lower() == "true":
                pytest.fail(missing)
            pytest.skip(missing)

    def __enter__(self) -> OidcProvider:
        self.require()
        self._process = subprocess.Popen(
            ["node", str(SCRIPT)], cwd=REPO_ROOT, env=self._env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
        )
        assert self._process.stdout is not None
        line = self._process.stdout.readline().decode()
        if not line.startswith("READY"):
            self.__exit__()
            raise RuntimeError(f"oidc-provider did not start: {line!r}")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
            self._process = None

    def discovery(self) -> dict[str, str]:
        with urllib.request.urlopen(f"{self.issuer}/.well-known/openid-configuration", timeout=5) as response:  # noqa: S310
            return json.loads(response.read())  # type: ignore[no-any-return]

    def stats(self) -> dict[str, int]:
        """Grants the provider issued: `token` (all) and `refresh`."""
        with urllib.request.urlopen(f"{self.issuer}/__stats", timeout=5) as response:  # noqa: S310
            return json.loads(response.read())  # type: ignore[no-any-return]

    def env(self) -> dict[str, str]:
        """The oauth service's `GOOGLE_*` variables, endpoints taken from the provider's discovery document."""
        d = self.discovery()
        return {
            "GOOGLE_CLIENT_ID": self.client_id,
            "GOOGLE_CLIENT_SECRET": self.client_secret,
            "GOOGLE_AUTHORIZE_URL": d["authorization_endpoint"],
            "GOOGLE_TOKEN_URL": d["token_endpoint"],
            "GOOGLE_USERINFO_URL": d["userinfo_endpoint"],
            "GOOGLE_REVOKE_URL": d["revocation_endpoint"],
            "GOOGLE_API_BASE_URL": self.issuer,  # serves YouTube's channels.list too (provider.mjs)
        }
