"""Logic of the host firewall (hostguard) and the disk watchdog, without Docker or root.

The iptables side runs against a small in-memory model of ``iptables -S/-C/-N/-F/-A/-I/-D/-X``
so that idempotence and repair are checked exactly; the real rules are exercised by
tests/integration/test_host_isolation.py and tests/tamper/test_shared_resources.py.
"""

from __future__ import annotations

import json
import re
import subprocess

import pytest
from docker.errors import NotFound

from ladderlab.environments import hostguard
from ladderlab.environments.spec import Resources
from ladderlab.environments.watchdog import DiskWatch
from ladderlab.errors import EnvError

BUILTIN = {"filter": ["INPUT", "FORWARD", "OUTPUT"], "raw": ["PREROUTING", "OUTPUT"]}


class FakeIptables:
    """Chains as lists of rule tuples, per (tool, table); answers like iptables does."""

    def __init__(self) -> None:
        self.state: dict[tuple[str, str], dict[str, list[tuple[str, ...]]]] = {}
        self.calls: list[list[str]] = []

    def chains(self, tool: str, table: str) -> dict[str, list[tuple[str, ...]]]:
        return self.state.setdefault((tool, table), {c: [] for c in BUILTIN[table]})

    def __call__(self, argv: list[str]) -> subprocess.CompletedProcess[str]:
        self.calls.append(argv)
        tool, wait, t, table, op, *rest = argv
        assert (wait, t) == ("-w", "-t")
        chains = self.chains(tool, table)

        def done(rc: int = 0, out: str = "") -> subprocess.CompletedProcess[str]:
            return subprocess.CompletedProcess(argv, rc, out, "" if rc == 0 else "iptables: No chain/target/match")

        chain = rest[0] if rest else ""
        if op != "-N" and chain not in chains:
            return done(1)
        if op == "-S":
            head = f"-P {chain} ACCEPT" if chain in BUILTIN[table] else f"-N {chain}"
            return done(0, "\n".join([head, *(" ".join(["-A", chain, *r]) for r in chains[chain])]) + "\n")
        if op == "-N":
            if chain in chains:
                return done(1)
            chains[chain] = []
            return done()
        if op == "-F":
            chains[chain].clear()
            return done()
        if op == "-X":
            if chains[chain] or any(r[-1] == chain for rules in chains.values() for r in rules):
                return done(1)
            del chains[chain]
            return done()
        if op == "-A":
            chains[chain].append(tuple(rest[1:]))
            return done()
        if op == "-I":
            chains[chain].insert(int(rest[1]) - 1, tuple(rest[2:]))
            return done()
        if op == "-C":
            return done(0 if tuple(rest[1:]) in chains[chain] else 1)
        if op == "-D":
            rule = tuple(rest[1:])
            if rule not in chains[chain]:
                return done(1)
            chains[chain].remove(rule)
            return done()
        raise AssertionError(f"unexpected {argv}")


@pytest.fixture()
def ipt(monkeypatch, tmp_path):
    monkeypatch.setattr(hostguard, "LOCK_PATH", tmp_path / "lock")
    monkeypatch.setattr(hostguard, "tools", lambda: ["iptables", "ip6tables"])
    return FakeIptables()


def test_install_puts_both_chains_first_for_both_families(ipt):
    assert hostguard.install(ipt) is True
    for tool, reject in (("iptables", "icmp-admin-prohibited"), ("ip6tables", "icmp6-adm-prohibited")):
        flt, raw = ipt.chains(tool, "filter"), ipt.chains(tool, "raw")
        assert flt["INPUT"][0] == ("-i", "llbr+", "-j", "LADDERLAB-INPUT")
        assert flt["LADDERLAB-INPUT"] == [("-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED", "-j", "RETURN"),
                                          ("-j", "REJECT", "--reject-with", reject)]
        assert raw["PREROUTING"][0] == ("-i", "llbr+", "-j", "LADDERLAB-PREROUTING")
        assert raw["LADDERLAB-PREROUTING"] == [("-m", "addrtype", "!", "--dst-type", "LOCAL", "-j", "CT", "--notrack")]


def test_install_is_idempotent_and_changes_nothing_the_second_time(ipt):
    hostguard.install(ipt)
    before = json.dumps({str(k): v for k, v in ipt.state.items()})
    ipt.calls.clear()
    assert hostguard.install(ipt) is False
    assert json.dumps({str(k): v for k, v in ipt.state.items()}) == before
    assert not [c for c in ipt.calls if c[4] not in ("-S", "-C")], "a second install only reads"


