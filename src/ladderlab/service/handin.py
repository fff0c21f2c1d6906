"""Handing a notebook in: nbgrader's own ``submit`` into the exchange, then the result from the ledger.

``ladderlab submit LAB`` and ``lab.submit()`` do what the Assignments panel's *Submit* does, then wait:
the grading service started by ``ladderlab lab`` picks the submission up. When no service runs
(a shell, a test, CI), the command runs one in its own process until its submission is done.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ladderlab.config import Settings
from ladderlab.errors import UsageError
from ladderlab.service.ledger import Ledger, Submission
from ladderlab.service.paths import ServicePaths

Say = Callable[[str], None]

#: How long ``submit`` waits for its result by default (the lab's own sandbox limit is the real bound).
WAIT_SECONDS = 1800.0


def _quiet(_: str) -> None:
    return None


def ensure_released(settings: Settings, paths: ServicePaths, say: Say = _quiet,
                    only: list[str] | None = None, skip_broken: bool = False) -> Any:
    """The course root, the exchange and the published labs (``only`` those) released (cheap when nothing
    changed)."""
    from ladderlab.course import load_course
    from ladderlab.course.labs import chosen_labs, load_lab, load_labs
    from ladderlab.errors import ConfigError
    from ladderlab.grading.checks import load_graders
    from ladderlab.service.workspace import prepare_course_root, release

    course = load_course(settings.course_file, "course.yaml")
    registry = load_graders(settings.root)
    if skip_broken:  # the workspace opens with every lab that loads; a broken one is named, not fatal
        labs = []
        for lab_id in chosen_labs(course, only):
            try:
                labs.append(load_lab(settings, course, lab_id, registry=registry))
            except ConfigError as exc:
                say(f"warning: {lab_id} is not released: {exc}")
    else:
        labs = load_labs(settings, course, only, registry=registry)
    prepare_course_root(settings, paths, labs)
    release(paths, labs, say)
    return course


def hand_in(paths: ServicePaths, course_id: str, lab_id: str, notebook: Path, learner: str) -> str:
    """Submit ``notebook`` as ``learner``'s hand-in of ``lab_id`` through nbgrader's exchange; the version's key.

    Only the notebook travels (nbgrader submits a folder: it is staged alone in a temporary one).
    """
    from nbgrader.exchange.default import ExchangeSubmit

    from ladderlab.course.labs import read_notebook
    from ladderlab.errors import ConfigError
    from ladderlab.service.workspace import _auth, _coursedir, _learner_exchange_config

    if not notebook.is_file():
        raise UsageError(f"{notebook}: no such notebook (save it first, or give --notebook PATH)")
    try:
        read_notebook(notebook, str(notebook))
    except ConfigError as exc:
        raise UsageError(str(exc)) from None
    if any(c in learner for c in "+*/") or not learner:
        raise UsageError(f"learner id {learner!r}: must be non-empty, without '+', '*' or '/'")
    with tempfile.TemporaryDirectory(prefix="ladderlab-handin-") as staging:
        folder = Path(staging) / lab_id
        folder.mkdir()
        shutil.copyfile(notebook, folder / f"{lab_id}.ipynb")
        config = _learner_exchange_config(paths, course_id, learner, lab_id)
        config.Exchange.assignment_dir = staging
        submit = ExchangeSubmit(coursedir=_coursedir(config), authenticator=_auth(config), config=config)
        try:
            submit.start()
        except Exception as exc:
            raise UsageError(f"nbgrader could not hand {lab_id} in: {exc}") from exc
        return str(submit.assignment_filename)


def hand_in_lab(settings: Settings, paths: ServicePaths, lab_id: str, notebook: Path, learner: str,
                say: Say = _quiet) -> str:
    """Release ``lab_id`` if needed and hand ``notebook`` in as ``learner``; the version's key."""
    from ladderlab.course import load_course
    from ladderlab.course.labs import chosen_labs

    chosen_labs(load_course(settings.course_file, "course.yaml"), [lab_id])  # a clear error for an unknown lab
    course = ensure_released(settings, paths, say, only=[lab_id])
    return hand_in(paths, course.id, lab_id, notebook, learner)


def submit(settings: Settings, lab_id: str, notebook: Path, learner: str, *, say: Say = _quiet,
           on_change: Callable[[Submission], None] | None = None, timeout: float = WAIT_SECONDS,
           paths: ServicePaths | None = None) -> Submission:
    """Hand ``notebook`` in and wait for its grading (by the running service, or one started here)."""
    from ladderlab.service.queue import GradingService, ServiceLock, wait_for

    paths = paths or ServicePaths.of(settings)
    key = hand_in_lab(settings, paths, lab_id, notebook, learner, say)
    say(f"handed in {lab_id} as {learner} ({key})")
    lock = ServiceLock(paths.lock)
    if not lock.acquire():  # a grading service runs (ladderlab lab): it picks the submission up
        return wait_for(Ledger(paths.ledger_db), key, timeout, on_change)
    say("no grading service is running: grading here")
    service = GradingService(settings, paths, say=say).start()
    try:
        service.scan()
        return service.wait(key, timeout, on_change)
    finally:
        service.stop()
        lock.release()


def describe(sub: Submission, threshold_note: str = "") -> list[str]:
    """What the learner is shown about a finished submission: one line per check; hidden ones by title only."""
    from ladderlab.grading.marks import mark

    if sub.status == "error":
        return [f"{sub.lab}: could not be graded, try again ({sub.error}). This is not a failure; nothing was "
                f"recorded."]
    verdict = "passed" if sub.passed else "not passed"
    lines = [f"{sub.lab}: {sub.score:g}/{sub.max_score:g}, {verdict}{threshold_note}"]
    for c in sub.checks:
        passed = c.get("status") == "passed"
        text = c["title"] + (" (hidden check)" if c.get("hidden") else f": {c.get('feedback', '')}")
        lines.append(f"  {mark(passed)} {c['id']}: {text}")
    return lines


def unsaved_cells(notebook: Path, executed: list[str]) -> list[str]:
    """Code this kernel ran that the saved ``notebook`` does not hold (the learner has not saved since)."""
    import json

    try:
        cells = json.loads(notebook.read_text()).get("cells", [])
    except (OSError, ValueError):
        return executed
    saved = {"".join(c.get("source", "")).strip() for c in cells if c.get("cell_type") == "code"}
    return [src for src in executed if src.strip() and src.strip() not in saved and "submit(" not in src]


def kernel_notebook(lab_id: str, explicit: str | Path | None = None) -> Path:
    """The notebook a kernel works on: the explicit path, the one JupyterLab started it for, or the workspace's."""
    import os

    if explicit:
        return Path(explicit).expanduser().resolve()
    session = os.environ.get("JPY_SESSION_NAME", "")
    if session.endswith(".ipynb"):
        path = Path(session)
        if not path.is_absolute():
            path = Path(os.environ.get("LADDERLAB_WORKSPACE") or Path.cwd()) / path
        if path.is_file():
            return path.resolve()
    workspace = Path(os.environ.get("LADDERLAB_WORKSPACE") or Path.cwd())
    return (workspace / lab_id / f"{lab_id}.ipynb").resolve()
