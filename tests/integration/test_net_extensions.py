"""Issue 14's engine extensions against the real engine: a network with a prefix and static addresses,
per-host sysctls, /dev/net/tun, and two environments of one spec up at once on different subnets.

The environment is written into a scratch course root (the shared images symlinked in): ``r`` is a
router-like host on two networks with a static offset, sysctls on ``all`` and on ``eth1`` and a tun
device; ``c`` is a plain host on the prefixed network with no static address. The subnet pool is
narrowed to one /27 (two /28s), so the two environments must take one /28 each, whatever order their
networks are created in, and a third finds the pool full.
"""

from __future__ import annotations

import ipaddress
import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml

from ladderlab.config import Settings
from ladderlab.environments import hardening
from ladderlab.environments.runtime import up
from ladderlab.errors import EnvError

from .conftest import leftovers

ROOT = Path(__file__).resolve().parents[2]
POOL = "10.231.200.0/27"  # room for exactly two /28s
READY = [{"log": "ll-start: host ready"}]
ENV = {
    "name": "netext",
    "networks": [{"name": "lan", "prefix": 28}, {"name": "side"}],
    "hosts": {
        "r": {"image": "base", "role": "target", "ssh": False, "capabilities": ["NET_ADMIN"],
              "networks": ["lan", "side"], "addresses": {"lan": 3}, "devices": ["tun"], "ready": READY,
              "sysctls": {"net.ipv4.ip_forward": 1, "net.ipv4.conf.eth1.rp_filter": 2,
                          "net.netfilter.nf_conntrack_udp_timeout": 17},
              "setup": ["echo {addr_r_lan} {net_lan_subnet} > /run/netext"]},
        "c": {"image": "base", "role": "client", "ssh": False, "networks": ["lan"], "ready": READY},
    },
}
# Opens the tun device and makes an interface on it (TUNSETIFF, IFF_TUN | IFF_NO_PI): that needs NET_ADMIN.
TUN = ("import fcntl, os, struct; fd = os.open('/dev/net/tun', os.O_RDWR); "
       "fcntl.ioctl(fd, 0x400454ca, struct.pack('16sH', b'lltest0', 0x1001)); print('tun ok')")
DEVICES = "find /dev -type c -o -type b | sort"


@pytest.fixture()
def netext_root(tmp_path, monkeypatch):
    (tmp_path / "course.yaml").write_text((ROOT / "course.yaml").read_text())
    envs = tmp_path / "environments"
    (envs / "netext").mkdir(parents=True)
    (envs / "_common").symlink_to(ROOT / "environments" / "_common")
    (envs / "netext" / "env.yaml").write_text(yaml.safe_dump(ENV))
    monkeypatch.setenv("LADDERLAB_SUBNET_POOL", POOL)
    return Settings(root=tmp_path, cache_dir=tmp_path / ".cache", ca_bundle=Settings.from_env(ROOT).ca_bundle)


def test_static_addresses_sysctls_tun_and_two_environments_on_different_subnets(netext_root, client, images):
    with ThreadPoolExecutor(2) as pool:
        started = [pool.submit(up, netext_root, "netext", client=client, learner=who) for who in ("ada", "bob")]
    envs = [f.result() for f in started if f.exception() is None]
    try:
        assert len(envs) == 2, [f.exception() for f in started]
        subnets = [ipaddress.IPv4Network(e.record.subnets["lan"]) for e in envs]
        assert subnets[0] != subnets[1] and not subnets[0].overlaps(subnets[1])
        assert all(s.prefixlen == 28 and s.subnet_of(ipaddress.IPv4Network(POOL)) for s in subnets)
        with pytest.raises(EnvError, match="no free /28 subnet"):  # the pool is full: refused, nothing left over
            up(netext_root, "netext", client=client, learner="cy")
        for env, subnet in zip(envs, subnets, strict=True):
            want = str(subnet[3])
            assert env.params["addr_r_lan"] == want and env.params["net_lan_subnet"] == str(subnet)
            assert env.record.learner_params()["addr_r_lan"] == want
            r, c = env.host("r"), env.host("c")
            # the declared offset, seen from outside (the engine) and from inside (the host's own interface)
            inspect = client.api.inspect_container(env.record.hosts["r"].container)
            nets = inspect["NetworkSettings"]["Networks"]
            assert nets[env.record.networks["lan"]]["IPAddress"] == want
            assert f"{want}/28" in r.run("ip -4 -o addr show dev eth0").stdout
            assert r.run("cat /run/netext").stdout.split() == [want, str(subnet)]  # {placeholders} rendered
            # a host without a static address gets one from the upper half; it reaches r at the static one
            dynamic = ipaddress.IPv4Address(env.record.hosts["c"].addresses["lan"])
            assert dynamic in subnet and int(dynamic) - int(subnet.network_address) >= 8
            reach = c.run(f"timeout 3 bash -c 'echo > /dev/tcp/{want}/22' 2>&1; true").stdout
            assert "Connection refused" in reach, reach  # r's kernel answered with a reset: it is there
            # sysctls hold, on all and on the second network's interface
            udp = "/proc/sys/net/netfilter/nf_conntrack_udp_timeout"
            assert r.run(f"cat /proc/sys/net/ipv4/ip_forward /proc/sys/net/ipv4/conf/eth1/rp_filter {udp}").stdout \
                .split() == ["1", "2", "17"]
            assert c.run(f"cat {udp}").stdout.strip() != "17"  # the kernel's default (30) where none is declared
            assert r.run("echo 0 > /proc/sys/net/ipv4/ip_forward").failed  # still read-only for the learner
            # /dev/net/tun opens and makes an interface; it is the only device beyond Docker's defaults
            assert r.run(f'python3 -c "{TUN}"').stdout.strip() == "tun ok"
            r_devices = set(r.run(DEVICES).stdout.split())
            c_devices = set(c.run(DEVICES).stdout.split())
            assert r_devices - c_devices == {"/dev/net/tun"} and "/dev/net/tun" not in c_devices
            assert not {d for d in c_devices if d.startswith(("/dev/sd", "/dev/vd", "/dev/nvme", "/dev/kvm",
                                                              "/dev/fuse", "/dev/mem"))}
            assert inspect["HostConfig"]["Devices"] == [
                {"PathOnHost": "/dev/net/tun", "PathInContainer": "/dev/net/tun", "CgroupPermissions": "rwm"}]
            assert hardening.violations(inspect) == []
            assert hardening.violations(client.api.inspect_container(env.record.hosts["c"].container)) == []
        record = json.loads((netext_root.state_dir / "envs" / envs[0].id / "env.json").read_text())
        assert record["subnets"]["lan"] == str(subnets[0]) and record["addressing"]["addr_r_lan"]
    finally:
        for env in envs:
            env.down()
    for env in envs:
        assert leftovers(client, env.id) == ([], [])
