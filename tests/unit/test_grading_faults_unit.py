"""The logic of the fault line, without Docker: check deadlines, settling verdicts against what
happened to the hosts, the submission digest, the check-suite hash, untrusted JSON."""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import time
from pathlib import Path

import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell

from ladderlab.course import load_course
from ladderlab.course.labs import grader_modules, load_lab
from ladderlab.grading.checks import Verdict, error, fail, load_graders, ok
from ladderlab.grading.pipeline import HostState, judge, settle, submission_hash
from ladderlab.grading.sandbox import load_untrusted_json
from ladderlab.testing import FakeContext

ROOT = Path(__file__).resolve().parents[2]
LAB = "sec-1-iptables-hardening"


@pytest.fixture(scope="module")
def lab(settings):
    return load_lab(settings, load_course(settings.course_file), LAB, registry=load_graders(settings.root))


def test_a_check_past_its_deadline_is_an_error_and_the_others_stand(lab):
    def hangs(ctx, **_):
        time.sleep(5)
        return ok("too late")

    def quick(ctx, **_):
        return fail("the learner's port is open")

    checks = [dataclasses.replace(c, fn=hangs if i == 0 else quick) for i, c in enumerate(lab.checks)]
    slow = dataclasses.replace(lab, checks=checks)
    t0 = time.monotonic()
    verdicts = judge(FakeContext(), slow, {"unwanted_port": 6144, "metrics_port": 9100}, deadline=0.5)
    assert time.monotonic() - t0 < 3  # the grader moved on; the hung thread is left behind
    assert verdicts[0][1].status == "error" and "deadline" in verdicts[0][1].feedback
    assert all(v.status == "failed" for _, v in verdicts[1:])


def verdicts_of(lab, *made):
    return list(zip(lab.checks, made, strict=False))


def test_settle_the_learners_broken_host_is_a_failure_an_outside_stop_is_an_error(lab):
    mixed = verdicts_of(lab, ok("fine"), fail("port open"), error("the grader could not judge: APIError"))
    # nothing happened to the hosts: an error stays an error and makes the grading incomplete
    final, fault = settle(mixed, HostState())
    assert [v.status for _, v in final] == ["passed", "failed", "error"] and "APIError" in fault
    # the learner's code stopped the host: what could not be observed fails, naming the host
    final, fault = settle(mixed, HostState(broken_by_learner={"target": "host target stopped during grading"}))
    assert fault == "" and [v.status for _, v in final] == ["failed", "failed", "failed"]
    assert all("host target stopped" in v.feedback for _, v in final)  # even a pass seen on a dead host
    # a broken host only takes down the checks that name it (default-deny observes target and outsider)
    final, fault = settle(mixed, HostState(broken_by_learner={"monitor": "host monitor stopped during grading"}))
    assert fault == "" and [v.status for _, v in final] == ["passed", "failed", "failed"]
    # stopped from outside: nothing failed stands as the learner's failure, the grading is incomplete
    final, fault = settle(mixed, HostState(disturbed={"target": "host target received an engine-level stop"}))
    assert "engine-level stop" in fault and [v.status for _, v in final] == ["passed", "error", "error"]


def test_the_submission_digest_ignores_what_nbgrader_changes_and_sees_what_the_learner_wrote(lab):
    submitted = copy.deepcopy(lab.source)
    digest = submission_hash(lab, submitted)
    # what nbgrader's own preprocessors do before the Execute step: outputs cleared, check cells restored
    handled = copy.deepcopy(submitted)
    for cell in handled.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    check = next(c for c in handled.cells if c.get("metadata", {}).get("nbgrader", {}).get("grade"))
    check.source = "print('forged')"  # OverwriteCells would put the instructor's back; the digest ignores it
    assert submission_hash(lab, handled) == digest
    # anything the learner authored changes it
    for change in (lambda nb: nb.cells.append(new_code_cell("x = 1")),
                   lambda nb: nb.cells.append(new_markdown_cell("my notes")),
                   lambda nb: setattr(next(c for c in nb.cells if c.get("metadata", {}).get("nbgrader", {})
                                           .get("solution")), "source", "pass")):
        other = copy.deepcopy(submitted)
        change(other)
        assert submission_hash(lab, other) != digest


