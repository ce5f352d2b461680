"""Fail on secrets committed to the repository: private keys, AWS keys, vault files left
unencrypted, and literal values of gpufleet's secret variables.

Reads the files git tracks (and those added but not yet committed); one line per finding
names the file, the line and what it is, never the secret itself.

    python -m gpufleet.secret_scan [REPOSITORY]

Exit status 1 when anything was found, 2 when the repository cannot be read.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

# A whole PEM block: tools that print the armour lines alone (ssh-keygen, the image audit's
# own patterns) are not keys.
PRIVATE_KEY = re.compile(
    r"-----BEGIN ([A-Z0-9 ]*)PRIVATE KEY-----\r?\n"
    r"(?:[A-Za-z0-9+/=:,. -]*\r?\n)+"
    r"-----END \1PRIVATE KEY-----"
)
# AWS access key ids; AWS's documentation examples end in EXAMPLE.
AWS_ACCESS_KEY_ID = re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b")
AWS_SECRET_KEY = re.compile(
    r"(?i)aws_?secret_?(?:access_)?key\W{0,4}[=:]\s*[\"']?[A-Za-z0-9/+]{40}(?![A-Za-z0-9/+])"
)
# gpufleet's secret variables given a literal value: they come from Vault or a lookup.
SECRET_VARIABLE = re.compile(
    r"^\s*(?P<name>\w*(?:password|private_key|secret_key|token))\s*:\s*"
    r"(?P<value>[\"']?[^\s\"'{|>!#][^#]*)$"
)
# A YAML anchor with the mapping below it, or an alias of one: a reference, not a value.
YAML_REFERENCE = re.compile(r"[&*][\w.-]+")
VAULT_HEADER = "$ANSIBLE_VAULT;"
VAULT_FILE = re.compile(r"(?:^|/)(?:vault[^/]*\.ya?ml|vault/[^/]+)$")
MAX_BYTES = 1024 * 1024


@dataclass(frozen=True)
class Finding:
    path: str
    line: int
    what: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.what}"


def tracked_files(repository: Path) -> list[str]:
    listing = subprocess.run(
        ["git", "-C", str(repository), "ls-files", "-z", "--cached"],
        capture_output=True,
        text=True,
        check=True,
    )
    return sorted(name for name in listing.stdout.split("\0") if name)


def line_of(text: str, offset: int) -> int:
    return text.count("\n", 0, offset) + 1


def scan_text(path: str, text: str) -> Iterator[Finding]:
    if VAULT_FILE.search(path) and not text.startswith(VAULT_HEADER):
        yield Finding(path, 1, "a vault file that is not encrypted (ansible-vault encrypt it)")
    for match in PRIVATE_KEY.finditer(text):
        yield Finding(path, line_of(text, match.start()), "a private key")
    for match in AWS_ACCESS_KEY_ID.finditer(text):
        if not match.group().endswith("EXAMPLE"):
            yield Finding(path, line_of(text, match.start()), "an AWS access key id")
    for match in AWS_SECRET_KEY.finditer(text):
        yield Finding(path, line_of(text, match.start()), "an AWS secret access key")
    if path.endswith((".yml", ".yaml")) and not text.startswith(VAULT_HEADER):
        for number, line in enumerate(text.splitlines(), start=1):
            match = SECRET_VARIABLE.match(line)
            value = match["value"].strip() if match else ""
            if match and value not in {'""', "''"} and not YAML_REFERENCE.fullmatch(value):
                yield Finding(path, number, f"{match['name']} has a literal value (use Vault)")


def scan(repository: Path) -> list[Finding]:
    findings = []
    for name in tracked_files(repository):
        path = repository / name
        if not path.is_file() or path.is_symlink() or path.stat().st_size > MAX_BYTES:
            continue
        text = path.read_bytes().decode("utf-8", errors="replace")
        findings.extend(scan_text(name, text))
    return findings


def main(argv: list[str] | None = None) -> int:
    arguments = sys.argv[1:] if argv is None else argv
    repository = Path(arguments[0] if arguments else ".")
    try:
        findings = scan(repository)
    except (OSError, subprocess.CalledProcessError) as error:
        print(f"secret scan: cannot read the repository {repository}: {error}", file=sys.stderr)
        return 2
    for finding in findings:
        print(finding)
    print(f"secret scan: {len(findings)} findings in {repository.resolve().name}")
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main())
