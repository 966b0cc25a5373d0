"""Every service has a hardened Deployment with gRPC probes and resources, a Service, a PDB and a migrate Job;
the scheduler CronJob ticks every minute; network policies allow exactly the architecture's calls."""

from __future__ import annotations

from typing import Any

import pytest

from tests.deploy.manifests import OVERLAYS, SERVICES, pod_spec, rendered

pytestmark = pytest.mark.integration

PORTS = {"generation": 50051, "oauth": 50052, "pipelines": 50053, "scheduler": 50054}


def test_services_folder_matches_the_manifests() -> None:
    assert set(SERVICES) == set(PORTS)


def _assert_hardened(spec: dict[str, Any], where: str) -> None:
    assert spec["automountServiceAccountToken"] is False, where
    pod = spec["securityContext"]
    assert pod["runAsNonRoot"] is True, where
    assert isinstance(pod["runAsUser"], int) and pod["runAsUser"] >= 10000, where
    assert pod["seccompProfile"]["type"] == "RuntimeDefault", where
    mounted = set()
    for container in spec["containers"]:
        sc = container["securityContext"]
        assert sc["readOnlyRootFilesystem"] is True, where
        assert sc["allowPrivilegeEscalation"] is False, where
        assert sc["capabilities"]["drop"] == ["ALL"], where
        assert "add" not in sc["capabilities"], where
        assert sc["runAsNonRoot"] is True and isinstance(sc["runAsUser"], int), where
        resources = container["resources"]
        for kind in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(resources[kind]), f"{where}: {kind}"
        mounted |= {m["mountPath"] for m in container["volumeMounts"]}
    # Scratch space on emptyDir volumes, since the root filesystem is read-only.
    assert {"/data", "/tmp"} <= mounted, where  # noqa: S108 (paths inside the pod)
    # ... and the only other volume is the TLS certificate Secret of components/tls, read-only.
    assert all("emptyDir" in v or (v["name"] == "tls" and "secret" in v) for v in spec["volumes"]), where


@pytest.mark.parametrize("overlay", OVERLAYS)
@pytest.mark.parametrize("service", sorted(PORTS))
def test_each_service_has_a_hardened_deployment_with_grpc_probes(overlay: str, service: str) -> None:
    r = rendered(overlay)
    deployment = r.get("Deployment", service)
    spec = pod_spec(deployment)
    _assert_hardened(spec, f"{overlay}/{service}")
    (container,) = spec["containers"]
    assert container["args"] == ["serve"]
    assert container["image"].split("/")[-1].startswith(f"{service}:")
    assert not container["image"].endswith(":latest")
    port = PORTS[service]
    assert {"name": "grpc", "containerPort": port, "protocol": "TCP"} in container["ports"]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        if "exec" in container[probe]:  # components/tls: the kubelet's gRPC probes cannot speak TLS
            assert container[probe]["exec"]["command"] == ["python", "-m", "contentpipe.common.probe", service]
        else:
            assert container[probe]["grpc"]["port"] == port, probe  # native gRPC probe on grpc.health.v1
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env[f"{service.upper()}_GRPC_HOST"] == "0.0.0.0"
    assert env[f"{service.upper()}_GRPC_PORT"] == str(port)
    # SIGTERM: the service finishes in-flight work within its grace, then the pod's grace period ends.
    grace = float(r.config_map("contentpipe-config")["CONTENTPIPE_SHUTDOWN_GRACE_SECONDS"])
    assert spec["terminationGracePeriodSeconds"] > grace + 5
    assert r.config_map("contentpipe-config")["CONTENTPIPE_AUTO_MIGRATE"] == "0"
    assert {c["topologyKey"] for c in spec["topologySpreadConstraints"]} == {
        "topology.kubernetes.io/zone",
        "kubernetes.io/hostname",
    }
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    sa = r.get("ServiceAccount", spec["serviceAccountName"])
    assert sa["automountServiceAccountToken"] is False
    if overlay == "prod":
        assert deployment["spec"]["replicas"] >= 2


