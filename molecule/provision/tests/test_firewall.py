"""testinfra checks of the firewall role: nftables default-drop inbound, fail2ban's sshd jail.

The drop is proven with real packets. A connection from the host to its own eth0 address does
not prove anything: the kernel routes it over "lo", which the ruleset accepts (checked in the
lab: the input hook sees iifname "lo"). So the tests make a veth pair inside the host, give one
end 192.0.2.1/24 (TEST-NET-1, documentation-only), and inject hand-made TCP SYNs on the other
end with an AF_PACKET socket: the kernel sees them arrive on a non-loopback interface from
another 192.0.2.x, exactly as from the internet. Packets never leave the host; the pair is removed
afterwards.
"""

import json
import os
import random
import re
import shlex
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
from conftest import lab_port

from opspack.lab import ssh_greets

IF_OUT, IF_IN = "opsfwt1", "opsfwt0"  # we send on IF_OUT, the host receives on IF_IN
HOST_IP = "192.0.2.1"
BLOCKED_PORT = 8081

# Sends COUNT TCP SYNs from the peer address to HOST_IP:PORT through the veth pair and prints, per SYN,
# what came back: SYNACK (accepted, port open), RST (accepted, port closed) or NOREPLY (dropped).
SYN_PROBE = r'''
import random, socket, struct, sys, time
out_if, in_if, src_ip, dst_ip = sys.argv[1:5]
dport, count = int(sys.argv[5]), int(sys.argv[6])

def csum(data):
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF

def mac(ifname):
    with open("/sys/class/net/%s/address" % ifname) as f:
        return bytes.fromhex(f.read().strip().replace(":", ""))

def frame(sport, seq, flags):
    src, dst = socket.inet_aton(src_ip), socket.inet_aton(dst_ip)
    tcp = struct.pack("!HHIIBBHHH", sport, dport, seq, 0, 5 << 4, flags, 64240, 0, 0)
    pseudo = src + dst + struct.pack("!BBH", 0, 6, len(tcp))
    tcp = tcp[:16] + struct.pack("!H", csum(pseudo + tcp)) + tcp[18:]
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), random.randint(0, 65535),
                     0, 64, 6, 0, src, dst)
    ip = ip[:10] + struct.pack("!H", csum(ip)) + ip[12:]
    return mac(in_if) + mac(out_if) + b"\x08\x00" + ip + tcp

sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0800))
sock.bind((out_if, 0))
sock.settimeout(0.1)
for sport in random.sample(range(20000, 60000), count):
    sock.send(frame(sport, 1000, 0x02))
    answer, deadline = "NOREPLY", time.time() + 0.5  # a veth answers in microseconds
    while time.time() < deadline:
        try:
            pkt = sock.recv(2048)[14:]
        except socket.timeout:
            continue
        if pkt[9] != 6 or pkt[12:16] != socket.inet_aton(dst_ip):
            continue
        tcp = pkt[(pkt[0] & 15) * 4:]
        if struct.unpack("!HH", tcp[:4]) != (dport, sport):
            continue
        if tcp[13] & 0x12 == 0x12:
            sock.send(frame(sport, 1001, 0x04))  # reset the half-open connection we caused
            answer = "SYNACK"
        else:
            answer = "RST" if tcp[13] & 0x04 else "OTHER"
        break
    print(answer, flush=True)
'''


def _input_chain(host):
    out = host.check_output("nft -j list chain inet opspack_filter input")
    items = json.loads(out)["nftables"]
    chain = next(i["chain"] for i in items if "chain" in i)
    rules = [i["rule"] for i in items if "rule" in i]
    return chain, rules


def _accepted_tcp_ports(rules):
    """TCP destination ports that a plain `tcp dport X accept` rule lets in."""
    ports = set()
    for rule in rules:
        exprs = rule["expr"]
        if not any("accept" in e for e in exprs) or len(exprs) != 2:
            continue
        match = exprs[0].get("match", {})
        if match.get("left", {}).get("payload") != {"protocol": "tcp", "field": "dport"}:
            continue
        right = match["right"]
        ports.update(right["set"] if isinstance(right, dict) else [right])
    return ports


