"""The toolsmith checks (sys-3-tested-cli-tool) against a real environment: the hidden reference passes the
acceptance checks when it is the learner's tool; a hostile test suite finds no network, cannot carry what one
run saw into the next (each implementation runs alone in a fresh container), and nothing hidden ever lands
on the learner's host."""

from __future__ import annotations

import base64

import pytest

from ladderlab.environments import runtime
from ladderlab.environments.images import tool_image
from ladderlab.grading.checks import evaluate, load_graders
from ladderlab.grading.context import LiveContext

from .conftest import leftovers

#: A suite that passes against whatever it meets first and fails against anything different it meets later,
#: if it can remember: it keeps each implementation it sees in /var/tmp and /srv. It also fails when the
#: network (the probe's sshd) is reachable. In a fresh network-less container per run, it always passes.
HOSTILE = '''import glob, hashlib, os, socket
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent


def test_no_network():
    s = socket.socket()
    s.settimeout(2)
    try:
        reached = s.connect_ex(("{probe}", 22)) == 0
    except OSError:
        reached = False
    finally:
        s.close()
    assert not reached, "the grader's container reached the lab network"


def test_same_as_before():
    code = "".join(l for l in (HERE / (HERE.name + ".py")).read_text().splitlines(True) if not l.startswith("# "))
    digest = hashlib.sha256(code.encode()).hexdigest()
    seen = set()
    for folder in ("/var/tmp", "/srv", "/tmp"):
        for path in glob.glob(folder + "/seen-*"):
            seen.add(open(path).read())
        try:
            Path(folder, "seen-" + digest[:12]).write_text(digest)
        except OSError:
            pass
    assert seen <= {{digest}}, "met another implementation before"
'''


#: Writes 1 MiB files (the per-file limit a run has) until it is stopped.
FILL_DISK = '''import os


def test_fill():
    block = os.urandom(1 << 20)
    for i in range(2000):
        with open("/var/tmp/fill-%d" % i, "wb") as fh:
            fh.write(block[:(1 << 20) - 4096])
'''


def _put(env, host, path, text):
    blob = base64.b64encode(text.encode()).decode()
    done = env.host(host).run('mkdir -p "$(dirname %s)" && printf %%s %s | base64 -d > %s', path, blob, path)
    assert done.succeeded, done.stderr


@pytest.fixture
def envctx(images, client, settings):
    load_graders(settings.root)
    env = runtime.up(settings, "toolsmith", client=client, learner="toolsmith-checks")
    ctx = LiveContext(env, tool_image(settings, client, "probe"))
    yield env, ctx
    ctx.close()
    env.down()
    assert leftovers(client, env.id) == ([], [])


def test_reference_passes_acceptance_and_a_hostile_suite_learns_nothing(envctx, client):
    import graders._toolsmith_ref as ref
    import graders.toolsmith as ts

    env, ctx = envctx
    tool, warn = str(env.params["tool"]), int(env.params["warn_days"])
    args = {"host": "tools", "tool": tool, "warn_days": warn}
    for rel, text in ref.sources(tool, warn).items():
        _put(env, "tools", f"/srv/{tool}/{rel}", text)
    _put(env, "tools", f"/srv/{tool}/tests/test_hostile.py", HOSTILE.format(probe=ctx.address("probe")))

    for fn in (ts.expiry_statuses, ts.failure_modes, ts.json_format, ts.exit_codes, ts.plugin_picked_up):
        verdict = evaluate(ctx, fn, args)
        assert verdict.passed, (fn.__name__, verdict)

    green = evaluate(ctx, ts.tests_pass_reference, args)
    assert green.passed, green  # no network, and nothing seen before
    mutants = evaluate(ctx, ts.tests_kill_mutants, {**args, "min_killed": 8})
    assert mutants.status == "failed" and "let 4 of 10" in mutants.feedback, mutants

    # every container a check started is gone, and the learner's host never held anything hidden
    names = [c.name for c in client.containers.list(all=True, filters={"name": f"ll-{env.id}-iso"})]
    assert names == []
    marker = "EXPIRED_CODE = 10  # X509_V_ERR_CERT_HAS_EXPIRED"
    assert "seen-" not in env.host("tools").run("ls /var/tmp /srv /tmp").stdout
    found = env.host("tools").run("grep -rl --exclude-dir=proc --exclude-dir=sys %s / 2>/dev/null; true", marker)
    assert found.stdout.strip() == f"/srv/{tool}/{tool}.py"  # only the copy this test itself put there

    # a suite that fills the disk is stopped by the watchdog: the learner's failure, not a grading error
    _put(env, "tools", f"/srv/{tool}/tests/test_hostile.py", FILL_DISK)
    fresh = LiveContext(env, tool_image(env.settings, client, "probe"))
    try:
        filled = evaluate(fresh, ts.tests_pass_reference, args)
    finally:
        fresh.close()
    assert filled.status == "failed" and "wrote more than 256 MiB" in filled.feedback, filled
