"""Checks against a fake context: the verdict logic, without Docker.

The same checks run against real environments in tests/integration/test_grading.py
and in the lab self-test (tests/labs)."""

from __future__ import annotations

import json

import pytest

from ladderlab import testing
from ladderlab.grading.checks import REGISTRY, Verdict, evaluate, fail, load_graders, ok, render_args
from ladderlab.testing import FakeRunner

#: The firewall environment's hosts (checks turn host names into addresses to probe).
ADDRESSES = {"target": "10.0.0.2", "outsider": "10.0.0.3", "monitor": "10.0.0.4"}


class FakeContext(testing.FakeContext):
    """The public double (:mod:`ladderlab.testing`), with :data:`ADDRESSES` unless a test gives its own."""

    def __init__(self, observers, **kw):
        kw.setdefault("addresses", ADDRESSES)
        super().__init__(observers, **kw)


@pytest.fixture(scope="module", autouse=True)
def graders(root):
    load_graders(root)


DENY = """*filter
:INPUT DROP [10:600]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
-A INPUT -i lo -j ACCEPT
-A INPUT -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A INPUT -p tcp -m multiport --dports 22,80 -j ACCEPT
COMMIT
"""
OPEN = "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n"


def tcp(states):
    return (r"python3 -c .*socket", json.dumps(states), 0)


def save(text):
    return (r"iptables-save", text, 0)


def qdisc(text="qdisc noqueue 0: dev eth0 root refcnt 2\n"):
    return (r"tc qdisc show", text, 0)


def test_parse_save_and_default_deny_logic():
    from graders.firewall import canonical, drops_by_default, parse_save

    chains = parse_save(DENY)
    assert chains["INPUT"].policy == "DROP" and len(chains["INPUT"].rules) == 3
    assert drops_by_default(chains["INPUT"])
    assert not drops_by_default(parse_save(OPEN)["INPUT"])
    catch_all = parse_save(OPEN.replace("COMMIT", "-A INPUT -j REJECT --reject-with icmp-port-unreachable\nCOMMIT"))
    assert drops_by_default(catch_all["INPUT"])
    partial = parse_save(OPEN.replace("COMMIT", "-A INPUT -p tcp --dport 6000 -j DROP\nCOMMIT"))
    assert not drops_by_default(partial["INPUT"])
    # counters and other tables do not matter; rule order does
    assert canonical(parse_save(DENY.replace("[10:600]", "[0:0]") + "*nat\n:X - [0:0]\nCOMMIT\n")) == \
        canonical(parse_save(DENY))
    swapped = DENY.replace("-A INPUT -i lo -j ACCEPT\n", "") + ""
    assert canonical(parse_save(swapped)) != canonical(parse_save(DENY))


def test_default_deny_reads_the_ruleset_with_the_observers_iptables():
    fn = REGISTRY["firewall.default_deny"]
    admin = FakeRunner([save(DENY)])
    assert evaluate(FakeContext({("target", True): admin}), fn, {"host": "target"}).passed
    assert admin.ran == ["iptables-save", "iptables-save"]  # read until two reads agree
    v = evaluate(FakeContext({("target", True): FakeRunner([save(OPEN)])}), fn, {"host": "target"})
    assert not v.passed and "INPUT policy is ACCEPT" in v.feedback and v.fraction == 0


def test_allowed_checks_need_a_default_deny_first():
    fn = REGISTRY["firewall.allowed_through"]
    args = {"source": "outsider", "target": "target", "ports": [22, 80]}
    open_everything = FakeContext({("target", True): FakeRunner([save(OPEN)]),
                                   "outsider": FakeRunner([tcp(["open", "open"])])})
    v = evaluate(open_everything, fn, args)
    assert not v.passed and "filters nothing inbound" in v.feedback
    good = FakeContext({("target", True): FakeRunner([save(DENY)]), "outsider": FakeRunner([tcp(["open", "open"])])})
    assert evaluate(good, fn, args).passed
    half = FakeContext({("target", True): FakeRunner([save(DENY)]),
                        "outsider": FakeRunner([tcp(["open", "filtered"])])})
    v = evaluate(half, fn, args)
    assert not v.passed and "target:80 does not answer" in v.feedback and "from outsider" in v.feedback