def test_install_repairs_a_tampered_chain_and_a_jump_that_is_no_longer_first(ipt):
    hostguard.install(ipt)
    flt = ipt.chains("iptables", "filter")
    flt["LADDERLAB-INPUT"].insert(0, ("-j", "ACCEPT"))          # someone opened it
    flt["INPUT"].insert(0, ("-i", "llbr+", "-j", "ACCEPT"))      # and put an accept in front
    flt["INPUT"].append(("-i", "llbr+", "-j", "LADDERLAB-INPUT"))  # and a second jump further down
    assert hostguard.install(ipt) is True
    assert flt["LADDERLAB-INPUT"][0] == ("-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED", "-j", "RETURN")
    assert len(flt["LADDERLAB-INPUT"]) == 2
    assert flt["INPUT"][0] == ("-i", "llbr+", "-j", "LADDERLAB-INPUT")
    assert flt["INPUT"].count(("-i", "llbr+", "-j", "LADDERLAB-INPUT")) == 1


def test_remove_takes_everything_out_and_install_puts_it_back(ipt):
    hostguard.install(ipt)
    assert hostguard.remove(ipt) is True
    for (_tool, table), chains in ipt.state.items():
        assert set(chains) == set(BUILTIN[table])
        assert not any("llbr+" in r for rules in chains.values() for r in rules)
    assert hostguard.remove(ipt) is False
    assert hostguard.install(ipt) is True


def test_a_failing_iptables_is_an_error_naming_the_command(ipt, monkeypatch):
    def broken(argv):
        if argv[4] in ("-S", "-C"):
            return ipt(argv)
        return subprocess.CompletedProcess(argv, 4, "", "iptables v1.8.9: can't initialize iptables table")
    with pytest.raises(EnvError, match=r"iptables -t \w+ -N LADDERLAB-.*exited 4.*can't initialize"):
        hostguard.install(broken)


def test_bridge_names_fit_the_kernel_limit_match_the_rule_and_differ():
    names = {hostguard.bridge_name() for _ in range(2000)}
    assert len(names) == 2000
    pattern = re.escape(hostguard.BRIDGE_MATCH.rstrip("+"))
    for name in names:
        assert len(name) <= 15 and re.fullmatch(r"llbr-[0-9a-f]{10}", name) and re.match(pattern, name)


def test_commands_for_an_operator_are_the_rule_set():
    lines = hostguard.commands()
    assert "iptables -t filter -I INPUT 1 -i llbr+ -j LADDERLAB-INPUT" in lines
    assert "ip6tables -t raw -A LADDERLAB-PREROUTING -m addrtype ! --dst-type LOCAL -j CT --notrack" in lines


IP_J_ADDR = json.dumps([
    {"ifname": "lo", "addr_info": [{"family": "inet", "local": "127.0.0.1"}, {"family": "inet6", "local": "::1"}]},
    {"ifname": "ifb0"},
    {"ifname": "eth0", "addr_info": [{"family": "inet", "local": "192.0.2.2"}, {"family": "inet6", "local": "fd00::2"},
                                     {"family": "inet6", "local": "fe80::fc:ff:fe00:1"}]},
    {"ifname": "docker0", "addr_info": [{"family": "inet", "local": "172.17.0.1"}, {"family": "inet"}]},
])


def test_host_addresses_are_every_routable_address_without_optional_fields():
    assert hostguard.parse_ip_addr(IP_J_ADDR) == ["192.0.2.2", "fd00::2", "172.17.0.1"]
    assert hostguard.parse_ip_addr("[]") == []


class FakeNetworks:
    def __init__(self, nets):
        self.nets = nets

    def networks(self):
        return self.nets


class FakeClient:
    def __init__(self, api):
        self.api = api


def test_gateways_are_taken_only_when_the_engine_reports_them():
    nets = [{"Name": "bridge", "IPAM": {"Config": [{"Subnet": "172.17.0.0/16"}]}},  # fresh dockerd 20.10
            {"Name": "ll-x-lan", "IPAM": {"Config": [{"Subnet": "172.18.0.0/16", "Gateway": "172.18.0.1"}]}},
            {"Name": "host", "IPAM": {"Config": []}}, {"Name": "none", "IPAM": None}]
    assert hostguard.gateways(FakeClient(FakeNetworks(nets))) == ["172.18.0.1"]


# --- watchdog -------------------------------------------------------------------------------------


class FakeEngine:
    """``inspect_container``, ``containers(size=True)`` and ``kill`` over a dict of layer sizes."""

    def __init__(self, sizes):
        self.sizes = dict(sizes)
        self.killed: list[str] = []

    def inspect_container(self, name):
        if name not in self.sizes:
            raise NotFound(name)
        return {"Id": f"id-{name}"}

    def containers(self, all, size, filters):
        assert all and size
        return [{"Id": cid, "SizeRw": self.sizes[cid[3:]] or None} for cid in filters["id"]]

    def kill(self, cid):
        self.killed.append(cid)


