"""Control-node tooling for the opspack.platform Ansible collection."""

__version__ = "0.1.0"