def test_closed_and_only_from():
    closed = REGISTRY["firewall.closed"]
    args = {"target": "target", "port": 6100, "sources": ["outsider", "monitor"]}
    ctx = FakeContext({"target": FakeRunner([qdisc(), save(DENY)]), "outsider": FakeRunner([tcp(["filtered"])]),
                       "monitor": FakeRunner([tcp(["refused"])])})
    assert evaluate(ctx, closed, args).passed
    ctx = FakeContext({"target": FakeRunner([qdisc(), save(DENY)]), "outsider": FakeRunner([tcp(["filtered"])]),
                       "monitor": FakeRunner([tcp(["open"])])})
    v = evaluate(ctx, closed, args)
    assert not v.passed and "monitor" in v.feedback and "outsider" not in v.feedback.split("from")[1]

    only = REGISTRY["firewall.only_from"]
    args = {"target": "target", "port": 9100, "allowed": ["monitor"], "denied": ["outsider"]}
    ctx = FakeContext({"target": FakeRunner([qdisc(), save(DENY)]), "monitor": FakeRunner([tcp(["open"])]),
                       "outsider": FakeRunner([tcp(["open"])])})
    v = evaluate(ctx, only, args)
    assert not v.passed and "from outsider it accepts" in v.feedback
    ctx = FakeContext({"target": FakeRunner([qdisc(), save(DENY)]), "monitor": FakeRunner([tcp(["filtered"])]),
                       "outsider": FakeRunner([tcp(["filtered"])])})
    v = evaluate(ctx, only, args)
    assert not v.passed and "from monitor it does not answer" in v.feedback


def test_traffic_shaping_cannot_fake_a_closed_port():
    """netem on the target delays answers past the probe timeout: that is refused, not judged closed."""
    closed = REGISTRY["firewall.closed"]
    netem = "qdisc netem 8001: dev eth0 root refcnt 2 limit 1000 delay 2s\n"
    ctx = FakeContext({"target": FakeRunner([qdisc(netem)]), "outsider": FakeRunner([tcp(["filtered"])]),
                       "monitor": FakeRunner([tcp(["filtered"])])})
    v = evaluate(ctx, closed, {"target": "target", "port": 6100, "sources": ["outsider", "monitor"]})
    assert not v.passed and "netem on eth0" in v.feedback


def test_persisted_replays_the_file_in_a_scratch_namespace():
    fn = REGISTRY["firewall.persisted"]
    scratch = FakeRunner([(r"iptables-restore /root/rules.v4", DENY, 0)])
    ctx = FakeContext({("target", True): FakeRunner([save(DENY)])}, files={("target", "/etc/iptables/rules.v4"):
                                                                           DENY.encode()}, scratch=scratch)
    assert evaluate(ctx, fn, {"host": "target"}).passed
    assert scratch.files["/root/rules.v4"] == DENY.encode()

    missing = FakeContext({("target", True): FakeRunner([save(DENY)])}, scratch=scratch)
    v = evaluate(missing, fn, {"host": "target"})
    assert not v.passed and "does not exist" in v.feedback

    stale = FakeRunner([(r"iptables-restore", DENY.replace("-A INPUT -i lo -j ACCEPT\n", ""), 0)])
    ctx = FakeContext({("target", True): FakeRunner([save(DENY)])},
                      files={("target", "/etc/iptables/rules.v4"): b"x"}, scratch=stale)
    v = evaluate(ctx, fn, {"host": "target"})
    assert not v.passed and "chain INPUT" in v.feedback

    broken = FakeRunner([(r"iptables-restore", "iptables-restore: line 2 failed", 1)])
    ctx = FakeContext({("target", True): FakeRunner([save(DENY)])},
                      files={("target", "/etc/iptables/rules.v4"): b"junk"}, scratch=broken)
    v = evaluate(ctx, fn, {"host": "target"})
    assert not v.passed and "does not restore" in v.feedback


def test_a_check_that_breaks_or_returns_nothing_is_an_error_never_a_pass():
    from ladderlab.errors import LearnerState
    from ladderlab.grading.checks import CannotJudge

    def raises(ctx):
        raise RuntimeError("observer gone")

    def cannot(ctx):
        raise CannotJudge("promtool timed out\non our side")

    def learners(ctx):
        raise LearnerState("/etc/x is 4294967296 bytes, over the limit of 1048576")

    def nothing(ctx):
        return None

    def cheeky(ctx):
        return "passed"

    assert evaluate(None, raises, {}) == Verdict(False, "the grader could not judge: RuntimeError: observer gone",
                                                 0.0, "error")
    assert evaluate(None, cannot, {}).feedback == "the grader could not judge: promtool timed out on our side"
    assert evaluate(None, cannot, {}).status == "error"
    assert evaluate(None, learners, {}).status == "failed"  # the learner's state, judged: a failure
    for broken in (nothing, cheeky):
        verdict = evaluate(None, broken, {})
        assert verdict.status == "error" and not verdict.passed and verdict.fraction == 0
    with pytest.raises(ValueError):
        Verdict(True, "x", 1.0, "error")  # an error never passes
    assert evaluate(None, lambda ctx: fail("a\x1b[2Jb\x00c"), {}).feedback == "a [2Jb c"
    # a failed all-or-nothing verdict never keeps points
    assert evaluate(None, lambda ctx: Verdict(False, "x"), {}).fraction == 0
    assert evaluate(None, lambda ctx: ok("fine"), {}).passed
    assert evaluate(None, lambda ctx: fail("a\n  b"), {}).feedback == "a b"


