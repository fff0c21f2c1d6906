"""Checks that act on the environment (``@check(disruptive=True)``), without Docker: when they run, what
they may do, how the engine events they cause are told apart from a disturbance, and decoys that exist
only for some seeded variants (``when:``). The real engine's side is in
tests/integration/test_disruptive.py."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import shutil
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from ladderlab.config import Settings
from ladderlab.course import load_course
from ladderlab.course.labs import load_lab
from ladderlab.errors import ConfigError, UsageError
from ladderlab.grading.checks import DISRUPTIVE, REGISTRY, Listener, check, evaluate, is_disruptive, load_graders, ok
from ladderlab.grading.context import LiveContext
from ladderlab.grading.pipeline import host_state, judge
from ladderlab.grading.selftest import Learner, plan
from ladderlab.testing import FakeContext, FakeRunner

LAB = "sre-5-strace-debugging"


@pytest.fixture(scope="module")
def lab(settings):
    return load_lab(settings, load_course(settings.course_file), LAB, registry=load_graders(settings.root))


def test_the_decorator_marks_a_check_disruptive_and_registers_both_forms(lab):
    @check
    def calm_one(ctx):
        return ok("seen")

    @check(disruptive=True)
    def rough_one(ctx):
        return ok("restarted")

    try:
        assert REGISTRY[f"{__name__.rsplit('.', 1)[-1]}.calm_one"] is calm_one
        assert not is_disruptive(calm_one) and is_disruptive(rough_one)
    finally:
        for name in ("calm_one", "rough_one"):
            REGISTRY.pop(f"{__name__.rsplit('.', 1)[-1]}.{name}", None)
    assert is_disruptive(REGISTRY["tracing.survives_restart"]) and not is_disruptive(REGISTRY["tracing.http_ok"])


class ActingContext(FakeContext):
    """A fake that, like LiveContext, allows actions only inside ``acting()``."""

    def __init__(self) -> None:
        super().__init__()
        self.may_act = False

    @contextlib.contextmanager
    def acting(self):
        self.may_act = True
        try:
            yield
        finally:
            self.may_act = False


def test_disruptive_checks_run_after_every_other_check_has_finished_one_at_a_time(lab):
    log: list[tuple[str, str, float, bool]] = []
    lock = threading.Lock()

    def logged(kind, seconds):
        def fn(ctx, **_):
            with lock:
                log.append((kind, "start", time.monotonic(), ctx.may_act))
            time.sleep(seconds)
            with lock:
                log.append((kind, "end", time.monotonic(), ctx.may_act))
            return ok(kind)

        return fn

    calm, rough = logged("calm", 0.3), logged("rough", 0.1)
    setattr(rough, DISRUPTIVE, True)
    # two disruptive checks (the first and the last of the lab), the others calm
    last = len(lab.checks) - 1
    checks = [dataclasses.replace(c, fn=rough if i in (0, last) else calm) for i, c in enumerate(lab.checks)]
    ctx = ActingContext()
    verdicts = judge(ctx, dataclasses.replace(lab, checks=checks), {"fault": "none", "dep_port": 7000})
    assert [c.id for c, _ in verdicts] == [c.id for c in lab.checks]  # the lab's order, whatever ran when
    assert all(v.passed for _, v in verdicts)
    calm_end = max(t for kind, edge, t, _ in log if kind == "calm" and edge == "end")
    rough = [(edge, t, acting) for kind, edge, t, acting in log if kind == "rough"]
    assert [e for e, _, _ in rough] == ["start", "end", "start", "end"]  # one after the other, never together
    assert all(t >= calm_end for _, t, _ in rough)  # after every observation of the learner's state
    assert all(acting for _, _, acting in rough)  # allowed to act while they run
    assert not any(acting for kind, _, _, acting in log if kind == "calm") and not ctx.may_act


def test_a_disruptive_check_past_its_deadline_is_an_error(lab):
    def hangs(ctx, **_):
        time.sleep(3)
        return ok("too late")

    setattr(hangs, DISRUPTIVE, True)
    checks = [dataclasses.replace(c, fn=hangs) if c.id == "survives-restart" else c for c in lab.checks]
    only = ["survives-restart"]
    t0 = time.monotonic()
    (found,) = judge(ActingContext(), dataclasses.replace(lab, checks=checks), {}, only=only, deadline=0.3)
    assert time.monotonic() - t0 < 2 and found[1].status == "error" and "deadline" in found[1].feedback


def _live(**roles):
    hosts = {name: SimpleNamespace(role=role, container=f"ll-e-{name}", addresses={"lan": "10.0.0.2"})
             for name, role in roles.items()}
    env = SimpleNamespace(id="e", client=None, record=SimpleNamespace(hosts=hosts, networks={"lan": "ll-e-lan"}),
                          params={})
    return LiveContext(env, "probe-image")


def test_the_live_context_acts_only_inside_a_disruptive_check_and_never_on_a_probe():
    ctx = _live(svc="target", probe="probe")
    with pytest.raises(UsageError, match=r"only a check registered with @check\(disruptive=True\)"):
        ctx.restart("svc")
    with pytest.raises(UsageError, match="only a check registered"):
        ctx.put_file("svc", "/etc/x", b"x")
    with ctx.acting():
        with pytest.raises(UsageError, match="probe host"):
            ctx.restart("probe")
        with pytest.raises(UsageError, match="no host 'nope'"):
            ctx.restart("nope")
        for bad in ("etc/x", "/etc/../x"):
            with pytest.raises(UsageError, match="absolute path"):
                ctx.put_file("svc", bad, b"x")
    assert ctx.actions == []  # nothing was done


class _Events:
    """A stand-in for the engine's API: canned events and every host running."""

    def __init__(self, events):
        self._events = events

    def events(self, **_):
        return iter(self._events)

    def inspect_container(self, _):
        return {"State": {"Running": True, "Paused": False}}


