"""Shared helpers of the provision scenario's testinfra checks."""

import pytest

from opspack.testing import client


def lab_port(host, kind: str) -> int:
    """The 127.0.0.1 port publishing the host's HTTP or HTTPS port.

    The lab inventory names it (opspack_lab_<kind>_port); Molecule's inventory gives only the
    SSH port, from which the lab's fixed port layout gives the others. A host that is not a lab
    host (no 127.0.0.1 address) has nothing published to test from here."""
    if host.ansible.get_variables().get("ansible_host") != "127.0.0.1":
        pytest.skip(f"not a lab host: no published {kind} port on 127.0.0.1")
    return client.lab_port(host, kind)
