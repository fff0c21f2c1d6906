"""A check that acts (``@check(disruptive=True)``) against the real engine: ``ctx.restart`` kills and starts
lab hosts, their observers are made anew in the new namespaces, the engine's events are told apart from a
disturbance, ``put_file`` writes through the engine, a start-up the learner broke is the learner's, and
practice leaves such a check out unless it is named. The self-test of sre-5 grades it end to end."""

from __future__ import annotations

import time

import pytest

from ladderlab.environments import runtime
from ladderlab.environments.images import tool_image
from ladderlab.errors import LearnerState, UsageError
from ladderlab.grading.checks import load_graders
from ladderlab.grading.context import LiveContext
from ladderlab.grading.feedback import live_feedback
from ladderlab.grading.pipeline import host_state

from .conftest import leftovers

pytestmark = pytest.mark.docker


@pytest.fixture
def debug_env(images, client, settings):
    load_graders(settings.root)
    env = runtime.up(settings, "debug", client=client, learner="disruptive", lab="sre-5-strace-debugging")
    yield env
    env.down()
    assert leftovers(client, env.id) == ([], [])


def _boot_id(ctx, host):
    """Something that changes when a host restarts: the start time of its pid 1, through the engine."""
    state = ctx.client.api.inspect_container(ctx.env.record.hosts[host].container)["State"]
    return state["StartedAt"]


def test_restart_kills_and_starts_hosts_and_is_not_taken_for_a_disturbance(debug_env, client, settings):
    env = debug_env
    ctx = LiveContext(env, tool_image(settings, client, "probe"))
    try:
        since = time.time()
        before = {h: _boot_id(ctx, h) for h in ("svc", "cache")}
        observer = client.api.inspect_container(ctx.observe("svc").container)["Id"]
        assert ctx.observe("svc").run("ip -4 -o addr show").stdout.count(ctx.address("svc")) == 1
        with ctx.acting():
            ctx.restart("svc", "cache")
            ctx.put_file("svc", "/etc/ladderlab-check/nonce", b"n-42\n", mode=0o600)
        assert [(h, a) for h, a, _, _ in ctx.actions] == [("svc", "restart"), ("cache", "restart"),
                                                          ("svc", "put_file")]
        for host in ("svc", "cache"):
            state = client.api.inspect_container(env.record.hosts[host].container)["State"]
            assert state["Running"] and state["StartedAt"] != before[host], host
        # the old observer shared the old namespaces: it is gone, and a new one sees the host as it is now
        fresh = ctx.observe("svc")
        assert client.api.inspect_container(fresh.container)["Id"] != observer
        assert fresh.run("ip -4 -o addr show").stdout.count(ctx.address("svc")) == 1
        assert ctx.read_file("svc", "/etc/ladderlab-check/nonce") == b"n-42\n"
        stat = ctx.stat("svc", "/etc/ladderlab-check/nonce")
        assert stat is not None and stat.mode & 0o777 == 0o600 and stat.uid == 0
        # the probe reaches the restarted host at the address the context gives for it
        dial = "import socket, sys; socket.create_connection((sys.argv[1], 22), 3)"
        assert ctx.observe("probe").run("python3 -c %s %s", dial, ctx.address("svc")).ok
        # the engine's events were the check's own; the same events without its record are a disturbance
        assert host_state(client, env, since, ours=ctx.actions).disturbed == {}
        assert set(host_state(client, env, since).disturbed) == {"svc", "cache"}
    finally:
        ctx.close()


def test_a_host_whose_start_up_exits_after_the_restart_is_the_learners_state(debug_env, client, settings):
    ctx = LiveContext(debug_env, tool_image(settings, client, "probe"))
    try:
        with ctx.acting():
            # what a learner's broken start-up does (put_file stands in for their root shell)
            ctx.put_file("cache", "/usr/local/sbin/ll-start", b"#!/bin/sh\nexit 3\n", mode=0o755)
            with pytest.raises(LearnerState, match=r"host cache did not come back after a restart: .* code 3"):
                ctx.restart("cache")
        state = host_state(client, debug_env, time.time() - 60, ours=ctx.actions)
        assert state.disturbed == {} and "cache" in state.broken_by_learner
    finally:
        ctx.close()


