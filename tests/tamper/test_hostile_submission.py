"""Finding 7: one submission must not stop a cohort's grading.

A learner cell carrying nbgrader metadata with an old ``schema_version`` made nbgrader's
sanitising step raise ``SchemaTooOldError``, which ``nbgrader autograde`` treats as fatal for the
whole run: every submission after it stayed ungraded. Here a hostile submission (old and future
schema versions, wrong types, a learner cell claiming a check's ``grade_id`` with 100 points, a
duplicate grade id, lock flags, junk notebook metadata) and a notebook that is not even JSON sit
among honest ones and go through the real ``nbgrader autograde`` of a course root, with real
Docker environments. The honest ones are graded exactly as without them; the hostile one scores
what its (absent) work is worth; the broken file fails alone.
"""

from __future__ import annotations

import copy

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell

from ladderlab.course.labs import nbg

from ..integration.test_nbgrader_e2e import LAB, course, nbgrader, submit  # noqa: F401 (course: a fixture)

pytestmark = pytest.mark.docker

CHECK_POINTS = {"default-deny": 2, "ssh-http-allowed": 1, "loopback-allowed": 1, "established-allowed": 1,
                "metrics-monitor-only": 2, "unwanted-port-closed": 1, "rules-persisted": 2}


def old_schema(release: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """The finding's notebook: the learner's own answer cell, its nbgrader metadata set to schema_version 1."""
    nb = copy.deepcopy(release)
    answer = next(c for c in nb.cells if nbg(c).get("grade_id") == "allow-rules")
    answer.metadata["nbgrader"]["schema_version"] = 1
    return nb


def garbage(release: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """Every other kind of hostile nbgrader metadata, in notebook and cells."""
    nb = copy.deepcopy(release)
    claim = new_code_cell("print(100)")
    claim.metadata["nbgrader"] = {"grade": True, "grade_id": "check-default-deny", "points": 100, "locked": True,
                                  "solution": False, "schema_version": 3}
    typed = new_code_cell("x = 1")
    typed.metadata["nbgrader"] = {"grade": "yes", "points": "lots", "grade_id": "allow-rules", "schema_version": 3}
    future = new_markdown_cell("from the future")
    future.metadata["nbgrader"] = {"schema_version": 9, "task": True, "grade_id": "task-allow", "points": 4}
    listy = new_code_cell("y = 2")
    listy.metadata["nbgrader"] = ["grade", True]
    bonus = new_code_cell("print(50)")
    bonus.metadata["nbgrader"] = {"grade": True, "grade_id": "check-bonus", "points": 50, "solution": False,
                                  "locked": True, "schema_version": 3}
    nb.cells[1:1] = [claim, typed, future, listy, bonus]
    dup = next(c for c in nb.cells if nbg(c).get("grade_id") == "check-established-allowed")
    second = copy.deepcopy(dup)
    second["id"] = "second-copy"
    nb.cells.append(second)
    nb.metadata["nbgrader"] = {"schema_version": 1}
    nb.metadata["kernelspec"] = {"name": "no-such-kernel", "display_name": "x", "language": "python"}
    return nb


def test_a_hostile_submission_does_not_stop_the_cohort(images, settings, course):  # noqa: F811 (imported fixture)
    r = nbgrader(course, "generate_assignment", LAB, "--force")
    assert r.returncode == 0, r.stderr[-2000:]
    release = nbformat.read(course / "release" / LAB / f"{LAB}.ipynb", as_version=4)
    solved = nbformat.read(course / "source" / LAB / f"{LAB}.ipynb", as_version=4)
    # nbgrader grades submissions in student order: the hostile ones come first
    submissions = {"a-schema": old_schema(release), "b-garbage": garbage(release), "c-notjson": release,
                   "d-solver": solved, "e-idler": release}
    for student, nb in submissions.items():
        submit(course, student, nb)
        assert nbgrader(course, "db", "student", "add", student).returncode == 0
    (course / "submitted" / "c-notjson" / LAB / f"{LAB}.ipynb").write_text('{"cells": [')

    r = nbgrader(course, "autograde", LAB, "--force")

    log = r.stderr
    graded = ("a-schema", "b-garbage", "d-solver", "e-idler")
    for student in graded:
        assert f"ladderlab: {LAB}/{student} scored" in log, log[-3000:]
    assert f"There was an error processing assignment '{LAB}' for student 'c-notjson'" in log
    assert r.returncode == 1  # nbgrader reports the one failure, after grading everyone else
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gb:
        scores = {s: (gb.find_submission(LAB, s).score, gb.find_submission(LAB, s).max_score) for s in graded}
        assert scores == {"a-schema": (0.0, 10.0), "b-garbage": (0.0, 10.0), "d-solver": (10.0, 10.0),
                          "e-idler": (0.0, 10.0)}
        cells = {g.name: g.max_score for g in gb.find_submission(LAB, "b-garbage").notebooks[0].grades}
        assert cells == {f"check-{c}": p for c, p in CHECK_POINTS.items()}
    assert not (course / "autograded" / "c-notjson" / LAB / f"{LAB}.ipynb").exists()
    for student in ("a-schema", "b-garbage"):
        nb = nbformat.read(course / "autograded" / student / LAB / f"{LAB}.ipynb", as_version=4)
        assert nb.metadata.get("kernelspec", {}).get("name") == "python3" and "nbgrader" not in nb.metadata
        claims = [nbg(c) for c in nb.cells if nbg(c)]
        assert all(m.get("schema_version") == 3 for m in claims)
        assert sum(1 for m in claims if m.get("grade_id") == "check-established-allowed") == 1
        assert not any(m.get("grade_id") == "check-bonus" for m in claims)
