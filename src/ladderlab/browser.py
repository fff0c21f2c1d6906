"""Debian's chromium for the report's browser tests (driven by Playwright with ``executable_path``;
never a downloaded browser)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable

from ladderlab.config import Settings
from ladderlab.errors import LadderlabError

NAMES = ("chromium", "chromium-browser")


def find() -> str | None:
    explicit = os.environ.get("LADDERLAB_CHROMIUM")
    if explicit:
        return explicit if os.access(explicit, os.X_OK) else None
    return next((p for p in map(shutil.which, NAMES) if p), None)


def ensure(settings: Settings, say: Callable[[str], None]) -> str:
    """The chromium binary; installed from Debian's packages when missing and we are root with apt."""
    found = find()
    if found:
        return found
    from ladderlab.environments.engine import _can_install, apt_install

    if not _can_install():
        raise LadderlabError("no chromium for the browser tests: install Debian's chromium "
                             "(sudo apt-get install chromium) or set LADDERLAB_CHROMIUM to a chromium binary")
    apt_install(["chromium"], settings, say)
    found = find()
    if not found:
        raise LadderlabError("chromium was installed but is not on PATH")
    return found
