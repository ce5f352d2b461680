"""The image audit on a file tree laid out like an image: clean passes, and each thing
sysprep must remove, or that must be nowhere on an image, fails the audit by name."""

import pytest
import repo_scripts

audit = repo_scripts.load("packer/image_audit.py")

# Put together here, so that no scan of the repository takes the test for a leaked key.
ARMOR = "-" * 5
PRIVATE_KEY = "\n".join(
    [
        f"{ARMOR}BEGIN OPENSSH PRIVATE KEY{ARMOR}",
        "b3BlbnNzaC1rZXk=",
        f"{ARMOR}END OPENSSH PRIVATE KEY{ARMOR}",
    ]
)


@pytest.fixture
def image(tmp_path):
    """A root that sysprep has just cleaned: empty machine id, empty logs directories,
    a model store, a home without keys."""
    root = tmp_path / "image"
    for directory in (
        "etc/ssh",
        "home/admin/.ssh",
        "root",
        "tmp",
        "var/tmp",
        "var/log/apt",
        "var/lib/apt/lists/partial",
        "var/cache/apt/archives/partial",
        "opt/gpufleet/models-seed/blobs",
        "usr/share/doc/openssh-client",
        "usr/bin",
        "proc/1",
    ):
        (root / directory).mkdir(parents=True)
    (root / "etc/machine-id").write_text("")
    (root / "etc/passwd").write_text(
        "root:x:0:0::/root:/bin/bash\nadmin:x:1000:1000::/home/admin:/bin/bash\n"
    )
    (root / "etc/ssh/sshd_config").write_text("PasswordAuthentication no\n")
    (root / "var/log/apt/history.log").write_text("")
    (root / "var/lib/apt/lists/lock").write_text("")
    (root / "opt/gpufleet/models-seed/blobs/sha256-00").write_bytes(b"GGUF" * 300_000)
    (root / "usr/share/doc/openssh-client/README").write_text("ssh-keygen writes private keys\n")
    # ssh-keygen and libssh2 carry the armour lines as C strings: a program, not a key.
    armour_strings = PRIVATE_KEY.splitlines()[0::2]
    (root / "usr/bin/ssh-keygen").write_bytes(
        b"\x7fELF\0" + b"\n\0".join(line.encode() for line in armour_strings) + b"\n\0"
    )
    # The running instance's own: never part of the image, never read.
    (root / "proc/1/environ").write_text("AWS_SECRET_ACCESS_KEY=abc\n")
    return root


def run(root, *args):
    findings, used = audit.audit(audit.Image(root), list(args))
    return [str(f) for f in findings], used


def test_a_cleaned_image_passes_and_its_size_is_counted(image, capsys):
    findings, used = run(image)
    assert findings == []
    assert used >= 1_200_000
    assert audit.main(["--root", str(image)]) == 0
    assert capsys.readouterr().out.startswith("image audit: clean; the image's files take ")


@pytest.mark.parametrize(
    ("path", "content", "finding"),
    [
        ("home/admin/.ssh/authorized_keys", "ssh-ed25519 AAAA builder", "an authorized key"),
        ("root/.ssh/authorized_keys2", "ssh-rsa AAAA", "an authorized key"),
        ("etc/ssh/ssh_host_ed25519_key.pub", "ssh-ed25519 AAAA", "an SSH host key"),
        ("etc/machine-id", "0123456789abcdef0123456789abcdef\n", "not empty"),
        ("var/lib/cloud/instances/i-0abc/boot-finished", "done", "cloud-init state"),
        ("var/log/syslog", "Nov 22 build started\n", "a log"),
        ("var/log/journal/0123/system.journal", "LPKSHHRH", "a log"),
        ("root/.bash_history", "aws configure\n", "a shell history"),
        ("home/admin/.python_history", "import boto3\n", "a shell history"),
        ("var/lib/apt/lists/deb.debian.org_debian_dists_bookworm_InRelease", "x", "apt's lists"),
        ("var/cache/apt/archives/zstd_1.5.4_amd64.deb", "x", "a downloaded package"),
        ("var/cache/apt/pkgcache.bin", "x", "apt's cache"),
        ("tmp/packer-shell123", "echo", "a temporary file"),
        ("var/tmp/build.log", "", "a temporary file"),
        ("home/admin/.aws/credentials", "[default]\n", "AWS credentials"),
        ("opt/app/.netrc", "machine example login a password b\n", "a .netrc"),
        ("srv/deploy/id_ed25519", PRIVATE_KEY, "a private key"),
        (
            "etc/ssl/private/legacy.key",
            PRIVATE_KEY.replace("OPENSSH", "RSA").replace(
                "\n", "\nProc-Type: 4,ENCRYPTED\nDEK-Info: AES-128-CBC,0A1B\n\n", 1
            ),
            "a private key",
        ),
        (
            "etc/ssl/private/ssl-cert-snakeoil.key",
            PRIVATE_KEY.replace("OPENSSH ", ""),
            "a private key",
        ),
        (
            "etc/profile.d/secrets.sh",
            "export AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI\n",
            "an AWS secret",
        ),
        (
            "root/.ansible/tmp/ansible-tmp-1700000000.1-42/AnsiballZ_apt.py",
            "#!",
            "Ansible's temporary files",
        ),
        ("var/tmp/AnsiballZ_setup.py", "#!", "a temporary file"),
        (
            "var/lib/gpufleet-fleet-agent/maintenance",
            "drained by the bake\n",
            "the fleet agent's drain",
        ),
    ],
)
def test_what_a_bake_must_not_leave_is_named(image, capsys, path, content, finding):
    target = image / path
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(content)
    findings, _used = run(image)
    # Named at the path, or at a directory above it that holds it.
    assert any(f"/{path}".startswith(f.split(": ")[0]) and finding in f for f in findings), findings
    assert audit.main(["--root", str(image)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[-1].startswith(f"image audit: {len(findings)} findings")


def test_the_builds_users_must_be_gone(image):
    assert run(image, "packer")[0] == []
    findings, _used = run(image, "admin")
    assert findings == ["/etc/passwd: the build's user admin is still there"]


def test_an_unreadable_root_is_exit_status_2(tmp_path, capsys):
    assert audit.main(["--root", str(tmp_path / "nowhere")]) == 2
    assert "image audit: cannot read" in capsys.readouterr().err