def _ssh_port(host):
    # The role refuses an SSH port sshd does not use, so sshd's own port is the one opened.
    return int(re.search(r"^port (\d+)$", host.check_output("sshd -T"), re.M).group(1))


@pytest.fixture()
def veth(host):
    """The source address the probes come from; a fresh one per test, so the per-source SSH
    rate limit left behind by an earlier test or run never skews the next one."""
    peer_ip = f"192.0.2.{random.randint(2, 254)}"
    host.run(f"ip link del {IF_IN}")  # leftovers of an interrupted run
    setup = " && ".join([
        f"ip link add {IF_IN} type veth peer name {IF_OUT}",
        f"ip addr add {HOST_IP}/24 dev {IF_IN}",
        f"ip link set {IF_IN} up",
        f"ip link set {IF_OUT} up",
        # The host's replies go to the probe's side without ARP (that side has no address).
        f"ip neigh replace {peer_ip} lladdr $(cat /sys/class/net/{IF_OUT}/address)"
        f" dev {IF_IN} nud permanent",
    ])
    host.run_expect([0], setup)
    try:
        yield peer_ip
    finally:
        host.run(f"ip link del {IF_IN}")


def _probe(host, peer_ip, port, count=1):
    cmd = "timeout 300 python3 -c {} {} {} {} {} {} {}".format(
        shlex.quote(SYN_PROBE), IF_OUT, IF_IN, peer_ip, HOST_IP, port, count)
    return host.check_output(cmd).split()


def test_nftables_is_active_and_enabled(host):
    nftables = host.service("nftables")
    assert nftables.is_running
    assert nftables.is_enabled
    assert host.file("/etc/nftables.conf").contains("table inet opspack_filter")
    # Other tools' tables (fail2ban's, Docker's) must survive a load of our file.
    assert host.run("grep -Eq '^[[:space:]]*flush[[:space:]]+ruleset' /etc/nftables.conf").rc == 1


def test_input_drops_by_default_and_opens_ssh_and_web(host):
    chain, rules = _input_chain(host)
    assert chain["hook"] == "input"
    assert chain["policy"] == "drop"
    # Established traffic is accepted first, so a reload never cuts a running session.
    first = rules[0]["expr"]
    assert first[0]["match"]["left"] == {"ct": {"key": "state"}}
    assert "accept" in first[-1]
    assert {_ssh_port(host), 80, 443} <= _accepted_tcp_ports(rules)
    forward = json.loads(host.check_output("nft -j list chain inet opspack_filter forward"))
    assert next(i["chain"] for i in forward["nftables"] if "chain" in i)["policy"] == "drop"


def test_stopping_nftables_only_removes_our_table(host):
    unit = host.check_output("systemctl show -p ExecStop nftables")
    assert "delete table inet opspack_filter" in unit
    assert "flush ruleset" not in unit


def test_port_outside_the_allowlist_is_dropped(host, veth):
    # A real listener on the port, reachable locally, so only the firewall can explain silence.
    host.run_expect([0], f"(timeout 20 python3 -m http.server {BLOCKED_PORT} >/dev/null 2>&1 &)")
    try:
        host.run_expect([0], "for i in $(seq 50); do "
                        f"ss -Htln 'sport = :{BLOCKED_PORT}' | grep -q . && exit 0; sleep 0.1; done; exit 1")
        assert _probe(host, veth, BLOCKED_PORT) == ["NOREPLY"]
    finally:
        # Leave nothing listening: later checks count what the host exposes.
        host.run(f"pkill -f 'http[.]server {BLOCKED_PORT}'")
    # The same path does get answers where the ruleset accepts: the probe itself works.
    assert _probe(host, veth, _ssh_port(host)) == ["SYNACK"]
    assert _probe(host, veth, 80)[0] in ("SYNACK", "RST")
    assert _probe(host, veth, 443)[0] in ("SYNACK", "RST")


