"""Shared fixtures. Integration tests (marked ``docker``) need a running engine
and built images: ``make test`` provides both; without them they fail loudly,
they are never silently skipped."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from ladderlab.config import Settings

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="session")
def root() -> Path:
    return ROOT


@pytest.fixture(scope="session")
def settings() -> Settings:
    return Settings.from_env(ROOT)


@pytest.fixture(scope="session")
def client():
    from ladderlab.environments.engine import connect

    return connect()


@pytest.fixture(scope="session")
def images(client, settings):
    """Every image, built (a no-op when ``ladderlab setup`` already built them)."""
    from ladderlab.environments.images import build

    return build(client, settings, None, lambda _m: None)


def pytest_terminal_summary(terminalreporter):
    """The self-test's cost per lab (tests/labs/test_selftest.py), when it ran: CI's log keeps it."""
    module = sys.modules.get("tests.labs.test_selftest")
    lines = getattr(module, "SUMMARY", None)
    if lines:
        terminalreporter.section("self-test per lab")
        for line in lines:
            terminalreporter.write_line(line)
