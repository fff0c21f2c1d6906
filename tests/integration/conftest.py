"""Integration tests use the real engine and the real images (``make test``
sets both up). Every test here is marked ``docker``."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from ladderlab.environments import labels as L
from ladderlab.testing import private_cache


def pytest_collection_modifyitems(items):
    for item in items:
        if "integration" in str(item.fspath):
            item.add_marker(pytest.mark.docker)


def leftovers(client, env_id):
    flt = {"label": [f"{L.ENV_ID}={env_id}"]}
    return client.api.containers(all=True, filters=flt), client.api.networks(filters=flt)


def leftovers_for_learner(client, learner):
    """Containers and networks still labelled with ``learner`` (teardown is detached: wait for it briefly)."""
    import time

    flt = {"label": [f"{L.LEARNER}={learner}"]}
    deadline = time.monotonic() + 60
    while True:
        found = client.api.containers(all=True, filters=flt) + client.api.networks(filters=flt)
        if not found or time.monotonic() > deadline:
            return found
        time.sleep(1)


def run(env, *args, ok=True, timeout=1800):
    """``ladderlab ARGS`` as a trainer types it, with ``env``; asserts exit 0 unless ``ok=False``."""
    r = subprocess.run([sys.executable, "-m", "ladderlab.cli", *args], env=env, capture_output=True, text=True,
                       timeout=timeout)
    if ok:
        assert r.returncode == 0, (args, r.stdout[-2000:], r.stderr[-3000:])
    return r


@pytest.fixture
def trainer(tmp_path, settings):
    """A trainer's shell: ``(env, cache)`` with a private cache (queue, ledger, gradebook, evidence) and
    workspace, the course keys copied in."""
    cache = private_cache(settings, tmp_path / "cache").cache_dir
    env = dict(os.environ, LADDERLAB_CACHE_DIR=str(cache), LADDERLAB_WORKSPACE=str(tmp_path / "workspace"),
               LADDERLAB_ROOT=str(settings.root))
    env.pop("LADDERLAB_LEARNER", None)
    return env, cache
