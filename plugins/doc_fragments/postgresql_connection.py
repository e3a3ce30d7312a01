# Copyright: opspack developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Options shared by the opspack modules that talk to a local PostgreSQL server."""

from __future__ import annotations


class ModuleDocFragment:  # pylint: disable=too-few-public-methods
    DOCUMENTATION = r"""
options:
  login_unix_socket:
    description:
      - Directory of the server's Unix socket. opspack servers listen on loopback only and
        the modules connect through the socket with peer authentication, so run them with
        C(become_user=postgres).
    type: path
    default: /var/run/postgresql
  login_port:
    description: Port of the server (it names the socket file).
    type: int
    default: 5432
  login_user:
    description: Role to connect as; by default the operating system user the module runs as.
    type: str
requirements:
  - psycopg2 on the managed host (the C(opspack.platform.postgresql) role installs python3-psycopg2).
  - The PostgreSQL client programs of the server's version on the managed host.
"""
