"""From a lab host, nothing ladderlab serves on the host machine is reachable.

Lab networks are ``--internal`` but still reach the host's own addresses, so
the rule is that the project binds 127.0.0.1. This runs the real JupyterLab the
way ``make lab`` does and probes it from inside a lab host on every address
the host has. A control listener on 0.0.0.0 proves the probe would notice.
"""

from __future__ import annotations

import socket
import subprocess
import time
import urllib.request

import pytest

from ladderlab.environments.runtime import up
from ladderlab.labserver import jupyter_command


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _host_addresses(client, env) -> set[str]:
    addrs = set(subprocess.run(["hostname", "-I"], capture_output=True, text=True, check=True).stdout.split())
    for net in env.record.networks.values():
        for cfg in client.api.inspect_network(net)["IPAM"]["Config"] or []:
            if cfg.get("Gateway"):
                addrs.add(cfg["Gateway"])
    return {a for a in addrs if ":" not in a}


def _reachable(env, host, address, port) -> bool:
    probe = "import socket,sys; socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=2); print('open')"
    return env.host(host).run("python3 -c %s %s %s", probe, address, port).stdout.strip() == "open"


@pytest.fixture()
def jupyter(settings):
    port = _free_port()
    proc = subprocess.Popen(jupyter_command(settings, port, token="isolation-test"),  # noqa: S106 - a throwaway test token
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/api", timeout=1)
            break
        except OSError:
            time.sleep(0.3)
    else:
        proc.kill()
        pytest.fail("JupyterLab did not start")
    yield port
    proc.terminate()
    proc.wait(timeout=20)


def test_project_services_on_the_host_are_unreachable_from_lab_hosts(settings, client, images, jupyter):
    env = up(settings, "firewall", client=client, learner="isolation")
    control = socket.create_server(("0.0.0.0", 0))  # noqa: S104 - the control that must be reachable
    control_port = control.getsockname()[1]
    try:
        addresses = _host_addresses(client, env)
        assert addresses, "found no host address to probe"
        gateway = next(iter(client.api.inspect_network(next(iter(env.record.networks.values())))["IPAM"]
                            ["Config"]))["Gateway"]
        assert _reachable(env, "outsider", gateway, control_port), "the probe cannot see even a 0.0.0.0 listener"
        for host in env.record.hosts:
            for address in sorted(addresses):
                assert not _reachable(env, host, address, jupyter), f"{host} reaches JupyterLab at {address}"
    finally:
        control.close()
        env.down()
