"""The real nbgrader workflow: generate_assignment -> submissions -> nbgrader autograde ->
scores read back through nbgrader's gradebook API."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from ladderlab.course import load_course
from ladderlab.course.labs import load_lab
from ladderlab.environments import labels as L
from ladderlab.grading.checks import load_graders

LAB = "sec-1-iptables-hardening"


def nbgrader(course: Path, *args: str) -> subprocess.CompletedProcess[str]:
    bindir = str(Path(sys.executable).parent)
    env = {**os.environ, "PATH": f"{bindir}:{os.environ.get('PATH', '')}",
           "LADDERLAB_LADDER_URL": f"sqlite:///{course / 'ladder.sqlite'}"}
    return subprocess.run([f"{bindir}/nbgrader", *args], cwd=course, env=env, capture_output=True, text=True,
                          timeout=600)


@pytest.fixture
def course(tmp_path, root):
    r = subprocess.run([sys.executable, "-m", "ladderlab.cli", "nbgrader", "init", str(tmp_path / "course")],
                       capture_output=True, text=True, cwd=root)
    assert r.returncode == 0, r.stderr
    return tmp_path / "course"


def submit(course: Path, student: str, notebook: Path | nbformat.NotebookNode) -> None:
    dest = course / "submitted" / student / LAB
    dest.mkdir(parents=True)
    if isinstance(notebook, Path):
        shutil.copyfile(notebook, dest / f"{LAB}.ipynb")
    else:
        nbformat.write(notebook, dest / f"{LAB}.ipynb")


def test_generate_submit_autograde_gradebook(images, client, settings, course):
    r = nbgrader(course, "generate_assignment", LAB, "--force")
    assert r.returncode == 0, r.stderr[-2000:]
    release = nbformat.read(course / "release" / LAB / f"{LAB}.ipynb", as_version=4)
    assert not any("BEGIN SOLUTION" in c.source or "HIDDEN TESTS" in c.source for c in release.cells)
    assert not any("iptables -P INPUT DROP" in c.source for c in release.cells)

    lab = load_lab(settings, load_course(settings.course_file), LAB, registry=load_graders(settings.root))
    solved = nbformat.read(course / "source" / LAB / f"{LAB}.ipynb", as_version=4)
    submit(course, "solver", solved)
    submit(course, "idler", course / "release" / LAB / f"{LAB}.ipynb")
    for student in ("solver", "idler"):
        assert nbgrader(course, "db", "student", "add", student).returncode == 0
    r = nbgrader(course, "autograde", LAB, "--force")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "ladderlab: sec-1-iptables-hardening/solver scored 10/10" in r.stderr

    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gb:
        solver = gb.find_submission(LAB, "solver")
        idler = gb.find_submission(LAB, "idler")
        assert (solver.score, solver.max_score) == (10.0, 10.0)
        assert idler.score == 0.0
        grades = {g.name: g.score for g in solver.notebooks[0].grades}
        assert grades == {f"check-{c.id}": c.spec.points for c in lab.checks}

    graded = nbformat.read(course / "autograded" / "solver" / LAB / f"{LAB}.ipynb", as_version=4)
    lines = [o.text for c in graded.cells for o in c.get("outputs", []) if o.get("name") == "stdout"]
    assert any(line.startswith("\u2713 rules-persisted:") for line in lines)
    # grading wrote the evidence (through the pipeline, no import step), and the chain verifies
    from ladderlab.ladder.store import Store

    store = Store.open(settings, f"sqlite:///{course / 'ladder.sqlite'}")
    entries = {e.evidence.learner: e.evidence for e in store.entries()}
    assert set(entries) == {"solver", "idler"}
    assert entries["solver"].passed and entries["solver"].score == 10.0 and not entries["idler"].passed
    assert entries["solver"].image_digests["target"].startswith("sha256:")
    assert len(entries["solver"].check_suite_hash) == 64 and entries["solver"].source == "grading"
    assert store.verify().ok
    # and the same record can be rebuilt from nbgrader's gradebook
    from ladderlab.ladder.recording import rebuild_from_gradebook

    rebuilt = Store.open(settings, f"sqlite:///{course / 'rebuilt.sqlite'}")
    assert rebuild_from_gradebook(settings, load_course(settings.course_file), course, rebuilt) == 2
    again = {e.evidence.learner: e.evidence for e in rebuilt.entries()}
    assert again["solver"].passed and again["solver"].score == 10.0 and not again["idler"].passed
    assert {c.id for c in again["solver"].checks} == {c.id for c in lab.checks}
    assert rebuild_from_gradebook(settings, load_course(settings.course_file), course, rebuilt) == 0  # idempotent
    # one submission digest: rebuilding into the live store that autograde wrote adds nothing
    assert rebuild_from_gradebook(settings, load_course(settings.course_file), course, store) == 0
    assert len(list(store.entries())) == 2 and store.verify().ok

    flt = {"label": [f"{L.MANAGED}=1", f"{L.LAB}={LAB}"]}
    learners = {c["Labels"].get(L.LEARNER) for c in client.api.containers(all=True, filters=flt)}
    assert not learners & {"solver", "idler"}


def test_a_grading_fault_under_autograde_records_nothing_and_a_regrade_records_the_honest_score(
        images, client, settings, course):
    """An infrastructure fault fails that submission's autograde (no score, no evidence); the others are
    graded; grading again gives the honest score, once. A manual override in the gradebook never
    becomes evidence."""
    from nbgrader.api import Gradebook, MissingEntry

    from ladderlab.ladder.recording import rebuild_from_gradebook
    from ladderlab.ladder.store import Store
    from tests.integration.injectors import OnEvent

    assert nbgrader(course, "generate_assignment", LAB, "--force").returncode == 0
    solved = nbformat.read(course / "source" / LAB / f"{LAB}.ipynb", as_version=4)
    for student in ("unlucky", "lucky"):
        submit(course, student, solved)
        assert nbgrader(course, "db", "student", "add", student).returncode == 0
    store = Store.open(settings, f"sqlite:///{course / 'ladder.sqlite'}")
    stop = OnEvent(client, "unlucky", "pause", "sandbox",
                   lambda c, e: c.api.stop(f"ll-{e['Actor']['Attributes'][L.ENV_ID]}-target", timeout=1))
    with stop:
        r = nbgrader(course, "autograde", LAB, "--force")
    assert stop.fired
    assert "grading incomplete, nothing recorded" in r.stderr and "engine-level" in r.stderr, r.stderr[-3000:]
    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gb:
        assert gb.find_submission(LAB, "lucky").score == 10.0
        try:
            unlucky = gb.find_submission(LAB, "unlucky")
        except MissingEntry:
            unlucky = None
        assert unlucky is None or all(g.auto_score is None for nb in unlucky.notebooks for g in nb.grades)
    entries = list(store.entries())
    assert [e.evidence.learner for e in entries] == ["lucky"] and store.verify().ok

    r = nbgrader(course, "autograde", LAB, "--student", "unlucky", "--force")
    assert r.returncode == 0, r.stderr[-3000:]
    entries = {e.evidence.learner: e.evidence for e in store.entries()}
    assert entries["unlucky"].score == 10.0 and entries["unlucky"].passed and store.verify().ok
    assert len(list(store.entries())) == 2

    # a manual override (what a formgrader user, or a script in their browser, can set) is not evidence
    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gb:
        idle = gb.find_submission(LAB, "lucky")
        for g in idle.notebooks[0].grades:
            g.manual_score = 0.0
        gb.db.commit()
    rebuilt = Store.open(settings, f"sqlite:///{course / 'rebuilt.sqlite'}")
    assert rebuild_from_gradebook(settings, load_course(settings.course_file), course, rebuilt) == 2
    assert {e.evidence.learner: e.evidence.score for e in rebuilt.entries()} == {"lucky": 10.0, "unlucky": 10.0}
