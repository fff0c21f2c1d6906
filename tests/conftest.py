"""Shared fixtures. Integration tests (marked ``docker``) need a running engine
and built images: ``make test`` provides both; without them they fail loudly,
they are never silently skipped."""

from __future__ import annotations

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
