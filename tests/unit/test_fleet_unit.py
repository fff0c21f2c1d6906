"""Cluster mode's logic without Docker: the cluster file's errors, the image-set key, the placement policy."""

from __future__ import annotations

import pytest

from ladderlab.environments import fleet, hardening
from ladderlab.environments import labels as L
from ladderlab.errors import UsageError

GOOD = "manager: unix:///run/a.sock\nnodes:\n  a: unix:///run/a.sock\n  b: ssh://lab@10.0.0.2\n"


def write(tmp_path, text):
    path = tmp_path / "cluster.yaml"
    path.write_text(text)
    return path


def test_a_good_cluster_file(tmp_path):
    cfg = fleet.load_config(write(tmp_path, GOOD + "constraints: [node.role==worker]\ncpu_reservation: 0.5\n"))
    assert cfg.nodes == {"a": "unix:///run/a.sock", "b": "ssh://lab@10.0.0.2"}
    assert cfg.constraints == ("node.role==worker",) and cfg.cpu_reservation == 0.5


@pytest.mark.parametrize(("text", "field"), [
    ("nodes: {a: unix:///x}\n", "manager"),
    ("manager: http://x\nnodes: {a: unix:///x}\n", "manager"),
    ("manager: unix:///x\n", "nodes"),
    ("manager: unix:///x\nnodes: {a: /run/x.sock}\n", "nodes.a"),
    (GOOD + "constraints: [worker]\n", "constraints"),
    (GOOD + "cpu_reservation: 2\n", "cpu_reservation"),
    (GOOD + "place_timeout: -1\n", "place_timeout"),
    (GOOD + "managers: []\n", "managers"),
])
def test_a_bad_cluster_file_names_the_file_and_field(tmp_path, text, field):
    path = write(tmp_path, text)
    with pytest.raises(UsageError) as err:
        fleet.load_config(path)
    assert str(err.value).startswith(f"{path}: {field}:"), err.value


def test_the_image_key_is_the_set_of_tags():
    assert fleet.images_key(["b:1", "a:1", "a:1"]) == fleet.images_key(["a:1", "b:1"])
    assert fleet.images_key(["a:1", "b:1"]) != fleet.images_key(["a:1", "b:2"])


def placement(**hc):
    host_config = {"CapDrop": ["ALL"], "CapAdd": None, "Init": True, "PidsLimit": 16, "Memory": 32 << 20,
                   "MemorySwap": 64 << 20, "ReadonlyRootfs": True, "NetworkMode": "default",
                   "LogConfig": {"Type": "json-file", "Config": dict(hardening.LOG_CONFIG)}, "CgroupnsMode": "private"}
    host_config.update(hc)
    return {"Name": "/ll-x-place.1.abc", "HostConfig": host_config,
            "Config": {"Labels": {L.MANAGED: "1", L.ENV_ID: "x", L.OWNER: "1:2", L.KIND: "placement"}},
            "NetworkSettings": {"Networks": {"ll-x-lan": {}}}}


def test_a_swarm_placement_task_meets_its_policy_and_no_more():
    assert hardening.violations(placement()) == []
    assert hardening.violations(placement(CapAdd=["NET_ADMIN"]))
    assert hardening.violations(placement(ReadonlyRootfs=False))
    assert hardening.violations(placement(MemorySwap=-1))
    assert hardening.violations(placement(CgroupnsMode="host"))
    outside = placement()
    outside["NetworkSettings"]["Networks"] = {"bridge": {}}
    assert hardening.violations(outside)
    host = placement()  # what a placement may skip, a host may not
    host["Config"]["Labels"][L.KIND] = "host"
    assert any("no-new-privileges" in p for p in hardening.violations(host))
