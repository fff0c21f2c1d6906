"""From lab hosts and the grading sandbox, nothing on the grading host is reachable.

Lab networks are ``--internal``, but the host's own addresses (the bridge gateway,
docker0, eth0) answer on every bridge: before hostguard, a listener on 0.0.0.0 on
the host was reachable from every lab host. This runs a 0.0.0.0 control listener
and the real JupyterLab (bound to 127.0.0.1 the way ``make lab`` does) and probes
both from every lab host and from a grading sandbox, on every address of the host
(``ip -j addr`` plus every Docker network's gateway where the engine reports one).
Positive controls show the probe works: lab hosts still reach each other by name
(Docker's embedded DNS), and the host still reaches them.
"""

from __future__ import annotations

import ipaddress
import json
import socket
import subprocess
import time
import urllib.request

import nbformat
import pytest

from ladderlab.course.labs import SandboxSpec
from ladderlab.environments import hostguard
from ladderlab.environments.runtime import up
from ladderlab.grading.sandbox import LEARNER_UID, Sandbox
from ladderlab.labserver import jupyter_command

# Every (address, port) at once, each with a 2 s budget: prints the ones that accepted.
PROBE = """
import json, socket, sys
from concurrent.futures import ThreadPoolExecutor
def reach(target):
    try:
        socket.create_connection((target[0], int(target[1])), timeout=2).close()
        return True
    except OSError:
        return False
targets = json.loads(sys.argv[1])
with ThreadPoolExecutor(len(targets)) as pool:
    print(json.dumps([t for t, ok in zip(targets, pool.map(reach, targets)) if ok]))
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _reached(run, targets: list[tuple[str, int]]) -> list[list]:
    result = run("python3 -c %s %s", PROBE, json.dumps(targets))
    assert result.rc == 0, f"the probe itself failed: {result.stderr[-500:]}"
    return json.loads(result.stdout.strip().splitlines()[-1])


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


class _SandboxRun:
    """``run`` for the grading sandbox container: the same user and limits grading uses."""

    def __init__(self, client, name: str) -> None:
        self.client, self.name = client, name

    def __call__(self, command: str, *args: str):
        from ladderlab.environments.transports import DockerTransport

        return DockerTransport(self.client, self.name, user=str(LEARNER_UID)).run(command, *args, timeout=60)


def test_a_host_listener_on_0_0_0_0_is_unreachable_from_lab_hosts_and_the_sandbox(settings, client, images,
                                                                                    jupyter):
    control = socket.create_server(("0.0.0.0", 0), backlog=64)  # noqa: S104 - the host service that must stay hidden
    control_port = control.getsockname()[1]
    box = Sandbox(settings, client, SandboxSpec())
    env = up(settings, "firewall", client=client, learner="isolation",
             on_networks=lambda record: box.create(record, nbformat.v4.new_notebook()))
    try:
        addresses = [a for a in hostguard.host_addresses(client) if ipaddress.ip_address(a).version == 4]
        for net in env.record.networks.values():
            bridge = hostguard.inspect_bridge(client, net)
            assert bridge.startswith("llbr-"), f"{net} is not on a ladderlab bridge"
            gateway = client.api.inspect_network(net)["IPAM"]["Config"][0].get("Gateway", "").split("/")[0]
            assert not gateway or gateway in addresses, f"the gateway {gateway} of {net} was not probed"
        assert len(addresses) >= 2, f"found too few host addresses to probe: {addresses}"
        # Containers have IPv6 disabled, so the IPv4 addresses are the whole attack surface here.
        targets = [(a, p) for a in addresses for p in (control_port, jupyter)]

        runs = {name: env.host(name).run for name in env.record.hosts}
        runs["sandbox"] = _SandboxRun(client, box.name)
        for name, run in runs.items():
            assert _reached(run, targets) == [], f"{name} reaches a service on the grading host"

        # Controls: the probe sees what it should (a peer by name, through Docker's DNS), and the host
        # still reaches lab hosts (their replies pass the host firewall).
        target = env.record.hosts["target"]
        assert _reached(runs["outsider"], [("target", 22)]) == [["target", 22]]
        assert _reached(runs["sandbox"], [("target", 22)]) == [["target", 22]]
        socket.create_connection((target.address, 22), timeout=5).close()
    finally:
        control.close()
        env.down()