def test_a_host_over_its_limit_is_stopped_once_and_reported():
    mib = 1 << 20
    engine = FakeEngine({"ll-a": 10 * mib, "ll-b": 0})
    seen = []
    watch = DiskWatch(FakeClient(engine), {"a": "ll-a", "b": "ll-b"}, {"a": 100 * mib, "b": 50 * mib},
                      on_exceed=seen.append)
    assert watch.poll() == {"a": 10 * mib, "b": 0} and watch.exceeded == {}
    engine.sizes["ll-b"] = 51 * mib
    watch.poll()
    watch.poll()
    assert watch.exceeded == {"b": 51 * mib}
    assert engine.killed == ["id-ll-b"]
    assert [o.host for o in seen] == ["b"]
    assert watch.feedback() == ["host b wrote 51 MiB to its disk, over its limit of 50 MiB; it was stopped"]


def test_a_host_not_yet_created_is_watched_once_it_exists():
    engine = FakeEngine({"ll-a": 5})
    watch = DiskWatch(FakeClient(engine), {"a": "ll-a", "late": "ll-late"}, 100)
    assert watch.poll() == {"a": 5}
    engine.sizes["ll-late"] = 500
    watch.poll()
    assert watch.exceeded == {"late": 500}


@pytest.mark.parametrize(("limit", "message"), [({"a": 1}, "no disk limit for hosts b"), (0, "must be positive")])
def test_bad_limits_are_refused(limit, message):
    with pytest.raises(ValueError, match=message):
        DiskWatch(FakeClient(FakeEngine({})), {"a": "x", "b": "y"}, limit)


def test_env_yaml_disk_limit_defaults_to_one_gib_and_is_bounded():
    assert Resources().disk_bytes == 1 << 30
    assert Resources(disk="2048m").disk_bytes == 2 << 30
    assert Resources(disk="512m").disk_bytes == 512 << 20
    for bad in ("8m", "16385m", "1g", "lots"):
        with pytest.raises(ValueError, match=r"disk|size like"):
            Resources(disk=bad)


class FakeCreate:
    def __init__(self):
        self.created: list[tuple[str, dict]] = []

    def create_network(self, name, **kwargs):
        self.created.append((name, kwargs))


@pytest.fixture()
def creating(monkeypatch, tmp_path):
    """A fake engine whose bridges appear in ``tmp_path`` (this machine's /sys/class/net) or not."""
    monkeypatch.setattr(hostguard, "SYS_NET", tmp_path)
    installs: list[bool] = []
    monkeypatch.setattr(hostguard, "install", lambda: installs.append(True) or True)
    api = FakeCreate()
    return api, installs, tmp_path


def test_a_lab_network_is_internal_on_an_llbr_bridge_and_guarded(creating, monkeypatch):
    api, installs, sys_net = creating
    monkeypatch.setattr(hostguard.os, "geteuid", lambda: 0)
    real_create = api.create_network

    def create_and_appear(name, **kwargs):
        real_create(name, **kwargs)
        (sys_net / kwargs["options"][hostguard.BRIDGE_OPTION]).mkdir()
    api.create_network = create_and_appear
    bridge = hostguard.create_lab_network(FakeClient(api), "ll-x-lan", {"io.ladderlab.managed": "1"})
    (name, kwargs), = api.created
    assert name == "ll-x-lan" and kwargs["internal"] is True and kwargs["driver"] == "bridge"
    assert kwargs["options"] == {hostguard.BRIDGE_OPTION: bridge} and bridge.startswith("llbr-")
    assert installs == [True]


def test_a_remote_engine_is_warned_about_not_silently_skipped(creating, monkeypatch):
    api, installs, _ = creating
    monkeypatch.setenv("DOCKER_HOST", "tcp://engine.example:2376")
    said: list[str] = []
    with pytest.warns(hostguard.HostGuardWarning, match=r"tcp://engine.example:2376.*cannot firewall"):
        hostguard.create_lab_network(FakeClient(api), "ll-x-lan", {}, said.append)
    assert installs == [] and said and "iptables -t filter -I INPUT 1 -i llbr+" in said[0]


def test_not_root_on_the_engine_host_is_warned_about(creating, monkeypatch):
    api, installs, sys_net = creating
    monkeypatch.setattr(hostguard.os, "geteuid", lambda: 1000)
    monkeypatch.setattr(hostguard, "bridge_name", lambda: "llbr-0123456789")
    (sys_net / "llbr-0123456789").mkdir()
    with pytest.warns(hostguard.HostGuardWarning, match="not root"):
        hostguard.create_lab_network(FakeClient(api), "ll-x-lan", {})
    assert installs == []
