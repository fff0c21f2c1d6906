"""Each of the four domain environments: up, a command on every host over both
transports, hardening read back from ``docker inspect``, down with nothing left."""

from __future__ import annotations

import pytest

from ladderlab.environments.runtime import up
from ladderlab.environments.spec import CAPABILITY_ALLOWLIST, discover, load_env_spec

from .conftest import leftovers

ENVS = ["firewall", "dns-tls", "slo", "debug"]


@pytest.fixture(params=ENVS)
def env(request, settings, client, images):
    environment = up(settings, request.param, client=client, learner="it-tester")
    yield environment
    environment.down()


def test_every_host_answers_over_docker_exec_and_ssh(env):
    for name in env.record.hosts:
        via_docker = env.host(name, "docker").run("hostname && id -u")
        via_ssh = env.host(name, "ssh").run("hostname && id -u")
        assert via_docker.rc == 0 and via_ssh.rc == 0, (name, via_docker, via_ssh)
        assert via_docker.stdout == via_ssh.stdout == f"{name}\n0\n"


def test_hosts_are_hardened(env, client, settings):
    spec = load_env_spec(discover(settings.environments_dir)[env.record.env])
    for name, info in env.record.hosts.items():
        c = client.api.inspect_container(info.container)
        hc = c["HostConfig"]
        assert hc["CapDrop"] == ["ALL"]
        assert set(hc["CapAdd"] or []) <= CAPABILITY_ALLOWLIST
        assert set(hc["CapAdd"] or []) == set(spec.hosts[name].capabilities)
        assert hc["Privileged"] is False
        assert "no-new-privileges:true" in (hc["SecurityOpt"] or [])
        assert not any("seccomp=unconfined" in o for o in hc["SecurityOpt"] or [])
        assert hc["PidsLimit"] and hc["PidsLimit"] > 0
        assert hc["Memory"] > 0 and hc["MemorySwap"] == hc["Memory"]
        assert hc["NanoCpus"] > 0
        assert hc["LogConfig"] == {"Type": "json-file", "Config": {"max-size": "1m", "max-file": "2"}}
        assert hc["NetworkMode"] not in ("host", "bridge", "default")
        assert hc["PidMode"] in ("", "private") and hc["IpcMode"] == "private" and hc["UTSMode"] == ""
        assert not hc["Devices"]
        assert all("docker.sock" not in m["Source"] for m in c["Mounts"])
        assert not hc["Binds"]
        for net_name in c["NetworkSettings"]["Networks"]:
            assert client.api.inspect_network(net_name)["Internal"] is True
        effective = env.host(name).run("grep CapEff /proc/1/status").stdout
        assert int(effective.split()[1], 16) & (1 << 21) == 0, "CAP_SYS_ADMIN must not be effective"


def test_hosts_have_no_route_out(env):
    name = next(iter(env.record.hosts))
    result = env.host(name).run("curl -s -m 3 -o /dev/null http://1.1.1.1/ || echo unreachable")
    assert "unreachable" in result.stdout


def test_hosts_find_each_other_by_name(env):
    names = list(env.record.hosts)
    a, b = names[0], names[-1]
    result = env.host(a).run("getent hosts %s", b)
    assert result.rc == 0 and env.record.hosts[b].address in result.stdout


def test_down_leaves_nothing_and_is_idempotent(settings, client, images):
    env = up(settings, "firewall", client=client, learner="it-tester")
    assert env.down() == 4  # 3 containers + 1 network
    assert leftovers(client, env.id) == ([], [])
    assert env.down() == 0
