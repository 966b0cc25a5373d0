"""TLS and mutual TLS on a real service process, with a PKI made in the test; grpcurl with -cacert; reload."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
from contentpipe.api.scheduler.v1 import scheduler_service_pb2 as pb
from contentpipe.api.scheduler.v1 import scheduler_service_pb2_grpc as pb_grpc
from contentpipe.common.settings import ConfigError, TlsSettings, load_tls_settings
from cryptography import x509
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.cli.harness import run_cli
from tests.support import TEST_JWT_SECRET, ServiceProcess, bearer, mint_token
from tests.support.tls import credentials, issue, make_ca, server_env

pytestmark = pytest.mark.integration


def _list_jobs(channel: grpc.Channel) -> pb.ListJobsResponse:
    response: pb.ListJobsResponse = pb_grpc.SchedulerServiceStub(channel).ListJobs(
        pb.ListJobsRequest(), metadata=bearer("user-1"), timeout=10
    )
    return response


def _refused(channel: grpc.Channel) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as caught:
        _list_jobs(channel)
    return caught.value.code()


def _grpcurl(*args: str) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("grpcurl") or str(Path(sys.executable).parent / "grpcurl")
    return subprocess.run([binary, *args], capture_output=True, text=True, timeout=30, check=False)


def test_tls_serves_with_the_right_ca_and_refuses_a_wrong_ca_and_plaintext(
    tmp_path: Path, start_service: Callable[..., ServiceProcess]
) -> None:
    ca, stranger = make_ca(tmp_path / "ca"), make_ca(tmp_path / "other", "some other CA")
    pair = issue(ca, tmp_path / "certs", "scheduler")
    service = start_service("scheduler", env=server_env(pair, ca, mutual=False))
    assert '"tls": "tls"' in service.logs()

    with grpc.secure_channel(service.address, credentials(ca.cert)) as channel:
        assert list(_list_jobs(channel).jobs) == []
    with grpc.secure_channel(service.address, credentials(stranger.cert)) as channel:
        assert _refused(channel) == grpc.StatusCode.UNAVAILABLE  # the server's chain does not verify
    with grpc.insecure_channel(service.address) as channel:
        assert _refused(channel) == grpc.StatusCode.UNAVAILABLE

    # grpcurl trusts the CA bundle given with -cacert; without it the system roots refuse our CA.
    ok = _grpcurl("-cacert", str(ca.cert), service.address, "grpc.health.v1.Health/Check")
    assert ok.returncode == 0 and '"status": "SERVING"' in ok.stdout, ok.stderr
    untrusted = _grpcurl(service.address, "grpc.health.v1.Health/Check")
    assert untrusted.returncode != 0 and "certificate" in untrusted.stderr.lower()


def test_mutual_tls_refuses_a_client_without_a_certificate_or_with_a_foreign_one(
    tmp_path: Path, start_service: Callable[..., ServiceProcess]
) -> None:
    ca, stranger = make_ca(tmp_path / "ca"), make_ca(tmp_path / "other", "some other CA")
    pair = issue(ca, tmp_path / "certs", "scheduler")
    client = issue(ca, tmp_path / "certs", "pipelines", server=False)
    foreign = issue(stranger, tmp_path / "foreign", "intruder", server=False)
    service = start_service("scheduler", env=server_env(pair, ca, mutual=True))

    with grpc.secure_channel(service.address, credentials(ca.cert, client)) as channel:
        assert list(_list_jobs(channel).jobs) == []
    with grpc.secure_channel(service.address, credentials(ca.cert)) as channel:
        assert _refused(channel) == grpc.StatusCode.UNAVAILABLE
    with grpc.secure_channel(service.address, credentials(ca.cert, foreign)) as channel:
        assert _refused(channel) == grpc.StatusCode.UNAVAILABLE

    args = ("-cacert", str(ca.cert), service.address, "grpc.health.v1.Health/Check")
    assert _grpcurl(*args).returncode != 0
    with_cert = _grpcurl("-cert", str(client.cert), "-key", str(client.key), *args)
    assert with_cert.returncode == 0 and '"status": "SERVING"' in with_cert.stdout, with_cert.stderr


def test_a_renewed_certificate_is_served_to_new_connections_without_a_restart(
    tmp_path: Path, start_service: Callable[..., ServiceProcess]
) -> None:
    ca, renewed_ca = make_ca(tmp_path / "ca"), make_ca(tmp_path / "ca2", "renewed CA")
    pair = issue(ca, tmp_path / "certs", "scheduler")
    service = start_service("scheduler", env=server_env(pair, ca, mutual=False))
    with grpc.secure_channel(service.address, credentials(ca.cert)) as channel:
        assert list(_list_jobs(channel).jobs) == []

    # What the kubelet does when cert-manager renews the Secret: new files appear at the same paths.
    fresh = issue(renewed_ca, tmp_path / "fresh", "scheduler")
    for source, target in ((fresh.cert, pair.cert), (fresh.key, pair.key)):
        staged = target.with_suffix(".new")
        shutil.copyfile(source, staged)
        os.replace(staged, target)

    deadline = time.monotonic() + 20
    while True:  # each attempt is a new connection, i.e. a new handshake that asks for the current certificate
        with grpc.secure_channel(service.address, credentials(renewed_ca.cert)) as channel:
            try:
                health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
                break
            except grpc.RpcError:
                assert time.monotonic() < deadline, service.logs()
    assert health.status == health_pb2.HealthCheckResponse.SERVING
    assert "TLS certificate reloaded" in service.logs()
    served = x509.load_pem_x509_certificate(pair.cert.read_bytes())
    assert served.issuer == x509.load_pem_x509_certificate(renewed_ca.cert.read_bytes()).subject


def test_tls_settings_name_the_variable_that_is_missing_or_wrong(tmp_path: Path) -> None:
    ca = make_ca(tmp_path / "ca")
    pair = issue(ca, tmp_path / "certs", "svc")
    assert load_tls_settings({}) == TlsSettings()
    with pytest.raises(ConfigError, match="CONTENTPIPE_TLS_KEY_FILE: required when CONTENTPIPE_TLS_CERT_FILE"):
        load_tls_settings({"CONTENTPIPE_TLS_CERT_FILE": str(pair.cert)})
    with pytest.raises(ConfigError, match=r"CONTENTPIPE_TLS_CA_FILE: .*missing.pem is not a readable file"):
        load_tls_settings({"CONTENTPIPE_TLS_CA_FILE": str(tmp_path / "missing.pem")})
    with pytest.raises(ConfigError, match="CONTENTPIPE_TLS_CLIENT_CA_FILE: requiring client certificates"):
        load_tls_settings({"CONTENTPIPE_TLS_CLIENT_CA_FILE": str(ca.cert)})
    settings = load_tls_settings({**server_env(pair, ca), "CONTENTPIPE_TLS_SERVER_NAME": "scheduler"})
    assert settings.serves_tls and settings.requires_client_cert and settings.peers_use_tls
    assert settings.client_identity == (pair.cert, pair.key)


def test_the_cli_speaks_mutual_tls_with_a_ca_bundle_and_a_client_certificate(
    tmp_path: Path, start_service: Callable[..., ServiceProcess]
) -> None:
    ca = make_ca(tmp_path / "ca")
    service = start_service("scheduler", env=server_env(issue(ca, tmp_path / "certs", "scheduler"), ca))
    client = issue(ca, tmp_path / "certs", "operator", server=False)
    base = {"CONTENTPIPE_SCHEDULER_ADDR": service.address, "CONTENTPIPE_TOKEN": mint_token(TEST_JWT_SECRET, "user-1")}

    plain = run_cli("jobs", "list", env=base)
    assert plain.returncode != 0
    tls = {**base, "CONTENTPIPE_TLS_CA_FILE": str(ca.cert)}
    assert run_cli("jobs", "list", env=tls).returncode != 0  # the server wants a client certificate
    config = tmp_path / "contentpipe.toml"
    config.write_text(f'[tls]\ncert_file = "{client.cert}"\nkey_file = "{client.key}"\n')
    listed = run_cli("--config", str(config), "jobs", "list", env=tls)
    assert listed.returncode == 0, listed.stderr
    broken = run_cli("jobs", "list", env={**tls, "CONTENTPIPE_TLS_CLIENT_CERT_FILE": str(client.cert)})
    assert broken.returncode == 2 and "CONTENTPIPE_TLS_CLIENT_KEY_FILE: required" in broken.stderr


def test_the_probe_command_checks_health_over_mutual_tls(
    tmp_path: Path, start_service: Callable[..., ServiceProcess]
) -> None:
    ca = make_ca(tmp_path / "ca")
    service = start_service("scheduler", env=server_env(issue(ca, tmp_path / "certs", "scheduler"), ca))
    probe = [sys.executable, "-m", "contentpipe.common.probe", "scheduler"]
    ok = subprocess.run(probe, env=service.env, capture_output=True, text=True, timeout=30, check=False)
    assert ok.returncode == 0, ok.stderr
    service.terminate()
    down = subprocess.run(probe, env=service.env, capture_output=True, text=True, timeout=30, check=False)
    assert down.returncode == 1 and "UNAVAILABLE" in down.stderr
