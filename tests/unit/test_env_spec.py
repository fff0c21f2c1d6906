"""env.yaml: every shipped environment loads; bad ones fail with file and field."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ladderlab.environments.spec import CAPABILITY_ALLOWLIST, discover, load_env_spec
from ladderlab.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
ENVS = discover(ROOT / "environments")


def test_the_four_domain_environments_exist():
    assert {"firewall", "dns-tls", "slo", "debug"} <= set(ENVS)


#: Environments whose checks need no probe host, and why.
NO_PROBE = {"mesh": "every check observes from inside a region's own namespaces: what is judged is traffic "
                    "between pods through the learner's own routing, which no outside host could see",
            "incident": "no check observes a host: comm-4's checks judge the learner's written front matter against "
                        "the truth computed from the secret parameters"}


@pytest.mark.parametrize("name", sorted(ENVS))
def test_shipped_env_loads_with_allowlisted_caps_and_a_probe(name):
    spec = load_env_spec(ENVS[name])
    assert spec.name == name
    for host in spec.hosts.values():
        assert set(host.capabilities) <= CAPABILITY_ALLOWLIST
        assert "SYS_ADMIN" not in host.capabilities
    has_probe = any(h.role == "probe" for h in spec.hosts.values())
    assert has_probe != (name in NO_PROBE), "checks need a host to observe from (or a reason in NO_PROBE)"


def _env(tmp_path: Path, data: dict) -> Path:
    d = tmp_path / data.get("name", "x")
    d.mkdir()
    (d / "env.yaml").write_text(yaml.safe_dump(data))
    return d


def _host(**kw):
    return {"image": "probe", "role": "probe", "capabilities": ["SETUID", "SETGID", "SYS_CHROOT"], **kw}


@pytest.mark.parametrize(("data", "where", "expected"), [
    ({"name": "x", "hosts": {"a": _host(capabilities=["SYS_ADMIN", "SETUID", "SETGID", "SYS_CHROOT"])}},
     "hosts.a.capabilities", "not allowed"),
    ({"name": "x", "hosts": {"a": _host(capabilities=[])}}, "hosts.a", "needs the capabilities"),
    ({"name": "x", "hosts": {"a": _host(labels={"io.ladderlab.expires": "0"})}}, "hosts.a.labels", "reserved"),
    ({"name": "x", "hosts": {"a": _host(environment={"P": "{nope}"})}}, "hosts.a.environment.P",
     "unknown parameter nope"),
    ({"name": "x", "hosts": {"a": _host(ready=[{"command": "test {nope} -gt 0"}])}}, "hosts.a.ready[0].command",
     "unknown parameter nope"),
    ({"name": "x", "hosts": {"a": _host(depends_on=["b"]), "b": _host(depends_on=["a"])}}, "hosts",
     "cycle"),
    ({"name": "x", "hosts": {"a": _host(networks=["wan"])}}, "hosts.a.networks", "unknown network"),
    ({"name": "x", "hosts": {"a": _host(resources={"memory": "4096m"})}}, "hosts.a.resources.memory",
     "between 16m and 2048m"),
    ({"name": "x", "hosts": {"a": _host(resources={"memory": "64g"})}}, "hosts.a.resources.memory",
     "a size like 256m"),
    ({"name": "x", "hosts": {"a": _host(role="wizard")}}, "hosts.a.role", "input should be"),
    ({"name": "x", "hosts": {}}, "hosts", "at least 1"),
    ({"name": "x", "hosts": {"a": _host()}, "params": {"p": {"type": "int", "min": 9, "max": 1}}},
     "params.p.int", "greater than max"),
    ({"name": "y", "hosts": {"a": _host()}}, "name", "directory name"),
])
def test_bad_env_yaml(tmp_path, data, where, expected):
    d = _env(tmp_path, {**data, "name": data["name"]})
    if data["name"] == "y":
        d = d.rename(tmp_path / "z")
    with pytest.raises(ConfigError) as info:
        load_env_spec(d)
    assert any(w == where and expected in what for w, what in info.value.problems), info.value.problems
    assert str(info.value).startswith(f"environments/{d.name}/env.yaml: ")


def test_start_waves_respect_depends_on():
    spec = load_env_spec(ENVS["slo"])
    waves = spec.start_waves()
    assert waves[0] == ["app", "probe", "prometheus"]
    assert waves[1] == ["loadgen"]


def test_cli_env_up_with_bad_env_yaml_exits_2_without_traceback(tmp_path):
    (tmp_path / "course.yaml").write_text((ROOT / "course.yaml").read_text())
    envs = tmp_path / "environments"
    envs.mkdir()
    _env(envs, {"name": "bad", "hosts": {"a": _host(capabilities=["SYS_MODULE"])}})
    proc = subprocess.run([sys.executable, "-m", "ladderlab.cli", "env", "up", "bad"], capture_output=True,
                          text=True, env={"LADDERLAB_ROOT": str(tmp_path), "PATH": "/usr/bin:/bin",
                                          "DOCKER_HOST": "unix:///nonexistent.sock"}, check=False)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "environments/bad/env.yaml: hosts.a.capabilities: capabilities SYS_MODULE are not allowed" in proc.stderr


def test_a_ready_command_gets_the_params_shell_quoted():
    from ladderlab.environments.readiness import CommandSucceeds
    from ladderlab.environments.runtime import _strategies
    from ladderlab.environments.spec import CommandReady

    host = load_env_spec(ENVS["firewall"]).hosts["target"]
    host = host.model_copy(update={"ready": [CommandReady(command="test {port} -ne 6001")]})
    assert _strategies(host, {"port": "1; reboot"}) == [CommandSucceeds("test '1; reboot' -ne 6001")]


# --- issue 14: networks with a prefix and static addresses, sysctls, devices --------------------------------


def _net_env(**host):
    h = {"image": "base", "role": "target", "ssh": False, **host}
    return {"name": "x", "networks": [{"name": "lan", "prefix": 24}, {"name": "wan"}], "hosts": {"a": h}}


@pytest.mark.parametrize(("data", "where", "expected"), [
    (_net_env(sysctls={"kernel.panic": 1}), "hosts.a.sysctls", "sysctl 'kernel.panic' is not allowed"),
    (_net_env(sysctls={"net.core.somaxconn": 4096}), "hosts.a.sysctls", "is not allowed"),
    (_net_env(sysctls={"net.ipv4.conf.wg0.rp_filter": 0}), "hosts.a.sysctls", "is not allowed"),
    (_net_env(sysctls={"net.ipv4.ip_forward": 2}), "hosts.a.sysctls", "must be one of 0, 1, got '2'"),
    (_net_env(sysctls={"net.ipv4.conf.all.rp_filter": "strict"}), "hosts.a.sysctls", "must be one of 0, 1, 2"),
    (_net_env(sysctls={"net.netfilter.nf_conntrack_udp_timeout": 0}), "hosts.a.sysctls", "integer 1-3600"),
    (_net_env(networks=["lan"], sysctls={"net.ipv4.conf.eth1.rp_filter": 0}), "hosts.a.sysctls",
     "its interfaces are eth0"),
    (_net_env(devices=["tun", "/dev/sda"]), "hosts.a.devices", "devices '/dev/sda' are not allowed"),
    (_net_env(devices=["fuse"]), "hosts.a.devices", "nothing else from /dev"),
    (_net_env(devices=["tun", "tun"]), "hosts.a.devices", "listed twice"),
    (_net_env(addresses={"wan": 5}), "hosts.a.addresses.wan", "declares no prefix"),
    (_net_env(addresses={"lan": 128}), "hosts.a.addresses.lan", "outside 1-127"),
    (_net_env(addresses={"lan": 0}), "hosts.a.addresses.lan", "outside 1-127"),
    (_net_env(networks=["wan"], addresses={"lan": 3}), "hosts.a.addresses.lan", "not on network 'lan'"),
    ({**_net_env(), "networks": [{"name": "lan", "prefix": 12}]}, "networks[0].prefix", "greater than or equal to 16"),
    ({**_net_env(), "networks": [{"name": "lan", "prefix": 30}]}, "networks[0].prefix", "less than or equal to 29"),
    ({**_net_env(), "networks": [{"name": "lan", "subnet": "10.1.0.0/24"}]}, "networks[0].subnet", "unknown field"),
    ({**_net_env(addresses={"lan": 1}), "params": {"addr_a_lan": {"type": "int", "min": 1, "max": 2}}},
     "params.addr_a_lan", "reserved"),
    (_net_env(setup=["ping -c1 {addr_b_lan}"]), "hosts.a.setup[0]", "unknown parameter addr_b_lan"),
])
def test_bad_network_extensions_name_the_field(tmp_path, data, where, expected):
    with pytest.raises(ConfigError) as info:
        load_env_spec(_env(tmp_path, data))
    assert any(w == where and expected in what for w, what in info.value.problems), info.value.problems


def test_two_hosts_may_not_share_an_offset(tmp_path):
    data = _net_env(addresses={"lan": 7})
    data["hosts"]["b"] = {**data["hosts"]["a"]}
    with pytest.raises(ConfigError) as info:
        load_env_spec(_env(tmp_path, data))
    assert ("hosts.b.addresses.lan", "offset 7 is already host 'a''s") in info.value.problems


def test_good_network_extensions_load_and_name_their_derived_params(tmp_path):
    data = _net_env(addresses={"lan": 5}, devices=["tun"], environment={"ME": "{addr_a_lan} in {net_lan_subnet}"},
                    sysctls={"net.ipv4.ip_forward": 1, "net.ipv4.conf.eth1.rp_filter": "2",
                             "net.netfilter.nf_conntrack_udp_timeout": 10})
    spec = load_env_spec(_env(tmp_path, data))
    host = spec.hosts["a"]
    assert host.sysctls == {"net.ipv4.ip_forward": "1", "net.ipv4.conf.eth1.rp_filter": "2",
                            "net.netfilter.nf_conntrack_udp_timeout": "10"}
    assert host.devices == ["tun"] and host.addresses == {"lan": 5}
    assert spec.derived_params() == ["net_lan_subnet", "addr_a_lan"]


def test_offsets_are_the_lower_half():
    from ladderlab.environments.spec import usable_offsets

    assert usable_offsets(24) == range(1, 128)
    assert usable_offsets(29) == range(1, 4)


def test_the_engine_picks_a_free_subnet_and_lays_it_out():
    import ipaddress
    import random

    from ladderlab.environments import addressing
    from ladderlab.errors import EnvError

    space = ipaddress.IPv4Network("10.200.0.0/22")  # four /24s
    used = [ipaddress.IPv4Network(n) for n in ("10.200.0.0/24", "10.200.2.0/23", "10.9.0.0/16")]
    picks = {addressing.pick(space, 24, used, random.Random(seed)) for seed in range(30)}
    assert picks == {ipaddress.IPv4Network("10.200.1.0/24")}
    with pytest.raises(EnvError, match="no free /24"):
        addressing.pick(space, 24, [*used, ipaddress.IPv4Network("10.200.1.128/25")])
    with pytest.raises(EnvError, match="does not fit"):
        addressing.pick(space, 16, [])
    assert addressing.layout(ipaddress.IPv4Network("10.200.1.0/24")) == {
        "subnet": "10.200.1.0/24", "ip_range": "10.200.1.128/25", "gateway": "10.200.1.254"}
    assert addressing.address("10.200.1.0/24", 5) == "10.200.1.5"


def test_subnet_pool_and_host_routes(tmp_path):
    from ladderlab.environments import addressing
    from ladderlab.errors import EnvError

    assert str(addressing.pool({})) == addressing.DEFAULT_POOL
    assert str(addressing.pool({"LADDERLAB_SUBNET_POOL": "172.20.0.0/14"})) == "172.20.0.0/14"
    for bad in ("8.8.0.0/16", "fd00::/8", "nonsense"):
        with pytest.raises(EnvError, match="LADDERLAB_SUBNET_POOL"):
            addressing.pool({"LADDERLAB_SUBNET_POOL": bad})
    route = tmp_path / "route"
    route.write_text(  # /proc/net/route: default via 10.0.0.1, 10.0.0.0/24 and 10.200.4.0/22 on-link
        "Iface\tDestination\tGateway\tFlags\tRefCnt\tUse\tMetric\tMask\tMTU\tWindow\tIRTT\n"
        "eth0\t00000000\t0100000A\t0003\t0\t0\t0\t00000000\t0\t0\t0\n"
        "eth0\t0000000A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n"
        "vpn0\t0004C80A\t00000000\t0001\t0\t0\t0\t00FCFFFF\t0\t0\t0\n")
    assert [str(n) for n in addressing.host_routes(route)] == ["10.0.0.0/24", "10.200.4.0/22"]


def test_doctor_reports_tun_and_bridge_netfilter(tmp_path):
    from ladderlab.doctor import TUN, network_findings

    nf = tmp_path / "bridge-nf-call-iptables"
    nf.write_text("1\n")
    missing, bridged = network_findings(tun=tmp_path / "no-tun", bridge_nf=nf)
    assert (missing.name, missing.ok) == ("/dev/net/tun", False) and "CONFIG_TUN" in missing.fix
    assert bridged.ok and bridged.detail.startswith("1: ") and "off the network's subnet" in bridged.detail
    _, unloaded = network_findings(tun=TUN, bridge_nf=tmp_path / "absent")
    assert "not loaded" in unloaded.detail
    not_a_device = tmp_path / "tun"
    not_a_device.write_text("")
    assert network_findings(tun=not_a_device, bridge_nf=nf)[0].ok is False
