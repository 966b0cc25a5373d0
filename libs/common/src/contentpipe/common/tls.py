"""TLS for the gRPC servers and the peer channels: settings, server credentials (reloaded on change), channel ones.

Plaintext stays the default (local development). A service serves TLS when `CONTENTPIPE_TLS_CERT_FILE` and
`CONTENTPIPE_TLS_KEY_FILE` are set, and requires client certificates signed by `CONTENTPIPE_TLS_CLIENT_CA_FILE`
when that is set (mutual TLS). Its channels to peers speak TLS when `CONTENTPIPE_TLS_CA_FILE` is set: the peers'
certificates must chain to it, and the service presents `CONTENTPIPE_TLS_CLIENT_CERT_FILE`/`_KEY_FILE` (default:
its own serving certificate, which then needs the `client auth` extended key usage too).

The server re-reads its certificate, key and client CA when their modification times change (cert-manager renews
the Secret, the kubelet updates the mounted files): new connections get the new certificate without a restart.
Channel credentials are read once at start-up; a renewed client certificate is picked up by the next rollout.
"""

from __future__ import annotations

import logging
import threading

import grpc
from contentpipe.common.settings import TlsSettings

_log = logging.getLogger(__name__)


class _ServerCertificates:
    """Feeds gRPC's dynamic server credentials: a new configuration whenever a file's mtime or size changes."""

    def __init__(self, settings: TlsSettings) -> None:
        assert settings.cert_file is not None and settings.key_file is not None
        self._files = [settings.cert_file, settings.key_file]
        self._client_ca = settings.client_ca_file
        if self._client_ca is not None:
            self._files.append(self._client_ca)
        self._lock = threading.Lock()
        self._stamp = self._current_stamp()

    def _current_stamp(self) -> tuple[tuple[int, int], ...]:
        stats = [path.stat() for path in self._files]
        return tuple((s.st_mtime_ns, s.st_size) for s in stats)

    def configuration(self) -> grpc.ServerCertificateConfiguration:
        cert, key = (path.read_bytes() for path in self._files[:2])
        client_ca = self._client_ca.read_bytes() if self._client_ca is not None else None
        return grpc.ssl_server_certificate_configuration([(key, cert)], root_certificates=client_ca)

    def fetch(self) -> grpc.ServerCertificateConfiguration | None:
        """Called by gRPC before handshakes: None keeps the current certificate."""
        try:
            with self._lock:
                stamp = self._current_stamp()
                if stamp == self._stamp:
                    return None
                configuration = self.configuration()
                self._stamp = stamp
        except OSError:
            _log.warning("TLS files changed but cannot be read yet; keeping the current certificate")
            return None
        _log.info("TLS certificate reloaded", extra={"cert_file": str(self._files[0])})
        return configuration


def server_credentials(settings: TlsSettings) -> grpc.ServerCredentials:
    """Credentials for `server.add_secure_port`; client certificates required when a client CA is set."""
    certificates = _ServerCertificates(settings)
    return grpc.dynamic_ssl_server_credentials(
        certificates.configuration(),
        certificates.fetch,  # type: ignore[arg-type]  # grpc-stubs miss that None means "unchanged"
        require_client_authentication=settings.requires_client_cert,
    )


def channel_credentials(settings: TlsSettings) -> grpc.ChannelCredentials:
    """Credentials for a peer channel: trust `ca_file`, present the client identity when there is one."""
    assert settings.ca_file is not None
    identity = settings.client_identity
    return grpc.ssl_channel_credentials(
        root_certificates=settings.ca_file.read_bytes(),
        private_key=identity[1].read_bytes() if identity else None,
        certificate_chain=identity[0].read_bytes() if identity else None,
    )


def channel_options(settings: TlsSettings) -> list[tuple[str, str]]:
    """`grpc.ssl_target_name_override` when the certificate names a host other than the dialled address."""
    return [("grpc.ssl_target_name_override", settings.server_name)] if settings.server_name else []
