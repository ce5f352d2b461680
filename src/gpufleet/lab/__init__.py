"""The fleet lab: systemd Debian 12 hosts in nspawn containers plus a local EC2 API.

The lab stands in for EC2 on a single machine so roles, playbooks and the
inventory plugin can be proven end to end without AWS or a GPU.
"""


class LabError(Exception):
    """A lab operation could not be done; the message names the reason in one line."""
