"""The cert-manager TLS component, the hosted callback component and the database bootstrap, as rendered."""

from __future__ import annotations

from typing import Any

import pytest

from tests.deploy.crds import check_cert_manager
from tests.deploy.manifests import SERVICES, pod_spec, rendered

pytestmark = pytest.mark.integration

TLS_DIR = "/etc/contentpipe/tls"


def _container(workload: dict[str, Any]) -> dict[str, Any]:
    containers: list[dict[str, Any]] = pod_spec(workload)["containers"]
    return containers[0]


def test_prod_serves_mutual_tls_with_certificates_that_name_what_peers_dial() -> None:
    prod = rendered("prod")
    config = prod.config_map("contentpipe-config")
    assert config["CONTENTPIPE_TLS_CERT_FILE"] == f"{TLS_DIR}/tls.crt"
    assert config["CONTENTPIPE_TLS_KEY_FILE"] == f"{TLS_DIR}/tls.key"
    assert config["CONTENTPIPE_TLS_CA_FILE"] == config["CONTENTPIPE_TLS_CLIENT_CA_FILE"] == f"{TLS_DIR}/ca.crt"
    certificates = {c["spec"]["secretName"]: c for c in prod.of_kind("Certificate")}
    issuers = {i["metadata"]["name"] for i in prod.of_kind("Issuer")}
    for certificate in certificates.values():
        assert check_cert_manager(certificate) == []
        assert certificate["spec"]["issuerRef"]["name"] in issuers
    for service in SERVICES:
        host = config[f"CONTENTPIPE_{service.upper()}_ADDR"].rsplit(":", 1)[0]
        spec = certificates[f"{service}-tls"]["spec"]
        assert host in spec["dnsNames"] and "127.0.0.1" in spec["ipAddresses"]  # peers and the probe
        assert {"server auth", "client auth"} <= set(spec["usages"])
        deployment = prod.get("Deployment", service)
        volumes = {v["name"]: v for v in pod_spec(deployment)["volumes"]}
        assert volumes["tls"]["secret"]["secretName"] == f"{service}-tls"
        container = _container(deployment)
        assert {"name": "tls", "mountPath": TLS_DIR, "readOnly": True} in container["volumeMounts"]
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert "grpc" not in container[probe]  # the kubelet's gRPC probes cannot speak TLS
            assert container[probe]["exec"]["command"] == ["python", "-m", "contentpipe.common.probe", service]
        # every workload that loads the settings mounts the files they name (the service checks they exist)
        migrate = prod.get("Job", f"{service}-migrate")
        assert {v["name"]: v for v in pod_spec(migrate)["volumes"]}["tls"]["secret"]["secretName"] == f"{service}-tls"
        assert {"name": "tls", "mountPath": TLS_DIR, "readOnly": True} in _container(migrate)["volumeMounts"]
    tick = prod.get("CronJob", "scheduler-tick")
    assert {v["name"]: v for v in pod_spec(tick)["volumes"]}["tls"]["secret"]["secretName"] == "scheduler-tls"


def test_dev_stays_plaintext() -> None:
    dev = rendered("dev")
    assert not dev.of_kind("Certificate")
    assert not any(v for k, v in dev.config_map("contentpipe-config").items() if k.startswith("CONTENTPIPE_TLS_"))
    assert "grpc" in _container(dev.get("Deployment", "oauth"))["readinessProbe"]


def test_prod_publishes_the_hosted_callback_and_registers_its_url() -> None:
    prod = rendered("prod")
    oauth = prod.config_map("oauth-config")
    url = oauth["OAUTH_CALLBACK_URL"]
    assert url.startswith("https://") and oauth["OAUTH_CALLBACK_PORT"] == "8080"
    host, path = url.removeprefix("https://").split("/", 1)
    ingress = prod.get("Ingress", "oauth-callback")
    (rule,) = ingress["spec"]["rules"]
    assert rule["host"] == host and host in ingress["spec"]["tls"][0]["hosts"]
    (route,) = rule["http"]["paths"]
    assert route["path"] == f"/{path}" and route["backend"]["service"] == {
        "name": "oauth",
        "port": {"name": "http-callback"},
    }
    ports = {p["name"]: p for p in prod.get("Service", "oauth")["spec"]["ports"]}
    assert ports["http-callback"]["port"] == 8080 and ports["grpc"]["port"] == 50052
    container_ports = {p["name"]: p["containerPort"] for p in _container(prod.get("Deployment", "oauth"))["ports"]}
    assert container_ports == {"grpc": 50052, "http-callback": 8080}


def test_database_init_creates_every_service_database_from_the_admin_secret() -> None:
    bootstrap = rendered("database-init")
    job = bootstrap.get("Job", "contentpipe-db-init")
    container = _container(job)
    script = container["args"][0]
    for service in SERVICES:
        assert service in script
    assert "CREATE DATABASE" in script and "CREATE ROLE" in script and "\\gexec" in script
    assert container["envFrom"] == [{"secretRef": {"name": "contentpipe-db-admin"}}]
    assert {o["kind"] for o in bootstrap.objects} == {"Namespace", "Job"}