def _ssh_burst(host):
    text = host.check_output("nft list chain inet opspack_filter input")
    return int(re.search(r"ip saddr limit rate over \d+/minute burst (\d+) packets", text).group(1))


def _ssh_drops(host) -> int:
    """SYNs the per-source SSH limit has dropped so far (the counter of its two drop rules)."""
    text = host.check_output("nft list chain inet opspack_filter input")
    return sum(int(found) for found in re.findall(r"limit rate over .*? counter packets (\d+) bytes \d+ drop", text))


def test_a_burst_of_new_ssh_connections_from_one_source_is_refused(host, veth):
    # What an outside audit tried: 40 new connections at once from one address.
    burst = _ssh_burst(host)
    assert burst <= 10
    answers = _probe(host, veth, _ssh_port(host), count=40)
    # The burst gets through; past it, tokens come back at the per-minute rate only (one every few
    # seconds), so nearly all of the rest are dropped.
    assert "NOREPLY" not in answers[: burst - 1]
    assert answers.count("NOREPLY") >= 40 - burst - 5, answers
    # Only the flooding source was throttled; the controller's own session is unaffected.
    assert host.run("true").rc == 0


def _settled_drops(host) -> int:
    """The drop counter once it has stopped moving: connections an earlier test had throttled may
    still be retried for a while (Docker's port proxy retries its side of each)."""
    seen, deadline = _ssh_drops(host), time.monotonic() + 90
    while time.monotonic() < deadline:
        time.sleep(5)
        now = _ssh_drops(host)
        if now == seen:
            return now
        seen = now
    return seen