def test_engine_events_inside_a_checks_own_restart_are_not_a_disturbance():
    env = SimpleNamespace(record=SimpleNamespace(hosts={"svc": SimpleNamespace(container="ll-e-svc"),
                                                        "cache": SimpleNamespace(container="ll-e-cache")}))
    start = time.time_ns()

    def event(host, action, at):
        return {"Action": action, "timeNano": at, "time": at // 10**9,
                "Actor": {"Attributes": {"name": f"ll-e-{host}"}}}

    ours = [("svc", "restart", start, start + 2 * 10**9), ("cache", "restart", start, start + 2 * 10**9)]
    inside = [event("svc", "kill", start + 10**8), event("cache", "kill", start + 10**8),
              event("svc", "start", start + 10**9)]
    client = SimpleNamespace(api=_Events(inside))
    assert host_state(client, env, start / 1e9, ours=ours).disturbed == {}
    # the same events without the check's record: a disturbance nobody asked for
    assert set(host_state(client, env, start / 1e9).disturbed) == {"svc", "cache"}
    # a kill after the check's window, or of a host it did not restart, is still a disturbance
    later = SimpleNamespace(api=_Events([event("svc", "kill", start + 3 * 10**9)]))
    assert "svc" in host_state(later, env, start / 1e9, ours=ours).disturbed
    other = SimpleNamespace(api=_Events([event("cache", "stop", start + 10**8)]))
    assert "cache" in host_state(other, env, start / 1e9, ours=ours[:1]).disturbed


SHIPPED = b"\x7fELF ledgerd"
UP = json.dumps({"status": 200, "body": "ok"})
DOWN = json.dumps({"status": 0, "error": "ConnectionRefusedError"})
ARGS = {"hosts": ["svc", "cache"], "host": "svc", "port": 8080, "path": "/healthz",
        "command": "/usr/local/sbin/ledgerd", "within": 1.5}


