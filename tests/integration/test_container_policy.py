"""One policy for every container: inspected on the engine during a real grading.

Every container that exists while a submission is graded (lab hosts,
observers, tool containers, the scratch container, the sandbox) is inspected
the moment the engine reports it created, and must satisfy
``hardening.violations``: cap_drop ALL plus only its kind's capabilities,
no-new-privileges, limits, capped logs, no mounts but the sandbox's tmpfs
``/work``, no host namespace, ladderlab's labels; the sandbox's root is
read-only.
"""

from __future__ import annotations

import threading

from ladderlab.course import load_course
from ladderlab.course.labs import load_lab
from ladderlab.environments import hardening
from ladderlab.environments import labels as L
from ladderlab.grading.checks import load_graders
from ladderlab.grading.pipeline import grade

LAB = "sre-5-strace-debugging"  # hosts, a probe, observers, tools (the image's binaries), scratch, sandbox


def test_every_container_of_a_grading_follows_the_policy(images, client, settings):
    lab = load_lab(settings, load_course(settings.course_file), LAB, registry=load_graders(settings.root))
    learner = "policy-inspector"
    seen: dict[str, dict] = {}
    events = client.api.events(decode=True, filters={"type": "container", "event": ["create"],
                                                     "label": [f"{L.LEARNER}={learner}"]})

    def watch() -> None:
        for event in events:
            try:
                seen[event["id"]] = client.api.inspect_container(event["id"])
            except Exception as exc:  # removed before we looked: record it, the test fails on it
                seen[event["id"]] = {"error": repr(exc)}

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    try:
        report, _ = grade(settings, client, lab, lab.source, learner)
    finally:
        events.close()
        thread.join(timeout=10)
    assert report.status == "graded" and report.passed, report.to_json()
    assert not [i for i in seen.values() if "error" in i], seen
    kinds = {i["Config"]["Labels"][L.KIND] for i in seen.values()}
    assert {"host", "observer", "tools", "scratch", "sandbox"} <= kinds, kinds
    problems = [p for i in seen.values() for p in hardening.violations(i)]
    assert problems == []
    sandbox = next(i for i in seen.values() if i["Config"]["Labels"][L.KIND] == "sandbox")
    assert sandbox["HostConfig"]["ReadonlyRootfs"] and sandbox["Config"]["User"] == "1000"
    assert sandbox["HostConfig"]["CapAdd"] in (None, [])


def test_the_policy_check_catches_what_it_forbids(images, client, settings):
    """The inspect check is not vacuous: each relaxation of a real host's inspect is reported."""
    from ladderlab.environments.runtime import up

    env = up(settings, "firewall", client=client, learner="policy-mutant")
    try:
        real = client.api.inspect_container(env.record.hosts["target"].container)
        assert hardening.violations(real) == []
        mutations = {
            "privileged": lambda hc, cfg: hc.update(Privileged=True),
            "CapDrop": lambda hc, cfg: hc.update(CapDrop=[]),
            "SYS_ADMIN": lambda hc, cfg: hc.update(CapAdd=["SYS_ADMIN"]),
            "no no-new-privileges": lambda hc, cfg: hc.update(SecurityOpt=[]),
            "pids": lambda hc, cfg: hc.update(PidsLimit=0),
            "memory": lambda hc, cfg: hc.update(MemorySwap=-1),
            "log config": lambda hc, cfg: hc.update(LogConfig={"Type": "json-file", "Config": {}}),
            "mounts": lambda hc, cfg: hc.update(Binds=["/var/run/docker.sock:/var/run/docker.sock"]),
            "network mode": lambda hc, cfg: hc.update(NetworkMode="host"),
            "labels": lambda hc, cfg: cfg["Labels"].pop(L.OWNER),
        }
        import copy

        for word, mutate in mutations.items():
            bad = copy.deepcopy(real)
            mutate(bad["HostConfig"], bad["Config"])
            found = hardening.violations(bad)
            assert found and any(word.lower() in p.lower() for p in found), (word, found)
    finally:
        env.down()