def test_ansible_runs_sharing_their_connection_are_never_throttled(host):
    """Fifteen ansible runs in a row from the control node, each a new process, as an operator or
    a test suite makes them: with ControlMaster/ControlPersist (ansible.cfg) they share one SSH
    connection, so the per-source limit never drops one of their SYNs. A fresh control path
    directory (short: a socket path has a length limit) makes the first run open its own
    connection, as a laptop's first run of the day."""
    name = host.ansible.get_variables()["inventory_hostname"]
    inventory = os.path.join(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"], "inventory")
    control_dir = tempfile.mkdtemp(prefix="opscp")
    env = dict(os.environ, ANSIBLE_SSH_CONTROL_PATH_DIR=control_dir)
    before = _settled_drops(host)
    try:
        for _ in range(15):
            ran = subprocess.run(["ansible", "-i", inventory, name, "-m", "ansible.builtin.command", "-a", "true"],
                                 env=env, cwd=os.environ["MOLECULE_PROJECT_DIRECTORY"], capture_output=True, text=True,
                                 timeout=120, check=False)
            assert ran.returncode == 0, ran.stdout + ran.stderr
        assert _ssh_drops(host) == before
    finally:
        for socket_path in Path(control_dir).iterdir():
            subprocess.run(["ssh", "-o", f"ControlPath={socket_path}", "-O", "exit", "127.0.0.1"],
                           capture_output=True, check=False, timeout=30)
        shutil.rmtree(control_dir, ignore_errors=True)


def test_an_outside_ssh_audit_finds_the_connection_rate_throttled(host):
    """ssh-audit's DHEat test (CVE-2002-20001) opens about 40 connections as fast as it can and
    reports the server as open to it above 20 a second from one source. Run from the control node,
    the other side of the firewall, it must not find that (from the host itself, over lo, it does)."""
    port = host.ansible.get_variables()["ansible_port"]
    ran = subprocess.run(["ssh-audit", "-j", "-p", str(port), "127.0.0.1"], capture_output=True, text=True,
                         timeout=300, check=False)
    report = json.loads(ran.stdout)
    assert report["kex"], ran.stderr
    assert not any("DHEat" in note for note in report["additional_notes"]), report["additional_notes"]
    # The next tests need new connections from this address: wait, boundedly, until sshd greets it
    # again (past the throttle, and past OpenSSH 10's PerSourcePenalties for the audit's aborted logins).
    # Docker's port proxy keeps retrying its side of each throttled connection for about two
    # minutes, and those retries take the tokens as they come back: wait them out.
    # Each probe is a new connection, which takes a token too: the last answer is the verdict.
    deadline = time.monotonic() + 300
    greeted = ssh_greets(int(port), timeout=10)
    while not greeted and time.monotonic() < deadline:
        time.sleep(15)
        greeted = ssh_greets(int(port), timeout=10)
    assert greeted


def test_web_port_is_reachable_from_outside(host):
    # Lab only: 127.0.0.1:opspack_lab_http_port is Docker's proxy to the host's port 80, so the
    # request enters the host on eth0 from the docker gateway, as real web traffic would.
    port = lab_port(host, "http")
    if not host.socket("tcp://0.0.0.0:80").is_listening and not host.socket("tcp://:::80").is_listening:
        host.run_expect([0], "(timeout 20 python3 -m http.server 80 >/dev/null 2>&1 &)")
        host.run_expect([0], "for i in $(seq 50); do "
                        "ss -Htln 'sport = :80' | grep -q . && exit 0; sleep 0.1; done; exit 1")
    with socket.create_connection(("127.0.0.1", int(port)), timeout=5) as conn:
        conn.settimeout(5)
        conn.sendall(b"HEAD / HTTP/1.0\r\nHost: localhost\r\n\r\n")
        assert conn.recv(64).startswith(b"HTTP/")


def test_fail2ban_runs_the_sshd_jail_through_nftables(host):
    fail2ban = host.service("fail2ban")
    assert fail2ban.is_running
    assert fail2ban.is_enabled
    status = host.check_output("fail2ban-client status sshd")
    assert "Currently banned" in status
    assert "nftables-multiport" in host.check_output("fail2ban-client get sshd actions")
    assert "127.0.0.0/8" in host.check_output("fail2ban-client get sshd ignoreip")


def test_failed_ssh_logins_get_banned(host):
    # Real failed logins from 127.0.0.1, made bannable for the duration of the test only (the
    # jail ignores loopback and the host's own addresses). Nothing leaves the host.
    jail = "fail2ban-client set sshd "
    # ssh exits 255 on a refused login, which testinfra would take for its own connection failing.
    login = ("timeout 10 ssh -o BatchMode=yes -o StrictHostKeyChecking=no "
             "-o UserKnownHostsFile=/dev/null -o ConnectTimeout=5 "
             "opspack-f2b-probe@127.0.0.1 true 2>&1; true")
    maxretry = int(host.check_output("fail2ban-client get sshd maxretry"))
    host.run_expect([0], jail + "delignoreip 127.0.0.0/8")
    host.run_expect([0], jail + "ignoreself false")
    try:
        # sshd may log more than one failure per attempt, so stop as soon as the ban lands.
        for _ in range(min(maxretry, 20)):
            if "127.0.0.1" in host.check_output("fail2ban-client get sshd banned"):
                break
            assert "Permission denied" in host.check_output(login)
        for _ in range(50):
            if "127.0.0.1" in host.check_output("fail2ban-client get sshd banned"):
                break
            time.sleep(0.2)
        assert "127.0.0.1" in host.check_output("fail2ban-client get sshd banned")
        banned_set = host.check_output("nft list set inet f2b-table addr-set-sshd")
        assert "127.0.0.1" in banned_set
        assert "Connection refused" in host.check_output(login)
    finally:
        host.run(jail + "unbanip 127.0.0.1")
        host.run("fail2ban-client reload sshd")  # restores ignoreip/ignoreself from the config
    assert "127.0.0.0/8" in host.check_output("fail2ban-client get sshd ignoreip")
