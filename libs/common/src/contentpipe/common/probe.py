"""`python -m contentpipe.common.probe SERVICE`: this pod's gRPC health, over TLS when the service serves TLS.

The kubelet's native gRPC probes speak plaintext only, so a TLS deployment (deploy/k8s/components/tls) probes with
this command instead: it dials 127.0.0.1 on the service's port with the pod's own CA bundle and certificate (the
certificate names 127.0.0.1) and exits 0 when the server answers SERVING, 1 otherwise.
"""

from __future__ import annotations

import os
import sys

import grpc
from contentpipe.common.settings import ConfigError, load_common_settings
from grpc_health.v1 import health_pb2, health_pb2_grpc

TIMEOUT_SECONDS = 3.0


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m contentpipe.common.probe SERVICE", file=sys.stderr)
        return 2
    try:
        settings = load_common_settings(args[0], os.environ)
    except (ConfigError, ValueError) as exc:
        print(f"probe: {exc}", file=sys.stderr)
        return 2
    target = f"127.0.0.1:{settings.grpc_port}"
    tls = settings.tls
    if tls.serves_tls:
        identity = tls.client_identity
        credentials = grpc.ssl_channel_credentials(
            root_certificates=(tls.ca_file or tls.client_ca_file or tls.cert_file).read_bytes(),  # type: ignore[union-attr]
            private_key=identity[1].read_bytes() if identity else None,
            certificate_chain=identity[0].read_bytes() if identity else None,
        )
        channel = grpc.secure_channel(target, credentials)
    else:
        channel = grpc.insecure_channel(target)
    with channel:
        try:
            response = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=TIMEOUT_SECONDS
            )
        except grpc.RpcError as exc:
            print(f"probe: {target}: {exc.code().name}", file=sys.stderr)
            return 1
    serving = response.status == health_pb2.HealthCheckResponse.SERVING
    if not serving:
        print(f"probe: {target}: {health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)}", file=sys.stderr)
    return 0 if serving else 1


if __name__ == "__main__":
    sys.exit(main())
