"""The lab's front door secrets: made once, private, and a certificate the LB's clients trust."""

from __future__ import annotations

import ipaddress
import json
import ssl

import pytest
from cryptography import x509

from gpufleet.lab import front_door
from gpufleet.lab.topology import LabPaths, plan


@pytest.fixture
def made(tmp_path):
    paths = LabPaths(state=tmp_path / "state", cache=tmp_path / "cache")
    topology = plan(3, 2, "10.77.0.0/24", "us-east-1")
    return paths, topology, front_door.ensure(paths, topology)


def test_the_lb_group_gets_every_key_with_its_limits_and_the_files_are_root_only(made):
    paths, _topology, door = made
    lb_vars = json.loads(front_door.lb_vars_file(paths).read_text())
    keys = {entry["name"]: entry for entry in lb_vars["haproxy_api_keys"]}
    assert set(keys) == set(front_door.KEY_LIMITS) == set(door.keys)
    assert keys[front_door.TIGHT_KEY]["concurrent_requests"] == 3
    assert all(
        len(entry["key"]) >= 32 and entry["key"] == door.keys[n] for n, entry in keys.items()
    )
    for secret in (front_door.lb_vars_file(paths), front_door.front_door_file(paths)):
        assert secret.stat().st_mode & 0o777 == 0o600


def test_a_second_lab_up_keeps_the_keys(made):
    paths, topology, door = made
    assert front_door.ensure(paths, topology) == door


def test_the_certificate_names_every_lb_and_is_signed_by_the_lab_ca(made):
    paths, topology, door = made
    lb_vars = json.loads(front_door.lb_vars_file(paths).read_text())
    leaf, ca = x509.load_pem_x509_certificates(lb_vars["haproxy_tls_certificate"].encode())
    names = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    lbs = [h for h in topology.hosts if h.role == "lb"]
    assert set(names.get_values_for_type(x509.IPAddress)) == {
        ipaddress.ip_address(h.address) for h in lbs
    }
    assert set(names.get_values_for_type(x509.DNSName)) == {h.name for h in lbs}
    leaf.verify_directly_issued_by(ca)
    assert ca == x509.load_pem_x509_certificate(door.ca_file.read_bytes())
    assert "PRIVATE KEY" in lb_vars["haproxy_tls_private_key"]
    # A client of the lab trusts it through the CA file alone.
    ssl.create_default_context(cafile=str(door.ca_file))


def test_a_client_target_speaks_tls_to_the_lb_with_the_named_key(made):
    paths, topology, door = made
    lb = next(h for h in topology.hosts if h.role == "lb")
    target = front_door.lb_target(paths, lb.address)
    assert target.url == f"https://{lb.address}:11434"
    assert target.key == door.keys[front_door.LOAD_KEY]
    assert front_door.lb_target(paths, lb.address, None).key is None