def test_observer_output_that_is_not_json_is_an_observation_error():
    fn = REGISTRY["firewall.closed"]
    ctx = FakeContext({"target": FakeRunner([qdisc(), save(DENY)]), "outsider": FakeRunner([(r"python3", "open!", 0)]),
                       "monitor": FakeRunner([tcp(["filtered"])])})
    v = evaluate(ctx, fn, {"target": "target", "port": 1, "sources": ["outsider", "monitor"]})
    assert v.status == "error" and "could not judge" in v.feedback  # our observer's fault, not the learner's


def test_render_args_keeps_parameter_types():
    params = {"metrics_port": 9137, "zone": "corp-abc.lab.example"}
    got = render_args({"port": "{metrics_port}", "name": "ns1.{zone}", "ports": ["{metrics_port}", 80],
                       "nested": {"z": "{zone}"}}, params)
    assert got == {"port": 9137, "name": "ns1.corp-abc.lab.example", "ports": [9137, 80],
                   "nested": {"z": "corp-abc.lab.example"}}


def test_verdict_fraction_is_bounded():
    with pytest.raises(ValueError):
        Verdict(True, "x", 1.5)


def test_the_public_test_doubles_are_documented_and_complete():
    """``ladderlab.testing`` is for content authors: its ``>>>`` examples run, and its FakeContext offers
    everything a check may use (every member of the Context protocol)."""
    import doctest

    from ladderlab.grading.checks import Context

    result = doctest.testmod(testing, verbose=False)
    assert result.attempted >= 5 and result.failed == 0
    protocol = {name for name in vars(Context) if not name.startswith("_")}
    assert protocol >= {"params", "answers", "address", "observe", "scratch", "tools", "read_file", "read_dir",
                        "stat", "processes", "listener", "cached"}
    fake = testing.FakeContext()
    assert all(hasattr(fake, name) for name in protocol), protocol - set(dir(fake))


def test_fake_context_answers_from_what_it_was_given_and_names_what_it_lacks():
    from ladderlab.grading.checks import FileStat, Listener, Process

    runner, tools = FakeRunner([("id", "0\n", 0)]), FakeRunner([(r"promtool", "SUCCESS", 0)])
    ctx = testing.FakeContext({("target", True): runner}, addresses={"target": "10.0.0.2"}, tools={"prom": tools},
                              files={("target", "/etc/x"): b"x"}, dirs={("target", "/etc"): {"x": b"x"}},
                              stats={("target", "/etc/x"): FileStat(0o600, 0, 0, 1)},
                              procs={"target": [Process(0, 1, "init")]},
                              listeners={("target", 22): Listener(7, 0, "/usr/sbin/sshd", "ab")},
                              params={"port": 22}, answers={"errno": "EACCES"})
    assert ctx.observe("target", admin=True).run("id").stdout == "0\n" and runner.ran == ["id"]
    assert ctx.tools("prom") is tools and ctx.address("target") == "10.0.0.2"
    assert ctx.read_file("target", "/etc/x") == b"x" and ctx.read_file("target", "/nope") is None
    assert ctx.read_dir("target", "/etc") == {"x": b"x"} and ctx.read_dir("target", "/var") == {}
    assert ctx.stat("target", "/etc/x").mode == 0o600 and ctx.processes("target")[0].args == "init"
    assert ctx.listener("target", 22).exe == "/usr/sbin/sshd" and ctx.listener("target", 23) is None
    assert ctx.params == {"port": 22} and ctx.answers == {"errno": "EACCES"}
    calls = []
    assert ctx.cached("k", lambda: calls.append(1) or "v") == "v" == ctx.cached("k", lambda: calls.append(1))
    assert calls == [1]  # once per context, like the real one
    for missing in (lambda: ctx.observe("target"), lambda: ctx.address("web"), ctx.scratch,
                    lambda: ctx.tools("target")):
        with pytest.raises(KeyError, match="FakeContext has no"):
            missing()
    with pytest.raises(AssertionError, match="unexpected command 'rm -rf /'"):
        runner.run("rm -rf %s", "/")
