"""The lab's front door: its API keys and a TLS certificate for its LB hosts, signed by a lab CA.

`gpufleet lab up` writes them once per lab, where ops keep theirs: the LB group's variables
(`group_vars/role_lb/front_door.yml`, mode 0600; in production an Ansible Vault file) for the
playbooks, and `front_door.json` with the CA for the lab's clients. They are the lab's own
throwaway secrets, made on this machine and removed with the lab; never in the repository.

    lab-load     the lab's load and demo: limits high enough for 24 streams at once
    lab-client   a tenant with the role's default limits
    lab-tight    a tenant with a small quota (3 at once, 20 a minute), to meet the limits
"""

from __future__ import annotations

import datetime
import http.client
import ipaddress
import json
import secrets
import ssl
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from gpufleet.lab.system import write_whole
from gpufleet.lab.topology import LabPaths, LabTopology

LOAD_KEY, CLIENT_KEY, TIGHT_KEY = "lab-load", "lab-client", "lab-tight"
# Per-key limits in place of the role's defaults; lab-client has none of its own.
KEY_LIMITS: dict[str, dict[str, int]] = {
    LOAD_KEY: {"requests_per_minute": 100_000, "concurrent_requests": 64},
    CLIENT_KEY: {},
    TIGHT_KEY: {"requests_per_minute": 20, "concurrent_requests": 3},
}
VALID_DAYS = 30
# Where clients reach an LB, as they would reach Ollama.
LB_PORT = 11434


@dataclass(frozen=True)
class Target:
    """An LB as clients call it: its base URL, the CA that signed its certificate (None for
    plain HTTP) and the API key sent as `Authorization: Bearer` (None for none)."""

    url: str
    ca_file: Path | None = None
    key: str | None = None

    @property
    def address(self) -> str:
        return urlsplit(self.url).hostname or ""

    def ssl_context(self) -> ssl.SSLContext | bool:
        return ssl.create_default_context(cafile=str(self.ca_file)) if self.ca_file else True

    def with_key(self, key: str | None) -> Target:
        return Target(self.url, self.ca_file, key)


@dataclass(frozen=True)
class FrontDoor:
    """What a lab client needs to call an LB as users do: the CA to trust and a key."""

    ca_file: Path
    keys: dict[str, str]

    @classmethod
    def read(cls, paths: LabPaths) -> FrontDoor:
        saved = json.loads(front_door_file(paths).read_text())
        return cls(Path(saved["ca_file"]), saved["keys"])


def lb_target(paths: LabPaths, address: str, key_name: str | None = LOAD_KEY) -> Target:
    """A lab LB as clients call it: TLS with the lab's CA, and the named key (None: no key)."""
    door = FrontDoor.read(paths)
    key = door.keys[key_name] if key_name else None
    return Target(f"https://{address}:{LB_PORT}", door.ca_file, key)


def front_door_file(paths: LabPaths) -> Path:
    return paths.state / "front_door" / "front_door.json"


def lb_vars_file(paths: LabPaths) -> Path:
    return paths.inventory_dir / "group_vars" / "role_lb" / "front_door.yml"


def ensure(paths: LabPaths, topology: LabTopology) -> FrontDoor:
    """The lab's keys and certificates, made on first `lab up` and kept while the lab is."""
    if front_door_file(paths).exists() and lb_vars_file(paths).exists():
        return FrontDoor.read(paths)
    directory = front_door_file(paths).parent
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    ca_key, ca_cert = _certificate_authority()
    lbs = [h for h in topology.hosts if h.role == "lb"]
    lb_key, lb_cert = _server_certificate(
        ca_key, ca_cert, [h.name for h in lbs], [h.address for h in lbs]
    )
    ca_file = directory / "ca.pem"
    ca_file.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    keys = {name: secrets.token_urlsafe(32) for name in KEY_LIMITS}
    lb_vars = {
        "haproxy_api_keys": [
            {"name": name, "key": key, **KEY_LIMITS[name]} for name, key in keys.items()
        ],
        "haproxy_tls_certificate": (
            lb_cert.public_bytes(serialization.Encoding.PEM)
            + ca_cert.public_bytes(serialization.Encoding.PEM)
        ).decode(),
        "haproxy_tls_private_key": lb_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode(),
    }
    _write_private(lb_vars_file(paths), json.dumps(lb_vars, indent=2) + "\n")
    _write_private(
        front_door_file(paths), json.dumps({"ca_file": str(ca_file), "keys": keys}, indent=2)
    )
    return FrontDoor(ca_file, keys)


def _write_private(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_whole(path, text, mode=0o600)


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _validity(builder: x509.CertificateBuilder) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    return builder.not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(
        now + datetime.timedelta(days=VALID_DAYS)
    )


def _certificate_authority() -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name("gpufleet lab CA"))
        .issuer_name(_name("gpufleet lab CA"))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    return key, _validity(builder).sign(key, hashes.SHA256())


def _server_certificate(
    ca_key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    names: list[str],
    addresses: list[str],
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    alternatives: list[x509.GeneralName] = [x509.DNSName(n) for n in names]
    alternatives += [x509.IPAddress(ipaddress.ip_address(a)) for a in addresses]
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(names[0] if names else "gpufleet lab LB"))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .add_extension(x509.SubjectAlternativeName(alternatives), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
    )
    return key, _validity(builder).sign(ca_key, hashes.SHA256())


@dataclass(frozen=True)
class Probe:
    """One call a careless or hostile client might make, and what the LB must answer."""

    what: str
    key_name: str | None
    method: str
    path: str
    expected: int
    model: str = "llama3.1:8b"


# A key name no key has: the probe sends a made-up key.
WRONG_KEY = "(wrong)"
PROBES = (
    Probe("no API key", None, "POST", "/api/chat", 401),
    Probe("a wrong API key", WRONG_KEY, "GET", "/api/tags", 401),
    Probe("deleting a model, with a valid key", LOAD_KEY, "DELETE", "/api/delete", 403),
    Probe("pulling a model, with a valid key", LOAD_KEY, "POST", "/api/pull", 403),
    Probe("listing models, with a valid key", LOAD_KEY, "GET", "/api/tags", 200),
    Probe(
        "a model no host serves, with a valid key", LOAD_KEY, "POST", "/api/chat", 404, "nosuch:1b"
    ),
)


def probe(paths: LabPaths, address: str, check: Probe) -> tuple[int, str]:
    """The LB's status and error message for the probe (the body says which model or path)."""
    keys = FrontDoor.read(paths).keys
    key = (
        secrets.token_urlsafe(32) if check.key_name == WRONG_KEY else keys.get(check.key_name or "")
    )
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    context = lb_target(paths, address, None).ssl_context()
    connection = http.client.HTTPSConnection(address, LB_PORT, timeout=30, context=context)
    try:
        connection.request(check.method, check.path, json.dumps({"model": check.model}), headers)
        response = connection.getresponse()
        body = response.read()
    finally:
        connection.close()
    try:
        message = str(json.loads(body).get("error", ""))
    except (ValueError, AttributeError):
        message = ""
    return response.status, message
