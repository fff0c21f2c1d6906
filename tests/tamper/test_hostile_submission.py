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

from ladderlab.labs import nbg

from ..integration.test_nbgrader_e2e import LAB, course, nbgrader, submit  # noqa: F401 (course: a fixture)

pytestmark = pytest.mark.docker


def hostile(release: nbformat.NotebookNode) -> nbformat.NotebookNode:
    nb = copy.deepcopy(release)
    old = new_code_cell("print('schema 1')")
    old.metadata["nbgrader"] = {"grade": False, "solution": False, "locked": False, "schema_version": 1}
    claim = new_code_cell("print(100)")
    claim.metadata["nbgrader"] = {"grade": True, "grade_id": "check-default-deny", "points": 100, "locked": True,
                                  "solution": False, "schema_version": 3}
    typed = new_code_cell("x = 1")
    typed.metadata["nbgrader"] = {"grade": "yes", "points": "lots", "grade_id": "allow-rules", "schema_version": 3}
    future = new_markdown_cell("from the future")
    future.metadata["nbgrader"] = {"schema_version": 9, "task": True, "grade_id": "task-allow", "points": 4}
    listy = new_code_cell("y = 2")
    listy.metadata["nbgrader"] = ["grade", True]
    nb.cells[1:1] = [old, claim, typed, future, listy]
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
    submit(course, "a-hostile", hostile(release))
    submit(course, "b-notjson", release)
    (course / "submitted" / "b-notjson" / LAB / f"{LAB}.ipynb").write_text('{"cells": [')
    submit(course, "c-solver", solved)
    submit(course, "d-idler", release)
    students = ("a-hostile", "b-notjson", "c-solver", "d-idler")
    for student in students:
        assert nbgrader(course, "db", "student", "add", student).returncode == 0

    r = nbgrader(course, "autograde", LAB, "--force")

    log = r.stderr
    assert "There was an error processing assignment 'sec-1-iptables-hardening' for student 'b-notjson'" in log
    assert r.returncode == 1  # nbgrader reports the one failure, after grading everyone else
    for student in ("a-hostile", "c-solver", "d-idler"):
        assert f"ladderlab: {LAB}/{student} scored" in log, log[-3000:]
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gb:
        scores = {s: (gb.find_submission(LAB, s).score, gb.find_submission(LAB, s).max_score)
                  for s in ("a-hostile", "c-solver", "d-idler")}
        assert scores == {"a-hostile": (0.0, 10.0), "c-solver": (10.0, 10.0), "d-idler": (0.0, 10.0)}
        hostile_grades = {g.name: (g.auto_score, g.max_score) for g in gb.find_submission(LAB, "a-hostile")
                          .notebooks[0].grades}
        assert max(points for _, points in hostile_grades.values()) <= 2  # nobody's 100-point cell
    assert not (course / "autograded" / "b-notjson" / LAB / f"{LAB}.ipynb").exists()
    graded = nbformat.read(course / "autograded" / "a-hostile" / LAB / f"{LAB}.ipynb", as_version=4)
    assert graded.metadata.get("kernelspec", {}).get("name") == "python3"
    claims = [nbg(c) for c in graded.cells if nbg(c)]
    assert all(m.get("schema_version") == 3 for m in claims)
    assert sum(1 for m in claims if m.get("grade_id") == "check-established-allowed") == 1
