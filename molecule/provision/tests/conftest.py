"""Shared helpers of the provision scenario's testinfra checks."""

import pytest

from opspack import lab


def lab_port(host, kind: str) -> int:
    """The 127.0.0.1 port publishing the host's HTTP or HTTPS port.

    The lab inventory names it (opspack_lab_<kind>_port); Molecule's inventory gives only the
    SSH port, from which the lab's fixed port layout gives the others. A host that is not a lab
    host (no 127.0.0.1 address) has nothing published to test from here."""
    variables = host.ansible.get_variables()
    named = variables.get(f"opspack_lab_{kind}_port")
    if named:
        return int(named)
    if variables.get("ansible_host") != "127.0.0.1":
        pytest.skip(f"not a lab host: no published {kind} port on 127.0.0.1")
    ports = lab.host_ports(int(variables["ansible_port"]), 1)
    return getattr(ports, kind)
