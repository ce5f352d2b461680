"""Stands in for pip's get-pip.py, which ansible-test downloads from a host this project's
machines cannot reach: pip from the standard library's ensurepip, then the pip asked for
from the package index, with pip's own settings (certificates, index)."""

import ensurepip
import os
import subprocess
import sys

ensurepip.bootstrap(upgrade=True)
# ensurepip points PIP_CONFIG_FILE at /dev/null for itself; the install below needs pip's
# configuration back.
os.environ.pop("PIP_CONFIG_FILE", None)
wanted = [arg for arg in sys.argv[1:] if arg not in ("--no-setuptools", "--no-wheel")]
subprocess.check_call([sys.executable, "-m", "pip", "install", *wanted])
