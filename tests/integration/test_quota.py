"""Quotas on the real engine: a learner at their quota and a deployment at its limit are refused before
anything starts, with a message that says why and what to do; a start under way holds its slot and
counting is one step under a lock (so starts racing for the last slot cannot overshoot); reattaching and
grading are never refused; the CLI exits 5."""

from __future__ import annotations

import dataclasses
import os
import threading

import pytest

from ladderlab.environments import quota, runtime
from ladderlab.environments.quota import QuotaExceeded, holdings
from ladderlab.testing import private_cache
from tests.integration.conftest import leftovers_for_learner, run

ENV = "toolsmith"  # the smallest environment (2 hosts)


@pytest.fixture
def quota_settings(settings, tmp_path):
    return private_cache(settings, tmp_path / "cache")


def test_a_learner_at_their_quota_is_refused_and_nothing_starts(images, client, quota_settings):
    s = dataclasses.replace(quota_settings, max_envs_per_learner=1)
    first = runtime.up(s, ENV, client=client, learner="quota-ada", lab="l1")
    try:
        with pytest.raises(QuotaExceeded) as refused:
            runtime.up(s, ENV, client=client, learner="quota-ada", lab="l2")
        assert "quota-ada already has 1 environment" in str(refused.value) and first.id in str(refused.value)
        assert [h.id for h in holdings(s, client) if h.learner == "quota-ada"] == [first.id]  # nothing half-made
        assert not list((s.state_dir / "quota").glob("*.json"))  # no slot left behind
        again = runtime.up(s, ENV, client=client, learner="quota-ada", lab="l1", reuse=True)
        assert again.id == first.id  # reattaching costs nothing
        graded = runtime.up(s, ENV, client=client, learner="quota-ada", lab="l2", bound=True)
        graded.down()  # grading environments are bounded by the queue's workers, not by quotas
    finally:
        first.down()
    assert not leftovers_for_learner(client, "quota-ada")


def test_a_start_under_way_holds_its_slot_and_counting_is_one_step(images, client, quota_settings):
    """What stops starts racing for the last slot from overshooting: a start under way counts (its slot) and
    counting plus taking a slot happen under one lock, which every process takes in turn."""
    s = dataclasses.replace(quota_settings, max_envs_per_learner=1)
    with quota.slot(s, client, env_id="toolsmith-pending", learner="quota-race", lab="l0", env=ENV), \
            pytest.raises(QuotaExceeded, match=r"toolsmith-pending \(l0, starting\)"):
        runtime.up(s, ENV, client=client, learner="quota-race", lab="l1")
    outcome: list[object] = []

    def start() -> None:
        try:
            outcome.append(runtime.up(s, ENV, client=client, learner="quota-race", lab="l1"))
        except Exception as exc:  # reported below
            outcome.append(exc)

    try:
        with quota._locked(s):  # another process counting right now
            waiting = threading.Thread(target=start)
            waiting.start()
            waiting.join(timeout=2.0)
            assert waiting.is_alive() and not outcome  # it waits for its turn to count
        waiting.join(timeout=120)
        assert len(outcome) == 1 and isinstance(outcome[0], runtime.Environment), outcome
    finally:
        waiting.join(timeout=120)
        for env in outcome:
            if isinstance(env, runtime.Environment):
                env.down()
    assert not leftovers_for_learner(client, "quota-race")


def test_the_deployment_limit_and_the_cli(images, client, quota_settings, settings):
    running = len(holdings(quota_settings, client))  # other practice environments on this engine count too
    s = dataclasses.replace(quota_settings, max_envs=running + 1)
    env = runtime.up(s, ENV, client=client, learner="quota-bob", lab="l1")
    try:
        with pytest.raises(QuotaExceeded, match=rf"LADDERLAB_MAX_ENVS={running + 1}\b.*ask your trainer"):
            runtime.up(s, ENV, client=client, learner="quota-cy", lab="l1")
        shell = dict(os.environ, LADDERLAB_CACHE_DIR=str(s.cache_dir), LADDERLAB_ROOT=str(settings.root),
                     LADDERLAB_MAX_ENVS=str(running + 1))
        r = run(shell, "env", "up", ENV, "--learner", "quota-cy", ok=False)
        assert r.returncode == 5 and "LADDERLAB_MAX_ENVS" in r.stderr, (r.stdout, r.stderr)
    finally:
        env.down()
    assert not leftovers_for_learner(client, "quota-bob") and not leftovers_for_learner(client, "quota-cy")
