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
