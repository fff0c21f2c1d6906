"""Cluster mode on a real Swarm: three engines in network namespaces (``swarmrig``), the host's engine untouched.

One rig for the module (about 30 s, most of it loading images into the two workers); the tests run in
file order and the last one kills a worker, then proves nothing is left anywhere.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import threading
import time

import pytest

from ladderlab.course import load_course
from ladderlab.course.labs import load_lab
from ladderlab.environments import fleet, hardening, runtime, swarmrig
from ladderlab.environments import labels as L
from ladderlab.errors import EnvError, ImageError, UsageError
from ladderlab.grading.checks import load_graders
from ladderlab.grading.pipeline import grade
from ladderlab.grading.selftest import released, with_decoy

pytestmark = pytest.mark.skipif(swarmrig.available() is not None, reason=str(swarmrig.available()))

ENV = "firewall"
LAB = "sec-1-iptables-hardening"
WORKERS = ("llsw2", "llsw3")


def _iptables() -> str:
    return subprocess.run(["iptables-save"], capture_output=True, text=True, check=False).stdout


def _rules(text: str) -> list[str]:
    return sorted(line for line in text.splitlines() if line.startswith("-A"))


@pytest.fixture(scope="module")
def rig(images, client, settings, tmp_path_factory):
    before = {"iptables": _rules(_iptables()), "containers": {c["Id"] for c in client.api.containers(all=True)}}
    r = swarmrig.SwarmRig(tmp_path_factory.mktemp("swarm"))
    old = os.environ.get(fleet.CLUSTER_VARIABLE)
    try:
        r.start()
        spec = runtime.load_spec(settings, ENV)
        tags = runtime.image_set(settings, client, spec)
        r.load_images(tags, list(WORKERS))
        os.environ[fleet.CLUSTER_VARIABLE] = str(r.cluster_file)
        fl = fleet.get()
        assert fl is not None
        assert fl.push(client, ENV, tags, nodes=list(WORKERS), say=lambda _m: None) == {
            w: "had them" for w in WORKERS}
        yield r
    finally:
        if old is None:
            os.environ.pop(fleet.CLUSTER_VARIABLE, None)
        else:
            os.environ[fleet.CLUSTER_VARIABLE] = old
        r.stop()
    assert r.leftovers() == []
    assert _rules(_iptables()) == before["iptables"], "the host's iptables rules changed"
    assert {c["Id"] for c in client.api.containers(all=True)} == before["containers"], "the host's engine changed"


def _exec(cmd: list[str], container: str, client) -> str:
    ex = client.api.exec_create(container, cmd)
    return client.api.exec_start(ex["Id"]).decode(errors="replace")


def test_environments_spread_over_the_workers_hardened_and_without_egress(rig, client, settings):
    fl = fleet.get()
    envs = [runtime.up(settings, ENV, client=client, learner=f"spread{i}") for i in range(4)]
    try:
        nodes = {e.record.node for e in envs}
        assert nodes == set(WORKERS), nodes
        assert all(e.record.docker_host == rig.url(e.record.node) for e in envs)
        listed = {s.id: s for s in runtime.list_envs(settings, client)}
        assert {e.id: listed[e.id].node for e in envs} == {e.id: e.record.node for e in envs}
        for node in WORKERS:
            nc = fl.client(node)
            found = nc.api.containers(filters={"label": f"{L.MANAGED}=1"})
            kinds = {c["Labels"][L.KIND] for c in found}
            assert kinds == {"host", "placement"}, kinds
            for c in found:
                inspect = nc.api.inspect_container(c["Id"])
                assert hardening.violations(inspect) == [], inspect["Name"]
                # no-new-privileges for real, whoever set it (the container or the node's daemon)
                assert "NoNewPrivs:\t1" in _exec(["cat", "/proc/1/status"], c["Id"], nc), inspect["Name"]
        host = envs[0].host("target")
        manager = rig.address(rig.names[0])
        probe = ("for dest in %s 1.1.1.1; do timeout 3 bash -c \"exec 3<>/dev/tcp/$dest/2377\" && echo REACHED $dest;"
                 " done; ip route")
        out = host.run(probe % manager).stdout
        assert "REACHED" not in out and "default" not in out, out
    finally:
        for e in envs:
            e.down()
    for node in WORKERS:
        assert fl.client(node).api.containers(all=True, filters={"label": f"{L.MANAGED}=1"}) == []
    assert fl.manager().api.services(filters={"label": f"{L.MANAGED}=1"}) == []
    assert fl.manager().api.networks(filters={"label": f"{L.MANAGED}=1"}) == []


def test_a_grading_on_a_remote_node_scores_right(rig, client, settings):
    lab = load_lab(settings, load_course(settings.course_file), LAB, registry=load_graders(settings.root))
    report, _ = grade(settings, client, lab, lab.source, "remote-solution")
    assert report.status == "graded" and report.score == report.max_score, report.to_json()
    decoy = next(d for d in lab.decoys if d.name == "ssh-only")
    report, _ = grade(settings, client, lab, with_decoy(lab, decoy), "remote-decoy")
    assert report.status == "graded" and set(report.failed()) == set(decoy.spec.must_fail), report.to_json()
    report, _ = grade(settings, client, lab, released(lab), "remote-untouched")
    assert report.status == "graded" and report.score == 0, report.to_json()


def test_no_room_and_no_images_are_clear_refusals(rig, client, settings):
    fl = fleet.get()
    spec = runtime.load_spec(settings, ENV)
    key = fleet.images_key(runtime.image_set(settings, client, spec))
    probe = runtime.tool_image(settings, client, "probe")
    with pytest.raises(fleet.ClusterFull, match="no room"):
        fl.place(env_id="big-1", env=ENV, key=key, image=probe, cpus=400, memory=64 << 20, labels={
            L.MANAGED: "1", L.ENV_ID: "big-1"}, network=None)
    with pytest.raises(ImageError, match="ladderlab fleet push sre"):
        fl.place(env_id="noimg-1", env="sre", key=key, image=probe, cpus=0.1, memory=64 << 20, labels={
            L.MANAGED: "1", L.ENV_ID: "noimg-1"}, network=None)
    assert fl.manager().api.services(filters={"label": f"{L.MANAGED}=1"}) == []


def test_drain_then_a_killed_node(rig, client, settings):
    """Draining llsw2 keeps its environment running and sends new ones to llsw3; killing llsw3 makes its
    environment lost (told, and started again on llsw2) and the grading on it an error; then nothing is left."""
    fl = fleet.get()
    manager = fl.manager()
    lab = load_lab(settings, load_course(settings.course_file), LAB, registry=load_graders(settings.root))

    def availability(node: str, value: str) -> None:
        n = manager.nodes.get(node)
        spec = n.attrs["Spec"]
        spec["Availability"] = value
        n.update(spec)

    first = runtime.up(settings, ENV, client=client, learner="drain-a")
    other = next(w for w in WORKERS if w != first.record.node)
    availability(first.record.node, "drain")
    try:
        time.sleep(2)
        assert first.host("target").run("true").succeeded  # a drained node's environment runs on
        kept = runtime.up(settings, ENV, client=client, learner="lost-b", reuse=True)
        assert kept.record.node == other
        # a grading placed on `other`, whose node dies under it
        result: dict[str, object] = {}
        thread = threading.Thread(target=lambda: result.update(r=grade(settings, client, lab, lab.source,
                                                                       "killed-grading")[0]))
        thread.start()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not fl.client(other).api.containers(
                filters={"label": [f"{L.LEARNER}=killed-grading", f"{L.KIND}=sandbox"]}):
            time.sleep(0.2)
        rig.kill(other)
        thread.join(timeout=300)
        report = result["r"]
        assert report.status == "error" and report.error, report.to_json()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and fl.node_state(other) != "down":
            time.sleep(1)
        assert fl.node_state(other) == "down"
        assert {s.id: s.status for s in runtime.list_envs(settings, client)}[kept.id] == "lost"
    finally:
        availability(first.record.node, "active")
    told: list[str] = []
    again = runtime.up(settings, ENV, client=client, learner="lost-b", reuse=True, say=told.append)
    assert again.id != kept.id and again.record.node == first.record.node
    assert any("lost" in line for line in told), told
    again.down()
    first.down()
    from ladderlab.environments.reaper import reap

    # Swarm keeps the overlay networks of the environments on the dead node "in use" (their attachments)
    # while the node is only down: the reaper removes the placements and records, and names the node
    with contextlib.suppress(EnvError):
        reap(settings, client, grace=0)
    assert kept.id not in {s.id for s in runtime.list_envs(settings, client) if s.status == "lost"}
    held = {n["Name"] for n in manager.api.networks(filters={"label": f"{L.MANAGED}=1"})}
    # (a network released while its node was not yet marked down is named with the node as it was then)
    assert held and all(f"held by {other} (" in fl.stuck.get(name, "") for name in held), (held, fl.stuck)
    assert any(f"`ladderlab fleet forget {other}` frees it" in fl.stuck[name] for name in held), fl.stuck
    # a node that is up is never forgotten; the dead one is, and with it what Swarm held for it
    with pytest.raises(UsageError, match="not down"):
        fl.forget(first.record.node)
    released = fl.forget(other)
    assert kept.id in released, (released, held)
    assert manager.api.networks(filters={"label": f"{L.MANAGED}=1"}) == [], fl.stuck
    assert other not in {n.name for n in fl.nodes()}
    for node in rig.names:
        if node != other:
            c = fl.client(node)
            assert c.api.containers(all=True, filters={"label": f"{L.MANAGED}=1"}) == [], node
            assert (c.api.volumes(filters={"label": f"{L.MANAGED}=1"}).get("Volumes") or []) == [], node
    assert manager.api.services(filters={"label": f"{L.MANAGED}=1"}) == []