def _ctx(before: str, after: str, digest_after: str | None = None):
    tools = FakeRunner([(r"sha256sum", f"{hashlib.sha256(SHIPPED).hexdigest()}  /usr/local/sbin/ledgerd\n", 0),
                        (r"id -u", "999\n", 0)])
    real = Listener(40, 999, "/usr/local/sbin/ledgerd", hashlib.sha256(SHIPPED).hexdigest())
    ctx = FakeContext({"probe": FakeRunner([(r"urllib", before, 0)])}, addresses={"svc": "10.0.0.3"}, tools=tools,
                      listeners={("svc", 8080): real})

    def restarted(hosts):
        ctx._observers["probe"] = FakeRunner([(r"urllib", after, 0)])
        ctx._listeners[("svc", 8080)] = dataclasses.replace(real, exe_sha256=digest_after or real.exe_sha256)

    ctx.on_restart = restarted
    return ctx


def test_survives_restart_restarts_the_hosts_and_judges_what_answers_afterwards():
    fn = REGISTRY["tracing.survives_restart"]
    ctx = _ctx(UP, UP)
    v = evaluate(ctx, fn, ARGS)
    assert v.passed and ctx.restarted == [("svc", "cache")], v
    # healthy before, gone after: the fix lived in a process
    ctx = _ctx(UP, DOWN)
    v = evaluate(ctx, fn, ARGS)
    assert not v.passed and "did not outlive" in v.feedback and "ConnectionRefusedError" in v.feedback
    # back after the restart, but from another program (a start-up the learner changed to run a stand-in)
    v = evaluate(_ctx(UP, UP, digest_after="cd" * 32), fn, ARGS)
    assert not v.passed and v.feedback.startswith("after svc and cache restarted:") and "not by the" in v.feedback
    # not healthy to begin with: nothing to keep, and nothing is restarted
    ctx = _ctx(DOWN, UP)
    v = evaluate(ctx, fn, ARGS)
    assert not v.passed and "not serving yet" in v.feedback and ctx.restarted == []


def test_a_decoy_with_when_is_planned_only_for_learners_whose_seed_allows_it(lab):
    decoy = next(d for d in lab.decoys if d.spec.when)
    learners = [Learner("a", "s1", {"fault": "permission", "dep_port": 7000}),
                Learner("b", "s2", {"fault": "slow-syscall", "dep_port": 7001})]
    runs = [run for run, _nb in plan(lab, learners)]
    assert [r.learner for r in runs if r.name == decoy.name] == ["b"]
    always = [d.name for d in lab.decoys if not d.spec.when]
    assert all(sorted(r.learner for r in runs if r.name == name) == ["a", "b"] for name in always)


@pytest.fixture
def course_copy(tmp_path, root):
    shutil.copy(root / "course.yaml", tmp_path / "course.yaml")
    shutil.copytree(root / "environments" / "debug", tmp_path / "environments" / "debug")
    shutil.copytree(root / "graders", tmp_path / "graders", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(root / "labs" / LAB, tmp_path / "labs" / LAB)
    return tmp_path


@pytest.mark.parametrize(("when", "message"), [
    ({"flavour": ["x"]}, "when.flavour: environment debug has no choice parameter 'flavour' (choices: fault)"),
    ({"dep_port": ["7000"]}, "when.dep_port: environment debug has no choice parameter 'dep_port'"),
    ({"fault": ["slow-syscall", "gremlins"]}, "when.fault[1]: 'gremlins' is not a value of fault"),
    ({"fault": []}, "when.fault: names no value"),
])
def test_a_bad_when_names_the_decoy_file_and_field(course_copy, when, message):
    path = course_copy / "labs" / LAB / "decoys" / "fix-held-by-a-process.yaml"
    data = yaml.safe_load(path.read_text())
    data["when"] = when
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError) as exc:
        load_lab(Settings(root=course_copy, cache_dir=course_copy / ".cache"), load_course(course_copy / "course.yaml"),
                 LAB, registry=load_graders(course_copy))
    assert f"labs/{LAB}/decoys/fix-held-by-a-process.yaml" in str(exc.value) and message in str(exc.value)


def test_the_notebook_tells_the_learner_what_the_disruptive_check_does(lab):
    text = " ".join("".join(c.source) for c in lab.source.cells if c.cell_type == "markdown")
    assert "restart of `svc` and `cache`" in text
    assert Path(lab.directory / "README.md").read_text().count("survives-restart") >= 2