def test_the_suite_hash_covers_the_graders_a_lab_uses_and_no_other(lab):
    graders = ROOT / "graders"
    used = grader_modules(graders, {c.spec.grader.split(".", 1)[0] for c in lab.checks})
    names = [p.name for p in used]
    assert names == ["__init__.py", "_net.py", "firewall.py"]  # firewall imports its helpers in _net
    expected = hashlib.sha256()
    expected.update((lab.directory / "lab.yaml").read_bytes())
    for check in sorted(lab.checks, key=lambda c: c.id):
        expected.update(check.id.encode() + b"\0" + lab.source_cell(check.grade_id).source.encode() + b"\0")
    for path in used:
        expected.update(path.name.encode() + b"\0" + path.read_bytes())
    assert lab.suite_hash() == expected.hexdigest()


@pytest.mark.parametrize(("raw", "problem"), [
    (b"[" * 70 + b"]" * 70, "nests deeper than 64"),
    (b"\xff\xfe", "not UTF-8"),
    (b'{"a": ', "not valid JSON"),
    (b"1" * 10 + b"e999999", None),  # a float that overflows to inf is still JSON
])
def test_untrusted_json_is_parsed_with_limits(raw, problem):
    problems: list[str] = []
    load_untrusted_json(raw, "answers.json", problems)
    assert (problems == []) if problem is None else any(problem in p for p in problems), problems


def test_an_error_verdict_cannot_be_made_to_pass():
    with pytest.raises(ValueError):
        Verdict(True, "x", 1.0, "error")
    with pytest.raises(ValueError):
        Verdict(False, "x", 0.5, "error")
    with pytest.raises(ValueError):
        Verdict(True, "x", 1.0, "failed")


def test_the_reaper_removes_a_bound_environment_as_soon_as_its_grader_is_gone():
    import socket
    import subprocess

    from ladderlab.environments import labels as L
    from ladderlab.environments.reaper import _why

    gone = subprocess.Popen(["true"])
    gone.wait()
    dead = f"{socket.gethostname()}:{gone.pid}:12345"  # a pid whose process (with those start ticks) is gone
    alive = L.owner_token()
    now = time.time()
    assert _why("ready", dead, now, 900, now, bound=True) == "its grader is gone"
    assert _why("ready", alive, now, 900, now, bound=True) is None  # its grader is still at work
    assert _why("ready", dead, now, 900, now, bound=False) is None  # a learner's own env waits for its expiry


def test_a_sandbox_the_freezer_gives_up_on_is_paused_again_other_errors_are_not_retried():
    from types import SimpleNamespace

    from docker.errors import APIError

    from ladderlab.grading.sandbox import Sandbox

    def box(errors):
        calls = []

        def pause(name):
            calls.append(name)
            if errors:
                raise APIError("500", explanation=errors.pop(0))

        sandbox = object.__new__(Sandbox)
        sandbox.client, sandbox.name = SimpleNamespace(api=SimpleNamespace(pause=pause)), "ll-x-sandbox"
        return sandbox, calls

    sandbox, calls = box(["Cannot pause container: OCI runtime pause failed: unable to freeze"] * 2)
    sandbox._pause(delay=0)
    assert len(calls) == 3
    sandbox, calls = box(["Cannot pause container: OCI runtime pause failed: unable to freeze"] * 4)
    with pytest.raises(APIError):
        sandbox._pause(delay=0)
    assert len(calls) == 4
    sandbox, calls = box(["No such container: ll-x-sandbox"])
    with pytest.raises(APIError):
        sandbox._pause(delay=0)
    assert len(calls) == 1
