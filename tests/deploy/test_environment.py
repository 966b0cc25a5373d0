"""Every variable a service reads at start-up is provided by its ConfigMaps or Secret templates, and the
rendered values are accepted by the service's own `load_config` (durations, URLs, bounds)."""

from __future__ import annotations

import base64
import functools
import importlib
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from tests.deploy.manifests import OVERLAYS, SERVICES, pod_spec, rendered, secret_templates
from tests.support.tls import issue, make_ca

pytestmark = pytest.mark.integration

# Plausible values for the Secret keys, so that load_config takes its production paths.
_KEY = base64.b64encode(b"k" * 32).decode()
SECRET_SAMPLES = {
    "CONTENTPIPE_JWT_SECRET": "s" * 48,
    "OAUTH_TOKEN_KEYS": f"k1:{_KEY}",
    "NOTIFICATION_WEBHOOK_SECRET": "whsec_" + base64.b64encode(b"w" * 32).decode(),
    "REPLICATE_WEBHOOK_SECRET": "whsec_" + base64.b64encode(b"r" * 32).decode(),
}


class RecordingEnviron(Mapping[str, str]):
    """A read-only environment that remembers every name looked up, present or not."""

    def __init__(self, values: Mapping[str, str]) -> None:
        self._values = dict(values)
        self.read: set[str] = set()

    def __getitem__(self, key: str) -> str:
        self.read.add(key)
        return self._values[key]

    def __contains__(self, key: object) -> bool:
        if isinstance(key, str):
            self.read.add(key)
        return key in self._values

    def __iter__(self) -> Iterator[str]:
        raise AssertionError("config must read named variables, not scan the environment")

    def __len__(self) -> int:
        return len(self._values)


TLS_MOUNT = "/etc/contentpipe/tls/"


@functools.cache
def _tls_files() -> Path:
    """What components/tls mounts (ca.crt, tls.crt, tls.key), made by a test CA in a temporary folder."""
    folder = Path(tempfile.mkdtemp(prefix="contentpipe-tls-"))
    ca = make_ca(folder)
    pair = issue(ca, folder, "service")
    shutil.copyfile(ca.cert, folder / "ca.crt")
    shutil.copyfile(pair.cert, folder / "tls.crt")
    shutil.copyfile(pair.key, folder / "tls.key")
    return folder


def _secret_value(name: str) -> str:
    if name.endswith("_DATABASE_URL"):
        return f"postgresql://contentpipe:pw@postgres:5432/{name.split('_', maxsplit=1)[0].lower()}"
    return SECRET_SAMPLES.get(name, "sample-value")


def _pod_environment(overlay: str, service: str) -> tuple[dict[str, str], dict[str, str]]:
    """(environment a pod of `service` gets, where each name comes from)."""
    r = rendered(overlay)
    (container,) = pod_spec(r.get("Deployment", service))["containers"]
    templates = secret_templates()
    env: dict[str, str] = {}
    source: dict[str, str] = {}
    for ref in container["envFrom"]:
        if "configMapRef" in ref:
            name = ref["configMapRef"]["name"]
            base = name.rsplit("-", 1)[0]
            for key, value in r.config_map(base).items():
                env[key], source[key] = value, f"ConfigMap {base}"
        else:
            name = ref["secretRef"]["name"]
            assert name in templates, f"{service} reads Secret {name} that has no template in deploy/k8s/secrets"
            for key in templates[name]["stringData"]:
                env[key], source[key] = _secret_value(key), f"Secret {name}"
    for item in container.get("env", []):
        env[item["name"]] = item.get("value", "from-field")
        source[item["name"]] = "Deployment env"
    for key, value in env.items():  # files the pod mounts exist here too (the settings check they do)
        if value.startswith(TLS_MOUNT):
            env[key] = str(_tls_files() / value.removeprefix(TLS_MOUNT))
    return env, source


def _load(service: str, environ: Mapping[str, str]) -> Any:
    module = importlib.import_module(f"contentpipe.{service}.config")
    return module.load_config(environ)


@pytest.mark.parametrize("overlay", OVERLAYS)
@pytest.mark.parametrize("service", SERVICES)
def test_every_variable_read_at_startup_is_provided(overlay: str, service: str) -> None:
    env, _ = _pod_environment(overlay, service)
    environ = RecordingEnviron(env)
    config = _load(service, environ)  # the rendered values are valid for the service itself
    missing = sorted(environ.read - set(env))
    assert missing == [], f"{service} reads variables that neither its ConfigMaps nor its Secret provide"
    assert config.common.database_url.startswith("postgresql+psycopg://")
    assert config.common.auto_migrate is False
    assert str(config.common.data_dir) == "/data"


@pytest.mark.parametrize("service", SERVICES)
def test_credentials_come_from_secrets_not_config_maps(service: str) -> None:
    _, source = _pod_environment("prod", service)
    sensitive = [n for n in source if n.endswith(("_SECRET", "_TOKEN", "_TOKEN_KEYS", "_DATABASE_URL", "_KEY_ID"))]
    assert sensitive
    for name in sensitive:
        assert source[name].startswith("Secret"), f"{name} comes from {source[name]}"


def test_the_recorder_sees_a_variable_that_is_not_provided() -> None:
    """Guards the test above: a read of an unprovided variable shows up as missing."""
    env, _ = _pod_environment("prod", "scheduler")
    del env["SCHEDULER_BATCH_SIZE"]
    environ = RecordingEnviron(env)
    _load("scheduler", environ)
    assert "SCHEDULER_BATCH_SIZE" in environ.read - set(env)