@pytest.mark.parametrize("overlay", OVERLAYS)
@pytest.mark.parametrize("service", sorted(PORTS))
def test_each_service_has_a_grpc_service_pdb_and_migrate_job(overlay: str, service: str) -> None:
    r = rendered(overlay)
    pod_labels = r.get("Deployment", service)["spec"]["template"]["metadata"]["labels"]
    svc = r.get("Service", service)
    grpc_port, *others = sorted(svc["spec"]["ports"], key=lambda p: p["name"] != "grpc")
    assert grpc_port == {
        "name": "grpc", "port": PORTS[service], "targetPort": "grpc", "protocol": "TCP", "appProtocol": "grpc"
    }  # fmt: skip
    assert [p["name"] for p in others] == (["http-callback"] if service == "oauth" and overlay == "prod" else [])
    assert svc["spec"]["selector"].items() <= pod_labels.items()
    pdb = r.get("PodDisruptionBudget", service)
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert pdb["spec"]["maxUnavailable"] == 1
    job = r.get("Job", f"{service}-migrate")
    job_spec = pod_spec(job)
    _assert_hardened(job_spec, f"{overlay}/{service}-migrate")
    assert job_spec["containers"][0]["args"] == ["migrate"]
    assert (
        job_spec["containers"][0]["image"]
        == r.get("Deployment", service)["spec"]["template"]["spec"]["containers"][0]["image"]
    ), "migrations must come from the same image as the code they serve"
    assert job["metadata"]["annotations"]["argocd.argoproj.io/hook"] == "PreSync"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_scheduler_cronjob_ticks_every_minute_without_overlap(overlay: str) -> None:
    r = rendered(overlay)
    cron = r.get("CronJob", "scheduler-tick")
    spec = cron["spec"]
    assert spec["schedule"] == "* * * * *"
    assert spec["concurrencyPolicy"] == "Forbid"
    assert spec["timeZone"] == "Etc/UTC"
    assert 0 < spec["startingDeadlineSeconds"] < 60
    assert spec["successfulJobsHistoryLimit"] >= 1 and spec["failedJobsHistoryLimit"] >= 1
    assert spec["jobTemplate"]["spec"]["backoffLimit"] <= 2
    pod = pod_spec(cron)
    _assert_hardened(pod, f"{overlay}/scheduler-tick")
    assert pod["containers"][0]["args"] == ["tick"]
    assert pod["containers"][0]["image"] == pod_spec(r.get("Deployment", "scheduler"))["containers"][0]["image"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_config_maps_point_each_service_at_its_peers(overlay: str) -> None:
    config = rendered(overlay).config_map("contentpipe-config")
    for service, port in PORTS.items():
        assert config[f"CONTENTPIPE_{service.upper()}_ADDR"] == f"{service}:{port}"


def test_prod_scales_the_queue_workers_and_keeps_debug_off() -> None:
    r = rendered("prod")
    hpas = {h["spec"]["scaleTargetRef"]["name"]: h for h in r.of_kind("HorizontalPodAutoscaler")}
    assert set(hpas) == {"pipelines", "oauth"}
    assert all(h["spec"]["minReplicas"] >= 2 for h in hpas.values())
    config = r.config_map("contentpipe-config")
    assert config["CONTENTPIPE_GRPC_REFLECTION"] == "0"
    assert config["LOG_LEVEL"] == "INFO"
    assert config["OTEL_EXPORTER_OTLP_ENDPOINT"].startswith("http")
    assert all("registry.example.com/" in pod_spec(d)["containers"][0]["image"] for d in r.of_kind("Deployment"))


def test_dev_enables_reflection_for_grpcurl() -> None:
    config = rendered("dev").config_map("contentpipe-config")
    assert config["CONTENTPIPE_GRPC_REFLECTION"] == "1"


# --------------------------------------------------------------------------------------------- network policies


def _selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    return bool(selector.get("matchLabels", {}).items() <= labels.items())


def _workload_labels(overlay: str) -> dict[str, dict[str, str]]:
    r = rendered(overlay)
    out = {}
    for w in [*r.of_kind("Deployment"), *r.of_kind("CronJob")]:
        template = w["spec"]["jobTemplate"]["spec"]["template"] if w["kind"] == "CronJob" else w["spec"]["template"]
        labels = template["metadata"]["labels"]
        out[f"{labels['app.kubernetes.io/name']}/{labels['app.kubernetes.io/component']}"] = labels
    return out


def _rule_allows(rules: list[dict[str, Any]], port: int, peer_labels: dict[str, str], key: str) -> bool:
    """Whether one of `rules` lets a pod with `peer_labels` (same namespace) through on `port`."""
    for rule in rules:
        if port not in {p["port"] for p in rule.get("ports", [])}:
            continue
        for peer in rule.get(key, []):
            if "podSelector" in peer and "namespaceSelector" not in peer and _selects(peer["podSelector"], peer_labels):
                return True
    return False


def _allowed_calls(overlay: str) -> set[tuple[str, str]]:
    """(caller, callee) pairs among our workloads that both the caller's egress and the callee's ingress allow."""
    policies = rendered(overlay).of_kind("NetworkPolicy")
    workloads = _workload_labels(overlay)
    calls = set()
    for caller, caller_labels in workloads.items():
        for callee, callee_labels in workloads.items():
            if not callee.endswith("/server") or caller == callee:
                continue
            port = PORTS[callee.split("/")[0]]

            egress_ok = any(
                _selects(p["spec"]["podSelector"], caller_labels)
                and _rule_allows(p["spec"].get("egress", []), port, callee_labels, "to")
                for p in policies
            )
            ingress_ok = any(
                _selects(p["spec"]["podSelector"], callee_labels)
                and _rule_allows(p["spec"].get("ingress", []), port, caller_labels, "from")
                for p in policies
            )
            if egress_ok and ingress_ok:
                calls.add((caller, callee))
    return calls


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_network_policies_deny_by_default_and_allow_only_the_architecture(overlay: str) -> None:
    policies = {p["metadata"]["name"]: p for p in rendered(overlay).of_kind("NetworkPolicy")}
    deny = policies["default-deny-all"]["spec"]
    assert deny["podSelector"] == {} and set(deny["policyTypes"]) == {"Ingress", "Egress"}
    assert "ingress" not in deny and "egress" not in deny
    assert _allowed_calls(overlay) == {
        ("scheduler/server", "pipelines/server"),
        ("scheduler/tick", "pipelines/server"),
        ("pipelines/server", "generation/server"),
        ("pipelines/server", "oauth/server"),
        ("pipelines/server", "scheduler/server"),
    }
    # Egress outside the cluster: PostgreSQL everywhere; HTTPS only where an external API is called.
    https = {
        name
        for name, p in policies.items()
        if any(443 in {port["port"] for port in rule.get("ports", [])} for rule in p["spec"].get("egress", []))
    }
    assert https == {"generation", "oauth", "scheduler"}
    for rule_owner in ("generation", "oauth", "pipelines", "scheduler", "scheduler-tick", "migrate"):
        egress = policies[rule_owner]["spec"]["egress"]
        assert any({p["port"] for p in rule["ports"]} == {5432} for rule in egress), rule_owner
    assert "allow-otlp" in policies
