"""Offline checks of the cert-manager objects (cert-manager.io/v1), whose schemas kubernetes-validate lacks.

Strict like the core schemas: only the fields of the cert-manager v1 API that deploy/k8s uses are accepted, with
their documented values, so a typo (`dnsName`, `usage: server`) fails here instead of in the cluster.
"""

from __future__ import annotations

from typing import Any

USAGES = {
    "signing", "digital signature", "content commitment", "key encipherment", "key agreement", "data encipherment",
    "cert sign", "crl sign", "encipher only", "decipher only", "any", "server auth", "client auth", "code signing",
    "email protection", "s/mime", "ipsec end system", "ipsec tunnel", "ipsec user", "timestamping", "ocsp signing",
    "microsoft sgc", "netscape sgc",
}  # fmt: skip
CERTIFICATE_FIELDS = {
    "secretName", "issuerRef", "commonName", "dnsNames", "ipAddresses", "uris", "emailAddresses", "usages",
    "duration", "renewBefore", "privateKey", "isCA", "subject", "secretTemplate",
}  # fmt: skip
PRIVATE_KEY_FIELDS = {"algorithm", "size", "rotationPolicy", "encoding"}
METADATA_FIELDS = {"name", "namespace", "labels", "annotations"}


def _duration(value: Any) -> bool:
    return isinstance(value, str) and value[:-1].isdigit() and value[-1] in "hms"


def check_cert_manager(obj: dict[str, Any]) -> list[str]:
    """Problems with one cert-manager object (empty when it is well-formed)."""
    where = f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"
    problems: list[str] = []
    if obj.get("apiVersion") != "cert-manager.io/v1":
        problems.append(f"{where}: apiVersion must be cert-manager.io/v1")
    if set(obj) - {"apiVersion", "kind", "metadata", "spec"} or set(obj.get("metadata", {})) - METADATA_FIELDS:
        problems.append(f"{where}: unknown top-level or metadata field")
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        return [*problems, f"{where}: spec is required"]
    if obj["kind"] in ("Issuer", "ClusterIssuer"):
        kinds = set(spec) & {"selfSigned", "ca", "acme", "vault", "venafi"}
        if len(kinds) != 1 or set(spec) - kinds:
            problems.append(f"{where}: exactly one issuer type is required, got {sorted(spec)}")
        if "ca" in spec and not spec["ca"].get("secretName"):
            problems.append(f"{where}: ca.secretName is required")
        return problems
    if obj["kind"] != "Certificate":
        return [*problems, f"{where}: unexpected cert-manager kind"]
    if unknown := set(spec) - CERTIFICATE_FIELDS:
        problems.append(f"{where}: unknown fields {sorted(unknown)}")
    if not spec.get("secretName"):
        problems.append(f"{where}: secretName is required")
    issuer = spec.get("issuerRef", {})
    if not issuer.get("name") or issuer.get("kind") not in ("Issuer", "ClusterIssuer") or set(issuer) - {
        "name", "kind", "group"
    }:  # fmt: skip
        problems.append(f"{where}: issuerRef needs name and kind Issuer|ClusterIssuer")
    if bad := [u for u in spec.get("usages", []) if u not in USAGES]:
        problems.append(f"{where}: unknown usages {bad}")
    for field in ("duration", "renewBefore"):
        if field in spec and not _duration(spec[field]):
            problems.append(f"{where}: {field} must be a Go duration like 2160h")
    key = spec.get("privateKey", {})
    if set(key) - PRIVATE_KEY_FIELDS or key.get("algorithm", "RSA") not in ("RSA", "ECDSA", "Ed25519"):
        problems.append(f"{where}: bad privateKey {key}")
    if key.get("rotationPolicy", "Never") not in ("Never", "Always"):
        problems.append(f"{where}: privateKey.rotationPolicy must be Never or Always")
    if not (spec.get("commonName") or spec.get("dnsNames") or spec.get("ipAddresses") or spec.get("uris")):
        problems.append(f"{where}: a certificate needs a name")
    return problems
