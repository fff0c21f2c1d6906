"""A grading fault is never a learner's failure (DESIGN.md, "Verdicts and faults").

Faults are injected for real while a correct submission is graded: an observer
container killed, a lab host stopped from outside the notebook, the engine
unreachable for a few seconds, an image gone. Each gives status ``error``
(nothing a trainer could mistake for a wrong answer), and the same submission
graded again afterwards gets its honest score. The other side of the line: a
notebook that breaks its own host is graded, and fails.
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys

import docker
import pytest
from nbformat.v4 import new_code_cell

from ladderlab.course import load_course
from ladderlab.course.labs import load_lab
from ladderlab.environments import labels as L
from ladderlab.environments.images import image_tags
from ladderlab.grading.checks import CannotJudge, load_graders
from ladderlab.grading.pipeline import grade
from tests.integration.injectors import FlakyEngine, OnEvent

LAB = "sec-1-iptables-hardening"


@pytest.fixture(scope="module")
def lab(settings):
    return load_lab(settings, load_course(settings.course_file), LAB, registry=load_graders(settings.root))


def nothing_left(client, learner):
    flt = {"label": [f"{L.MANAGED}=1", f"{L.LEARNER}={learner}"]}
    return (client.api.containers(all=True, filters=flt), client.api.networks(filters=flt),
            client.api.volumes(filters=flt).get("Volumes") or []) == ([], [], [])


def assert_incomplete(report, *words):
    assert report.status == "error" and not report.passed, report.to_json()
    assert report.error and all(w in report.error for w in words), report.error
    assert not any(c.status == "failed" for c in report.checks), [c.to_json() for c in report.checks]
    data = report.to_json()
    assert data["status"] == "error" and data["error"] == report.error


def assert_honest(settings, client, lab, learner):
    report, _ = grade(settings, client, lab, lab.source, learner)
    assert report.status == "graded" and report.score == lab.max_score and report.passed, report.to_json()
    assert all(c.status == "passed" for c in report.checks)


def test_an_observer_killed_during_grading_is_an_error(images, client, settings, lab):
    learner = "fault-observer"
    # killed once it has proved where it is (its first command, the namespace check, has ended): one killed
    # before that is replaced, and the grading then gives the honest score (a fault absorbed, not this case)
    kill = OnEvent(client, learner, "exec_die", "observer", lambda c, e: c.api.kill(e["id"]))
    with kill:
        report, _ = grade(settings, client, lab, lab.source, learner)
    assert kill.fired, kill.errors
    assert_incomplete(report, "could not judge")
    assert nothing_left(client, learner)
    assert_honest(settings, client, lab, learner)


def test_an_observer_in_another_network_namespace_is_never_read_as_the_hosts(images, client, settings, lab):
    """Every observer that joins a host's namespace must find the one the first found: one that does not (here
    the first was the outsider's) is removed, and the checks that need it cannot judge - never a verdict read
    from another namespace (a firewall with no rules would read as the learner's default-allow)."""
    from ladderlab.environments import runtime
    from ladderlab.grading.checks import evaluate
    from ladderlab.grading.context import LiveContext
    from ladderlab.grading.pipeline import tool_image

    learner = "fault-netns"
    env = runtime.up(settings, "firewall", client=client, learner=learner, lab=LAB, bound=True)
    ctx = LiveContext(env, tool_image(settings, client, "probe"))
    try:
        target = env.record.hosts["target"].container
        ctx._check_joined(target, ctx.observe("outsider"))  # the first observer of target found outsider's
        with pytest.raises(CannotJudge, match="joined network namespace"):
            ctx.observe("target", admin=True)
        assert not client.api.containers(all=True, filters={"name": f"{env.id}-obsa-target"})
        check = next(c for c in lab.checks if c.id == "default-deny")
        verdict = evaluate(ctx, check.fn, {"host": "target"})
        assert verdict.status == "error" and "joined network namespace" in verdict.feedback, verdict
        ctx._netns.clear()  # what the first observer found was wrong; a right one is judged again
        assert evaluate(ctx, check.fn, {"host": "target"}).status == "failed"  # the untouched host allows all
    finally:
        env.down()
    assert nothing_left(client, learner)


def test_a_host_stopped_from_outside_is_an_error(images, client, settings, lab):
    learner = "fault-host"
    # The sandbox is frozen once the notebook is written: the checks start then.
    stop = OnEvent(client, learner, "pause", "sandbox",
                   lambda c, e: c.api.stop(f"ll-{e['Actor']['Attributes'][L.ENV_ID]}-target", timeout=1))
    with stop:
        report, _ = grade(settings, client, lab, lab.source, learner)
    assert stop.fired, stop.errors
    assert_incomplete(report, "host target", "engine-level")
    assert nothing_left(client, learner)
    assert_honest(settings, client, lab, learner)


def test_a_host_the_learners_notebook_broke_is_a_failure(images, client, settings, lab):
    """The learner's side of the line: their own code killed every process of their host."""
    learner = "breaks-own-host"
    nb = copy.deepcopy(lab.source)
    nb.cells = [*lab.source.cells, new_code_cell('lab.sh("target", "kill -KILL -1")')]
    report, _ = grade(settings, client, lab, nb, learner)
    assert report.status == "graded" and not report.passed, report.to_json()
    failed = [c for c in report.checks if c.status == "failed"]
    assert failed and all(c.status in ("failed", "passed") for c in report.checks)
    assert any("host target stopped during grading" in c.feedback for c in failed), [c.feedback for c in failed]
    assert nothing_left(client, learner)


def test_the_engine_unreachable_during_checks_is_an_error(images, client, settings, lab, tmp_path):
    learner = "fault-engine"
    # The first command the checks run in an observer cuts the grader off the engine for 3 s.
    flaky = FlakyEngine(tmp_path, rb"POST /v[0-9.]+/containers/ll-[^/ ]*-obs[^/ ]*/exec", outage=3.0)
    try:
        through = docker.DockerClient(base_url=flaky.url, timeout=60)
        report, _ = grade(settings, through, lab, lab.source, learner)
    finally:
        flaky.close()
    assert flaky.tripped, "the checks never ran a command in an observer"
    assert_incomplete(report)
    assert nothing_left(client, learner)  # teardown waited for the engine to answer again
    assert_honest(settings, client, lab, learner)


def test_a_missing_image_is_an_error_and_the_cli_exits_4(images, client, settings, lab, root, tmp_path):
    learner = "fault-image"
    tag = image_tags(settings, client, lab.environment, {"target"})["target"]
    image = client.images.get(tag)
    repo, _, version = tag.rpartition(":")
    notebook = tmp_path / "solution.ipynb"
    notebook.write_text(json.dumps(lab.source))
    client.api.remove_image(tag)  # the tag goes; the image stays under its other tags
    try:
        report, _ = grade(settings, client, lab, lab.source, learner)
        assert_incomplete(report, "not built")
        r = subprocess.run([sys.executable, "-m", "ladderlab.cli", "grade", LAB, "--notebook", str(notebook),
                            "--student", learner, "--json"], capture_output=True, text=True, cwd=root, timeout=300)
        assert r.returncode == 4, (r.returncode, r.stderr[-2000:])
        data = json.loads(r.stdout)
        assert data["status"] == "error" and "not built" in data["error"] and not data["passed"]
    finally:
        image.tag(repo, version)
    assert nothing_left(client, learner)
    assert_honest(settings, client, lab, learner)


GRADER = """
import sys
from ladderlab.config import Settings
from ladderlab.course import load_course
from ladderlab.environments.engine import connect
from ladderlab.grading.checks import CannotJudge, load_graders
from ladderlab.grading.pipeline import grade
from ladderlab.course.labs import load_lab
settings = Settings.from_env()
lab = load_lab(settings, load_course(settings.course_file), sys.argv[1], registry=load_graders(settings.root))
grade(settings, connect(), lab, lab.source, sys.argv[2])
"""


def test_a_grader_killed_mid_check_leaves_nothing_running(images, client, settings, root):
    """The learner's root hosts do not outlive the grading process (no waiting for the TTL or a reaper)."""
    import os
    import signal
    import time

    learner = "grader-killed"
    proc = subprocess.Popen([sys.executable, "-c", GRADER, LAB, learner], cwd=root)
    kill = OnEvent(client, learner, "pause", "sandbox", lambda c, e: os.kill(proc.pid, signal.SIGKILL))
    try:
        with kill:
            proc.wait(timeout=300)
    finally:
        proc.kill()
    assert kill.fired and proc.returncode == -signal.SIGKILL
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not nothing_left(client, learner):
        time.sleep(0.5)
    assert nothing_left(client, learner), "the environment outlived its grader"
