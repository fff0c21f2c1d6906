"""Debian's chromium for the report's browser tests (driven by Playwright with ``executable_path``;
never a downloaded browser)."""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Callable, Iterator
from typing import Any

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


#: Flags the machine's closed network needs (background fetches are refused) and root needs (no sandbox).
LAUNCH_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
               "--disable-sync", "--no-first-run"]


@contextlib.contextmanager
def page(width: int = 1280, height: int = 900) -> Iterator[Any]:
    """A Playwright page in Debian's chromium (``executable_path``), closed afterwards.

    The page records console errors, uncaught page errors and dialogs (dismissed) in ``page.errors``
    and ``page.dialogs``.
    """
    with pages(1, width, height) as (one,):
        yield one


@contextlib.contextmanager
def pages(count: int, width: int = 1280, height: int = 900) -> Iterator[list[Any]]:
    """``count`` pages of one chromium, each in a context of its own (its own cookies: two people, not two tabs;
    ``page.context.new_page()`` is another tab of the same person),
    recording errors and dialogs as :func:`page` does. One Playwright per thread: a second ``page()`` inside a
    first is refused by Playwright, so a test with two people asks for both here."""
    from playwright.sync_api import sync_playwright

    chromium = find()
    if not chromium:
        raise LadderlabError("Debian's chromium is missing: `ladderlab setup --browser` installs it")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium, args=LAUNCH_ARGS)
        try:
            yield [_recording(b.new_context(viewport={"width": width, "height": height}).new_page())
                   for _ in range(count)]
        finally:
            b.close()


def _recording(pg: Any) -> Any:
    """``pg`` with ``errors`` (console errors, uncaught exceptions) and ``dialogs`` (each dismissed)."""
    errors: list[str] = []
    dialogs: list[str] = []
    pg.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    pg.on("pageerror", lambda exc: errors.append(str(exc)))

    def on_dialog(dialog: Any) -> None:
        dialogs.append(dialog.message)
        dialog.dismiss()

    pg.on("dialog", on_dialog)
    pg.errors = errors
    pg.dialogs = dialogs
    return pg
