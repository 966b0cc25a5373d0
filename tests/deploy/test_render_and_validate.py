"""Both overlays build with `kubectl kustomize`, validate against the Kubernetes schemas offline, and pass checkov."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml  # type: ignore[import-untyped]

from tests.deploy.crds import check_cert_manager
from tests.deploy.manifests import OVERLAYS, SECRET_TEMPLATES, rendered

pytestmark = pytest.mark.integration

KUBERNETES_VERSION = "1.37.0"
CHECKOV = "checkov==3.3.30"
# The only checks we accept as skipped, each justified in a `checkov.io/skipN: ID=reason` annotation.
ALLOWED_SKIPS = {"CKV_K8S_43", "CKV_K8S_35"}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_builds_with_kubectl_kustomize(overlay: str) -> None:
    objects = rendered(overlay).objects
    kinds = {o["kind"] for o in objects}
    assert {"Namespace", "Deployment", "Service", "ServiceAccount", "PodDisruptionBudget", "CronJob", "Job"} <= kinds
    assert {"ConfigMap", "NetworkPolicy"} <= kinds
    for obj in objects:
        if obj["kind"] != "Namespace":
            assert obj["metadata"].get("namespace") == "contentpipe", obj["metadata"]["name"]
    # Secrets are never rendered: an apply must not overwrite the operator's real credentials with templates.
    assert "Secret" not in kinds


# Custom resources have no schema in kubernetes-validate: cert-manager's are checked by check_cert_manager
# (tests/deploy/crds.py: the fields and values of cert-manager.io/v1 that we use); any other unknown kind fails.
@pytest.mark.parametrize("overlay", [*OVERLAYS, "database-init"])
def test_every_rendered_object_validates_against_kubernetes_schemas(overlay: str) -> None:
    errors = []
    for obj in rendered(overlay).objects:
        if obj["apiVersion"].startswith("cert-manager.io/"):
            errors.extend(check_cert_manager(obj))
            continue
        try:
            kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            errors.append(f"{obj['kind']}/{obj['metadata']['name']}: {exc.message} at {list(exc.path)}")
    assert errors == []


def test_secret_templates_validate_and_hold_no_values() -> None:
    paths = sorted(SECRET_TEMPLATES.glob("*.yaml"))
    assert len(paths) == 6
    for path in paths:
        for obj in yaml.safe_load_all(path.read_text()):
            kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
            assert obj["kind"] == "Secret"
            assert obj["stringData"], path.name
            assert all(value == "" for value in obj["stringData"].values()), f"{path.name} holds a value"


def test_schema_validation_rejects_a_broken_object() -> None:
    """Guards the validator itself: a wrong type or an unknown field must fail (strict mode)."""
    broken = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "x"}, "spec": {"replicas": "2"}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)
    unknown = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "x"}, "spec": {"portz": []}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(unknown, KUBERNETES_VERSION, strict=True)


def _run_checkov(manifest: Path) -> dict[str, Any]:
    """checkov in its own environment (`uv tool run`): its pins would downgrade the workspace's dependencies."""
    uv = shutil.which("uv")
    if uv is None:
        if os.environ.get("CI") == "true":
            pytest.fail("uv is required to run checkov in CI")
        pytest.skip("uv not on PATH: cannot run checkov")
    result = subprocess.run(
        [
            uv,
            "tool",
            "run",
            "--from",
            CHECKOV,
            "checkov",
            "-f",
            str(manifest),
            "--framework",
            "kubernetes",
            "--skip-download",
            "--output",
            "json",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        env={**os.environ, "BC_SKIP_MAPPING": "TRUE"},
    )
    if not result.stdout.strip().startswith("{"):
        pytest.fail(f"checkov did not run (exit {result.returncode}):\n{result.stderr[-3000:]}")
    report: dict[str, Any] = json.loads(result.stdout)
    return report


@pytest.mark.timeout(900)
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_checkov_reports_no_failed_checks(overlay: str, tmp_path: Path) -> None:
    manifest = tmp_path / f"{overlay}.yaml"
    manifest.write_text(rendered(overlay).text)
    report = _run_checkov(manifest)
    failed = [(c["check_id"], c["resource"], c["check_name"]) for c in report["results"]["failed_checks"]]
    assert failed == []
    assert report["summary"]["passed"] > 100  # the checks ran over the workloads
    assert report["summary"]["parsing_errors"] == 0
    for check in report["results"]["skipped_checks"]:
        assert check["check_id"] in ALLOWED_SKIPS, check["check_id"]
        justification = check["check_result"].get("suppress_comment", "")
        assert len(justification) > 40, f"{check['check_id']} on {check['resource']} lacks a justification"
