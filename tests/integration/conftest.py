"""Integration tests use the real engine and the real images (``make test``
sets both up). Every test here is marked ``docker``."""

from __future__ import annotations

import pytest

from ladderlab.environments import labels as L


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
