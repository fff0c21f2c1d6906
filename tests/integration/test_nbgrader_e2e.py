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
from ladderlab.environments import labels as L
from ladderlab.grading.checks import load_graders
from ladderlab.labs import load_lab

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

    flt = {"label": [f"{L.MANAGED}=1", f"{L.LAB}={LAB}"]}
    learners = {c["Labels"].get(L.LEARNER) for c in client.api.containers(all=True, filters=flt)}
    assert not learners & {"solver", "idler"}
