"""Quota logic without Docker: what counts, what is refused and how it is said (the real engine, with
starts racing for the last slot, is in tests/integration/test_quota.py)."""

from __future__ import annotations

import json
import time

import pytest

from ladderlab.config import Settings
from ladderlab.environments import quota
from ladderlab.environments.quota import Holding, refusal
from ladderlab.errors import UsageError


def settings(tmp_path, per=None, total=None):
    return Settings(root=tmp_path, cache_dir=tmp_path / "cache", max_envs_per_learner=per, max_envs=total)


def held(learner, n, starting=False):
    return [Holding(f"firewall-{learner}{i}", learner, "sec-1-iptables-hardening", "firewall", starting)
            for i in range(n)]


def test_a_learner_at_their_quota_is_refused_with_what_counts_and_how_to_free_one(tmp_path):
    s = settings(tmp_path, per=2)
    assert refusal(s, held("ada", 1) + held("bob", 5), "ada") is None  # others' environments do not count
    why = refusal(s, held("ada", 2), "ada")
    assert why is not None
    assert "ada already has 2 environments" in why and "LADDERLAB_MAX_ENVS_PER_LEARNER=2" in why
    assert "firewall-ada0" in why and "lab.stop()" in why and "ladderlab env down" in why
    starting = refusal(s, [*held("ada", 1), Holding("firewall-x", "ada", "", "firewall", True)], "ada")
    assert starting is not None and "firewall-x (firewall, starting)" in starting  # a start under way counts


def test_the_deployment_limit_counts_every_learner(tmp_path):
    s = settings(tmp_path, per=3, total=4)
    assert refusal(s, held("ada", 1) + held("bob", 2), "cy") is None
    why = refusal(s, held("ada", 2) + held("bob", 2), "cy")
    assert why is not None and "4 environments are running or starting" in why and "LADDERLAB_MAX_ENVS=4" in why
    assert refusal(settings(tmp_path), held("ada", 50), "ada") is None  # no quotas: no limit


def test_stale_or_broken_slots_are_dropped(tmp_path):
    s = settings(tmp_path, per=1)
    folder = s.state_dir / "quota"
    folder.mkdir(parents=True)
    now = time.time()
    (folder / "live.json").write_text(json.dumps({"id": "e1", "learner": "ada", "lab": "l", "env": "e", "at": now}))
    (folder / "dead.json").write_text(json.dumps({"id": "e2", "learner": "ada", "at": now - quota.SLOT_TTL - 1}))
    (folder / "torn.json").write_text('{"id": "e3", "lear')
    found = quota._slots(s, now)
    assert [h.id for h in found] == ["e1"] and found[0].starting
    assert sorted(p.name for p in folder.iterdir()) == ["live.json"]


@pytest.mark.parametrize("raw", ["0", "-1", "two", "1.5"])
def test_a_bad_quota_setting_names_the_variable(monkeypatch, tmp_path, raw):
    monkeypatch.setenv("LADDERLAB_ROOT", str(tmp_path))
    monkeypatch.setenv("LADDERLAB_MAX_ENVS_PER_LEARNER", raw)
    with pytest.raises(UsageError, match=r"LADDERLAB_MAX_ENVS_PER_LEARNER.*whole number"):
        Settings.from_env(tmp_path)


def test_quota_settings_are_read_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("LADDERLAB_MAX_ENVS_PER_LEARNER", "2")
    monkeypatch.setenv("LADDERLAB_MAX_ENVS", " 30 ")
    s = Settings.from_env(tmp_path)
    assert (s.max_envs_per_learner, s.max_envs) == (2, 30)
    monkeypatch.delenv("LADDERLAB_MAX_ENVS")
    assert Settings.from_env(tmp_path).max_envs is None
