"""The repository's secret scan: what it finds in a repository with planted secrets (made
at run time, so none is committed), what it leaves alone, and that this repository is clean."""

from __future__ import annotations

import secrets
import string
import subprocess
from pathlib import Path

import pytest

from gpufleet import secret_scan

REPO = Path(__file__).resolve().parents[2]


def git_repository(tmp_path: Path, files: dict[str, str]) -> Path:
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    for name, text in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    subprocess.run(["git", "-C", str(tmp_path), "add", "."], check=True)
    return tmp_path


def private_key(tmp_path: Path) -> str:
    key = tmp_path / "generated_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    text = key.read_text()
    key.unlink()
    key.with_suffix(".pub").unlink()
    return text


def test_planted_secrets_are_found_by_file_line_and_kind(tmp_path):
    key_id = "AKIA" + "".join(secrets.choice(string.ascii_uppercase) for _char in range(16))
    secret = "".join(secrets.choice(string.ascii_letters + "/+") for _char in range(40))
    files = {
        "keys/deploy": "# deploy key\n" + private_key(tmp_path),
        "inventory/aws.ini": f"[default]\naws_access_key_id = {key_id}\n"
        f"aws_secret_access_key = {secret}\n",
        "group_vars/all/vault.yml": "haproxy_stats_password: hunter2\n",
        "playbooks/vars.yml": "---\nhaproxy_stats_password: 'correct horse'\n",
    }
    found = [str(f) for f in secret_scan.scan(git_repository(tmp_path, files))]
    assert found == [
        "group_vars/all/vault.yml:1: a vault file that is not encrypted (ansible-vault encrypt it)",
        "group_vars/all/vault.yml:1: haproxy_stats_password has a literal value (use Vault)",
        "inventory/aws.ini:2: an AWS access key id",
        "inventory/aws.ini:3: an AWS secret access key",
        "keys/deploy:2: a private key",
        "playbooks/vars.yml:2: haproxy_stats_password has a literal value (use Vault)",
    ]
    assert secret not in "\n".join(found)


def test_references_placeholders_and_encrypted_files_are_left_alone(tmp_path):
    files = {
        "group_vars/all/vault.yml": "$ANSIBLE_VAULT;1.1;AES256\n6162630a\n",
        "group_vars/all/lb.yml": (
            'haproxy_stats_password: "{{ vault_haproxy_stats_password }}"\n'
            'haproxy_tls_private_key: ""\n'
            "model_swap_aws_secret_key: >-\n  {{ lookup('env', 'AWS_SECRET_ACCESS_KEY') }}\n"
        ),
        "roles/lb/meta/argument_specs.yml": (
            "options:\n  haproxy_tls_private_key: &haproxy_tls_private_key\n    type: str\n"
            "validate:\n  haproxy_tls_private_key: *haproxy_tls_private_key\n"
        ),
        "docs/aws.md": "Credentials look like AKIAIOSFODNN7EXAMPLE.\n",
        "src/audit.py": 'ARMOUR = "-----BEGIN OPENSSH PRIVATE KEY-----"\n',
    }
    assert secret_scan.scan(git_repository(tmp_path, files)) == []


def test_the_scan_exits_1_on_a_finding_and_2_without_a_repository(tmp_path, capsys):
    repository = git_repository(tmp_path / "repo", {"vault.yml": "token: abc\n"})
    assert secret_scan.main([str(repository)]) == 1
    assert "vault.yml:1: token has a literal value (use Vault)" in capsys.readouterr().out
    assert secret_scan.main([str(tmp_path / "missing")]) == 2


@pytest.mark.parametrize("repository", [REPO])
def test_this_repository_has_no_secrets(repository):
    findings = secret_scan.scan(repository)
    assert findings == [], "\n".join(map(str, findings))
