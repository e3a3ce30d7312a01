"""The `opspack` command: `opspack lab up|status|down|report|snapshot`, `opspack matrix|history|incidents`
and `opspack sites convert`."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from opspack import __version__
from opspack.lab import ARCHIVES, DEFAULT_BASE_PORT, DEFAULT_TARGET, MAX_HOSTS, MIRROR_ENV, TARGETS, Lab, LabError
from opspack.report import report
from opspack import fleet_page, records, sites

import yaml


def log(message: str) -> None:
    print(f"opspack: {message}", file=sys.stderr, flush=True)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="opspack", description=__doc__)
    parser.add_argument("--version", action="version", version=f"opspack {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    lab = commands.add_parser("lab", help="local Debian VPS hosts (12 or 13) to rehearse runbooks on")
    lab_commands = lab.add_subparsers(dest="lab_command", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--name", default="lab", help="lab name; several labs can run side by side (default: lab)")
    common.add_argument("--dir", type=Path, default=Path("inventories/lab"),
                        help="where the inventory, key and known_hosts are written (default: inventories/lab)")
    up = lab_commands.add_parser("up", parents=[common], help="build the image if needed and start the hosts")
    up.add_argument("--hosts", type=int, default=2, help=f"how many hosts, 1-{MAX_HOSTS} (default: 2)")
    up.add_argument("--base-port", type=int, default=DEFAULT_BASE_PORT,
                    help=f"first 127.0.0.1 port; host N gets SSH, HTTP, HTTPS at base+10*(N-1)+0,1,2 (default: {DEFAULT_BASE_PORT})")
    up.add_argument("--snapshot", type=Path, metavar="DIR",
                    help="start the hosts from a snapshot taken with 'opspack lab snapshot' (its images, key and OS)")
    # Checked by the lab (one line listing the targets), not by argparse's choices.
    up.add_argument("--os", dest="os_target", metavar="TARGET",
                    help=f"the hosts' OS: {', '.join(TARGETS)} (default: {DEFAULT_TARGET}; with --snapshot, the snapshot's)")
    up.add_argument("--mirror", metavar="URL",
                    help=f"mirror of the target's archive to build the image from (default: ${MIRROR_ENV} for "
                         f"Debian, else the Debian mirror in this machine's /etc/apt; ${ARCHIVES['ubuntu'].mirror_env} for "
                         "Ubuntu, else debootstrap's default); used only when the image is built")
    snapshot = lab_commands.add_parser(
        "snapshot", parents=[common],
        help="commit the running hosts as images later labs start from (--snapshot); the hosts are stopped")
    snapshot.add_argument("--to", type=Path, required=True, metavar="DIR", help="where the snapshot's manifest and key go")
    snapshot.add_argument("--key", required=True, help="the snapshot's name, e.g. a hash of what shaped the hosts")
    snapshot.add_argument("--control", action="append", default=[], metavar="NAME=PATH",
                          help="a control-node file or directory the hosts' state goes with (e.g. the lab CA); repeatable")
    lab_commands.add_parser("status", parents=[common], help="show each host's container, systemd and SSH state")
    lab_commands.add_parser("down", parents=[common], help="remove the hosts (the cached image is kept)")
    lab_report = lab_commands.add_parser("report", parents=[common],
                                         help="what each provisioned host serves (HTTP redirect, verified HTTPS, health, for "
                                              "each site of the lab) and who may log in over SSH")
    lab_report.add_argument("--sites", type=Path, default=Path("inventories/lab-site.yml"),
                            help="the lab's variables file with opspack_sites (default: inventories/lab-site.yml)")
    lab_report.add_argument("--operator", default="ops", help="the operator user provisioning made (default: ops)")

    where = argparse.ArgumentParser(add_help=False)
    where.add_argument("--records", type=Path, default=os.environ.get("OPSPACK_RECORDS_DIR") or None, metavar="DIR",
                       help="the records directory (default: $OPSPACK_RECORDS_DIR, else records/ of the state directory)")
    where.add_argument("--state-dir", type=Path, default=os.environ.get("OPSPACK_STATE_DIR") or None, metavar="DIR",
                       help="the inventory's control-node state directory (default: $OPSPACK_STATE_DIR, else asked of "
                            "Ansible as the playbooks find it: opspack_state_dir, ansible.cfg, ~/.local/share/opspack/<inventory>)")
    where.add_argument("-i", "--inventory", metavar="INVENTORY",
                       help="the inventory whose records to show (default: ansible.cfg's)")
    where.add_argument("--vault-password-file", metavar="FILE",
                       help="for an inventory with vault-encrypted variables, when Ansible is asked where its state is")
    where.add_argument("--json", action="store_true", help="print JSON for tools instead of a table")
    commands.add_parser("matrix", parents=[where], help="the sites matrix: which site runs what, and how it went")
    history = commands.add_parser("history", parents=[where], help="every recorded operation, oldest first")
    history.add_argument("--site", help="only this site")
    incidents = commands.add_parser("incidents", parents=[where], help="what broke last time (the incident log)")
    incidents.add_argument("--open", action="store_true",
                           help="only the incidents whose follow-up no person has written yet, with their severity")

    commands.add_parser("verify", parents=[where], help="the last full verification of each host (opspack.platform.verify)")
    commands.add_parser("daily", parents=[where], help="the last daily check of each host run from the control node (ops_daily)")
    report_page = commands.add_parser("report", parents=[where], help="write the fleet page (static HTML) from the records")
    report_page.add_argument("--html", type=Path, required=True, metavar="DIR", help="the directory to write index.html into")

    sites = commands.add_parser("sites", help="the site definitions (opspack_sites)")
    sites_commands = sites.add_subparsers(dest="sites_command", required=True)
    convert = sites_commands.add_parser(
        "convert", help="print opspack_sites made from files of the old per-role site variables (secrets as vault references)")
    convert.add_argument("files", type=Path, nargs="+", metavar="FILE", help="YAML files of variables (group_vars, -e @files)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command in ("matrix", "history", "incidents", "verify", "daily", "report"):
        try:
            args.records = args.records or records.locate(args.state_dir, args.inventory, args.vault_password_file)
            if args.command == "report":
                if not args.records.is_dir():
                    raise records.RecordsError(f"no records directory {args.records}: pass -i INVENTORY, --state-dir DIR or --records DIR")
                print(fleet_page.write(args.records, args.html))
            elif args.command in ("verify", "daily"):
                found = records.reports(args.records, args.command)
                print(json.dumps(found, indent=2, sort_keys=True) if args.json else records.report_text(found))
            elif args.json:
                data = {"matrix": lambda: records.matrix_rows(args.records),
                        "history": lambda: records.history_entries(args.records, args.site),
                        "incidents": lambda: ([entry for entry in records.incident_entries(args.records) if entry["open"]]
                                              if args.open else {"text": records.incidents(args.records),
                                                                 "entries": records.incident_entries(args.records)})
                        }[args.command]()
                print(json.dumps(data, indent=2, sort_keys=True))
            elif args.command == "matrix":
                print(records.matrix(args.records))
            elif args.command == "history":
                print(records.history(args.records, args.site))
            else:
                print(records.incidents(args.records, only_open=args.open))
            return 0
        except records.RecordsError as error:
            print(f"opspack: error: {error}", file=sys.stderr)
            return 1
    if args.command == "sites":
        try:
            print(sites.render(args.files), end="")
            return 0
        except (sites.ConvertError, OSError, yaml.YAMLError) as error:
            print(f"opspack: error: {error}", file=sys.stderr)
            return 1
    lab = Lab(args.name, args.dir, log)
    try:
        if args.lab_command == "up":
            hosts = lab.up(args.hosts, args.base_port, args.snapshot, args.os_target, args.mirror)
            for host in hosts:
                print(f"{host.name}: ssh -i {lab.key_file} -p {host.ports.ssh} root@127.0.0.1"
                      f"  (http 127.0.0.1:{host.ports.http}, https 127.0.0.1:{host.ports.https})")
            print(f"inventory: {lab.inventory}")
            return 0
        if args.lab_command == "snapshot":
            control = {}
            for item in args.control:
                name, sep, path = item.partition("=")
                if not sep or not name or "/" in name:
                    raise LabError(f"--control {item!r}: give NAME=PATH (NAME without '/')", exit_code=2)
                control[name] = Path(path)
            manifest = lab.snapshot(args.to, args.key, control)
            print(f"snapshot {manifest['key']}: {', '.join(manifest['images'].values())} ({args.to})")
            return 0
        if args.lab_command == "report":
            return report(lab.state_dir, args.sites, args.operator)
        if args.lab_command == "status":
            healthy, table = lab.status()
            print(table)
            return 0 if healthy else 1
        removed = lab.down()
        print(f"lab '{args.name}': removed {len(removed)} host(s); the cached image is kept")
        return 0
    except LabError as error:
        print(f"opspack: error: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print("opspack: interrupted; nothing half-started is left behind", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