def test_practice_leaves_a_disruptive_check_out_unless_it_is_named(debug_env, settings):
    env = debug_env
    lines = live_feedback(settings, env, "sre-5-strace-debugging", [], {})
    by_id = {cid: (passed, text) for passed, cid, text in lines}
    skipped, why = by_id["survives-restart"]
    assert skipped is None and "lab.check('survives-restart') runs it" in why
    assert by_id["service-healthy"][0] is False  # the injected fault is not fixed
    started = {h: env.client.api.inspect_container(i.container)["State"]["StartedAt"]
               for h, i in env.record.hosts.items()}
    (named,) = live_feedback(settings, env, "sre-5-strace-debugging", ["survives-restart"], {})
    # run when named; the service is not healthy, so there is nothing to keep and nothing is restarted
    assert named[0] is False and "not serving yet" in named[2]
    assert started == {h: env.client.api.inspect_container(i.container)["State"]["StartedAt"]
                       for h, i in env.record.hosts.items()}


def _answers(ctx, host, port):
    """Whether ``host:port`` accepts a connection *and says something* within 2 s, seen from the probe (a
    paused host's kernel still completes the handshake; its frozen server says nothing)."""
    talk = ("import socket, sys\n"
            "s = socket.create_connection((sys.argv[1], int(sys.argv[2])), 2)\n"
            "s.settimeout(2)\n"
            "sys.exit(0 if s.recv(16) else 1)\n")
    return ctx.observe("probe").run("python3 -c %s %s %s", talk, ctx.address(host), port, timeout=15).ok


def _eventually(what, seconds=20.0):
    end = time.monotonic() + seconds
    while not what():
        if time.monotonic() > end:
            return False
        time.sleep(0.5)
    return True


def test_stop_start_pause_cut_and_signal_and_what_a_check_leaves_is_undone(debug_env, client, settings):
    env = debug_env
    port = int(env.params["dep_port"])
    cache, svc = env.record.hosts["cache"].container, env.record.hosts["svc"].container
    ctx = LiveContext(env, tool_image(settings, client, "probe"))
    try:
        since = time.time()
        assert _answers(ctx, "cache", port) and _answers(ctx, "svc", 22)
        with ctx.acting():
            ctx.stop("cache")
            assert not client.api.inspect_container(cache)["State"]["Running"]
            ctx.start("cache")
            assert _eventually(lambda: _answers(ctx, "cache", port))  # its start-up started the server again
            server = ctx.listener("cache", port)
            assert server is not None and server.pid > 1
            assert ctx.signal("cache", server.pid, "KILL")
            assert _eventually(lambda: not _answers(ctx, "cache", port))  # nothing restarts it
            assert not ctx.signal("cache", server.pid, "KILL")  # gone: nothing to signal
            with pytest.raises(UsageError, match="never pid 1"):
                ctx.signal("cache", 1, "KILL")
            with pytest.raises(UsageError, match="not allowed"):
                ctx.signal("cache", 5, "USR1")
            ctx.pause("svc")
            assert not _answers(ctx, "svc", 22)
            ctx.unpause("svc")
            assert _answers(ctx, "svc", 22)
            ctx.disconnect("svc", "lan")
            assert not _answers(ctx, "svc", 22)
            ctx.connect("svc", "lan")
            assert _eventually(lambda: _answers(ctx, "svc", 22))
            with pytest.raises(UsageError, match="not cut off"):
                ctx.connect("svc", "lan")
            # left as they are: the end of the check undoes them
            ctx.pause("cache")
            ctx.disconnect("svc", "lan")
        assert not client.api.inspect_container(cache)["State"]["Paused"]
        assert _eventually(lambda: _answers(ctx, "svc", 22))
        assert env.record.networks["lan"] in client.api.inspect_container(svc)["NetworkSettings"]["Networks"]
        assert host_state(client, env, since, ours=ctx.actions).disturbed == {}
        with pytest.raises(UsageError, match="only a check registered"):
            ctx.pause("svc")
    finally:
        ctx.close()
