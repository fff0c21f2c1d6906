"""The container policy has one owner: nothing but ``environments/hardening.py`` creates a container,
and a plan that asks for more than its kind may have is refused before the engine sees it."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from ladderlab.environments import hardening
from ladderlab.environments import labels as L
from ladderlab.errors import EnvError

ROOT = Path(__file__).resolve().parents[2]
STAMP = L.Stamp("e-1", "firewall", "lab", "ada", 2e9, 1e9, "host:1:1")


def test_only_the_hardening_module_creates_containers():
    callers = []
    for path in [*(ROOT / "src").rglob("*.py"), *(ROOT / "graders").rglob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            creates = isinstance(node, ast.Attribute) and node.attr in ("create_container", "create_host_config")
            runs = isinstance(node, ast.Attribute) and node.attr == "run" and \
                isinstance(node.value, ast.Attribute) and node.value.attr == "containers"
            if creates or runs:
                callers.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert callers and all(c.startswith("src/ladderlab/environments/hardening.py") for c in callers), callers


def plan(**changes):
    base = {"kind": "observer", "name": "ll-e-1-obs-target", "image": "probe", "stamp": STAMP, "host": "obs",
            "network": "container:ll-e-1-target", "capabilities": ["NET_RAW"]}
    return hardening.Plan(**{**base, **changes})


@pytest.mark.parametrize(("changes", "words"), [
    ({"capabilities": ["SYS_ADMIN"]}, "may not have SYS_ADMIN"),
    ({"kind": "sandbox", "capabilities": ["NET_RAW"]}, "may not have NET_RAW"),
    ({"kind": "tools", "capabilities": ["NET_ADMIN"]}, "may not have NET_ADMIN"),
    ({"network": "host"}, "is not ladderlab's"),
    ({"network": "bridge"}, "is not ladderlab's"),
    ({"network": "container:someone-else"}, "is not ladderlab's"),
    ({"pid_namespace_of": "host"}, "pid namespace"),
    ({"name": "web"}, "does not start with ll-"),
    ({"work_volume": "ll-e-1-work"}, "only the sandbox"),
    ({"kind": "sandbox", "capabilities": [], "work_volume": "/var/run/docker.sock"}, "only the sandbox"),
    ({"memory": 0}, "must be positive"),
    ({"kind": "privileged"}, "unknown container kind"),
])
def test_plans_beyond_the_policy_are_refused(changes, words):
    bad = plan(**changes)
    assert any(words in p for p in bad.problems()), bad.problems()
    with pytest.raises(EnvError, match="refused by ladderlab's policy"):
        hardening.create(None, bad)  # type: ignore[arg-type]  # refused before any engine call


def test_a_plan_within_the_policy_has_no_problems_and_carries_its_kind():
    good = plan()
    assert good.problems() == []
    assert good.labels()[L.KIND] == "observer" and good.labels()[L.ENV_ID] == "e-1"
    assert plan(kind="host", network="ll-e-1-lan", capabilities=["NET_ADMIN"]).problems() == []


@pytest.mark.parametrize(("changes", "words"), [
    ({"devices": ["tun"]}, "observer may have no devices"),
    ({"kind": "host", "network": "ll-e-1-lan", "devices": ["/dev/sda"]}, "device '/dev/sda' is not allowed"),
    ({"kind": "host", "network": "ll-e-1-lan", "devices": ["fuse"]}, "device 'fuse' is not allowed"),
    ({"sysctls": {"net.ipv4.ip_forward": "1"}}, "observer may set no sysctls"),
    ({"kind": "host", "network": "ll-e-1-lan", "sysctls": {"kernel.core_pattern": "|/x"}}, "is not allowed"),
    ({"kind": "host", "network": "ll-e-1-lan", "sysctls": {"net.ipv4.ip_forward": "7"}}, "must be one of"),
    ({"kind": "host", "network": "none", "ipv4_address": "10.200.0.5"}, "needs a ladderlab network"),
])
def test_devices_sysctls_and_addresses_beyond_the_policy_are_refused(changes, words):
    bad = plan(**changes)
    assert any(words in p for p in bad.problems()), bad.problems()


def test_a_host_with_tun_sysctls_and_a_static_address_is_within_the_policy():
    good = plan(kind="host", network="ll-e-1-lan", capabilities=["NET_ADMIN"], devices=["tun"],
                sysctls={"net.ipv4.ip_forward": "1"}, ipv4_address="10.200.0.5")
    assert good.problems() == []


def _inspect(kind="host", devices=None, sysctls=None):
    tun = {"PathOnHost": "/dev/net/tun", "PathInContainer": "/dev/net/tun", "CgroupPermissions": "rwm"}
    return {"Name": "/ll-e-1-a", "Config": {"Labels": {L.MANAGED: "1", L.ENV_ID: "e-1", L.OWNER: "h:1:1",
                                                         L.KIND: kind}},
            "HostConfig": {"CapDrop": ["ALL"], "CapAdd": ["NET_ADMIN"], "SecurityOpt": ["no-new-privileges:true"],
                           "Init": True, "PidsLimit": 64, "Memory": 1, "MemorySwap": 1, "NetworkMode": "ll-e-1-lan",
                           "LogConfig": {"Type": "json-file", "Config": dict(hardening.LOG_CONFIG)},
                           "Devices": [tun] if devices is None else devices,
                           "Sysctls": {"net.ipv4.ip_forward": "1"} if sysctls is None else sysctls}}


def test_the_inspect_check_allows_tun_and_allowlisted_sysctls_on_hosts_only():
    assert hardening.violations(_inspect()) == []
    sda = {"PathOnHost": "/dev/sda", "PathInContainer": "/dev/sda", "CgroupPermissions": "rwm"}
    tun_as_sda = {"PathOnHost": "/dev/sda", "PathInContainer": "/dev/net/tun", "CgroupPermissions": "rwm"}
    for bad, word in [(_inspect(devices=[sda]), "devices"), (_inspect(devices=[tun_as_sda]), "devices"),
                      (_inspect(kind="observer", sysctls={}), "devices"),
                      (_inspect(sysctls={"kernel.shmmax": "1"}), "sysctls"),
                      (_inspect(kind="observer", devices=[]), "sysctls")]:
        found = hardening.violations(bad)
        assert found and any(word in p for p in found), (bad["HostConfig"], found)
