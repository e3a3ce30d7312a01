"""testinfra checks of opspack.platform.monitoring, run over SSH on each provisioned host."""

import json


def test_node_exporter_is_enabled_and_running(host):
    svc = host.service("prometheus-node-exporter")
    assert svc.is_enabled
    assert svc.is_running
    assert 'ARGS="--web.listen-address=127.0.0.1:9100' in host.file(
        "/etc/default/prometheus-node-exporter"
    ).content_string


def test_node_exporter_listens_on_loopback_only(host):
    assert host.socket("tcp://127.0.0.1:9100").is_listening
    assert not host.socket("tcp://0.0.0.0:9100").is_listening
    assert not host.socket("tcp://:::9100").is_listening
    listeners = host.check_output("ss -Hltn 'sport = :9100'").splitlines()
    assert listeners, "nothing listens on port 9100"
    for line in listeners:
        assert line.split()[3] == "127.0.0.1:9100", line
    # The host's own non-loopback addresses do not answer.
    addrs = json.loads(host.check_output("ip -j -4 addr show scope global"))
    for iface in addrs:
        for addr in iface.get("addr_info", []):
            probe = host.run(f"curl -s -o /dev/null --max-time 3 http://{addr['local']}:9100/metrics")
            assert probe.rc != 0, f"port 9100 answers on {addr['local']}"


def test_node_exporter_serves_metrics(host):
    metrics = host.check_output("curl -s --max-time 5 127.0.0.1:9100/metrics")
    assert "node_cpu_seconds_total" in metrics
    assert "node_filesystem_avail_bytes" in metrics


def test_no_failed_units_from_exporter_extras(host):
    # Hardware tools the packages recommend (nvme-cli's boot unit) fail on a VPS; none is installed.
    failed = host.check_output("systemctl list-units --state=failed --plain --no-legend")
    assert "prometheus-node-exporter" not in failed
    assert "nvmf-autoconnect" not in failed
