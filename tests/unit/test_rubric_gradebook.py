"""``ladderlab cohort record-rubric`` through nbgrader's real gradebook (no Docker).

The course root is made by nbgrader itself (``generate_assignment`` puts the manually graded cell and its points in
the gradebook); each learner's submission is autograded by nbgrader's ``autograde`` with ladderlab's preprocessors
(``LadderlabExecute`` takes a grading made ahead, as the grading service hands it over, so no environment is
started; ``SaveAutoGrades`` and ``RecordEvidence`` write the gradebook and the automatic entry for real); the
manual grade is set the way nbgrader's formgrader sets it (``manual_score``, ``needs_manual_grade``, the comment).
"""

from __future__ import annotations

import datetime
import json

import nbformat
import pytest
from nbgrader.api import Gradebook

from ladderlab.cli import main
from ladderlab.config import Settings
from ladderlab.errors import UsageError
from ladderlab.grading.nbgrader_ext import pregraded
from ladderlab.grading.pipeline import CheckOutcome, GradeReport, prepare, submission_hash
from ladderlab.ladder.evidence import LAB, RUBRIC
from ladderlab.ladder.recording import criteria_from_comment
from ladderlab.ladder.store import Store
from ladderlab.ladder.views import select
from ladderlab.service import cohorts
from ladderlab.service.paths import ServicePaths
from ladderlab.service.workspace import nbgrader_api, prepare_course_root

from .test_evidence_kinds import LAB_ID, RUBRIC_YAML, add_rubric, load

CRITERIA = "blameless: 3\ncausal-clarity: 2\nprevention: 2\naudience: 1\nGood timeline."


@pytest.fixture(scope="module")
def released(tmp_path_factory, root):
    """nbgrader's course root (made once for the module) with sec-1, plus its rubric cell, released."""
    import shutil

    base = tmp_path_factory.mktemp("course")
    shutil.copy(root / "course.yaml", base / "course.yaml")
    (base / "environments").mkdir()
    shutil.copytree(root / "graders", base / "graders", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(root / "labs" / LAB_ID, base / "labs" / LAB_ID)
    add_rubric(base)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LADDERLAB_ROOT", str(base))
        mp.setenv("LADDERLAB_CACHE_DIR", str(base / ".cache"))
        mp.delenv("LADDERLAB_LADDER_URL", raising=False)
        settings = Settings.from_env(base)
        paths = ServicePaths.of(settings, base / "workspace")
        lab = load(base)
        prepare_course_root(settings, paths, [lab])
        assert nbgrader_api(paths).generate_assignment(LAB_ID, force=True)["success"]
        yield settings, paths, lab


@pytest.fixture
def cohort(released, request):
    """A cohort of its own per test (learners ``<test>-ada``, ``-bo``, ``-chen``) on the shared course root."""
    settings, paths, lab = released
    name = f"t{abs(hash(request.node.name)) % 10**8}"
    cohorts.create(paths, name)
    cohorts.add(paths, name, [cohorts.Member(f"{name}-{x}", x.title(), "", "") for x in ("ada", "bo", "chen")])
    return settings, paths, lab, name


def autograde(paths, lab, learner, text):
    """The learner hands in the released notebook with ``text`` as the write-up, and nbgrader autogrades it
    (the automatic part: every check passed)."""
    nb = nbformat.read(paths.course_root / "release" / LAB_ID / f"{LAB_ID}.ipynb", as_version=4)
    cell = next(c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") == "write-up")
    cell.source = text
    dest = paths.course_root / "submitted" / learner / LAB_ID
    dest.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, dest / f"{LAB_ID}.ipynb")
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M:%S.%f UTC")
    (dest / "timestamp.txt").write_text(stamp)
    checks = [CheckOutcome(c.id, c.spec.points, c.spec.points, True, "ok") for c in lab.checks]
    report = GradeReport(LAB_ID, learner, lab.max_score, lab.max_score, True, checks, seed="ab" * 32,
                         threshold=lab.threshold, submission_hash=submission_hash(lab, nb),
                         check_suite_hash=lab.suite_hash())
    with pregraded(report, prepare(lab, nb)):
        result = nbgrader_api(paths).autograde(LAB_ID, learner, force=True, create=True)
    assert result["success"], result.get("log")
    return report.submission_hash


def formgrade(paths, learner, points, comment=None):
    """What nbgrader's formgrader does when a grader scores the cell (apihandlers: GradeHandler.put)."""
    with Gradebook(f"sqlite:///{paths.course_root / 'gradebook.db'}") as gb:
        grade = gb.find_grade("write-up", LAB_ID, LAB_ID, learner)
        grade.manual_score = points
        grade.needs_manual_grade = grade.manual_score is None and grade.auto_score is None
        if comment is not None:
            gb.find_comment("write-up", LAB_ID, LAB_ID, learner).manual_comment = comment
        gb.db.commit()


def record(settings, paths, name, grader="trainer-1"):
    """record-rubric for the cohort: learner (without the cohort prefix) -> row."""
    return {r.learner.split("-", 1)[1]: r for r in cohorts.record_rubric(settings, paths, name, LAB_ID, grader)}


def rubric_entries(settings, name):
    return [e for e in Store.open(settings).entries() if e.evidence.kind == RUBRIC
            and e.evidence.learner.startswith(f"{name}-")]


def test_manual_grades_are_recorded_from_the_gradebook_all_or_nothing_and_once(cohort, capsys):
    settings, paths, lab, n = cohort
    ada, bo = f"{n}-ada", f"{n}-bo"
    digest = {x: autograde(paths, lab, x, f"{x}'s review: the retry storm began when ...") for x in (ada, bo)}
    mine = [e for e in Store.open(settings).entries() if e.evidence.learner.startswith(f"{n}-")]
    assert {(e.evidence.learner, e.evidence.kind) for e in mine} == {(ada, LAB), (bo, LAB)}  # RecordEvidence
    # nobody graded yet: refused, nothing written
    with pytest.raises(UsageError, match="nothing recorded") as info:
        record(settings, paths, n)
    assert f"{ada}: cell write-up has not been graded in the formgrader yet" in str(info.value)
    # ada graded, bo not: still nothing written (all or nothing)
    formgrade(paths, ada, 8, CRITERIA)
    with pytest.raises(UsageError, match=f"{bo}: cell write-up has not been graded"):
        record(settings, paths, n)
    assert rubric_entries(settings, n) == []
    # both graded (bo below the pass mark): both recorded; chen handed nothing in
    formgrade(paths, bo, 4)
    rows = record(settings, paths, n)
    assert {x: r.state for x, r in rows.items()} == {"ada": "recorded", "bo": "recorded", "chen": "no submission"}
    a, b = rows["ada"].evidence, rows["bo"].evidence
    assert (a.score, a.max_score, a.passed, b.score, b.passed) == (8, 10, True, 4, False)
    assert a.submission_hash == digest[ada] and b.submission_hash == digest[bo]  # the graded submission
    assert a.rubric.grader == "trainer-1" and a.rubric.version == RUBRIC_YAML["version"]
    assert a.rubric.criteria == {"blameless": 3, "causal-clarity": 2, "prevention": 2, "audience": 1}
    assert b.rubric.criteria is None
    assert Store.open(settings).verify().ok
    # never twice for the same submission and rubric version, even when the gradebook changes afterwards
    formgrade(paths, bo, 5)
    again = record(settings, paths, n)
    assert {x: r.state for x, r in again.items()} == {"ada": "already", "bo": "already", "chen": "no submission"}
    assert "keeps 4; the gradebook now says 5" in again["bo"].note
    assert len(rubric_entries(settings, n)) == 2
    # the ladder: ada demonstrated Security L1 with both kinds behind it; bo did not
    view = select(settings, cohort=n)
    assert view.ladder[ada].levels["security"] == 1
    assert view.ladder[ada].cells[("security", 1)].kinds == ["lab", "rubric"]
    assert view.ladder[bo].levels["security"] == 0
    # the command line says the same
    assert main(["cohort", "record-rubric", n, LAB_ID, "--grader", "trainer-1", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert [r["state"] for r in printed["learners"]] == ["already", "already", "no submission"]


def test_a_grade_is_tied_to_the_submission_the_formgrader_showed(cohort):
    settings, paths, lab, n = cohort
    ada = f"{n}-ada"
    autograde(paths, lab, ada, "first version")
    formgrade(paths, ada, 9)
    # ada hands in again and it is autograded: nbgrader flags the old manual grade for review
    second = autograde(paths, lab, ada, "second version, rewritten")
    with pytest.raises(UsageError, match=f"{ada}: cell write-up needs grading again"):
        record(settings, paths, n)
    formgrade(paths, ada, 7)
    rows = record(settings, paths, n)
    assert rows["ada"].state == "recorded" and rows["ada"].evidence.submission_hash == second


def test_a_grade_for_a_notebook_the_record_does_not_hold_is_refused(cohort):
    settings, paths, lab, n = cohort
    ada = f"{n}-ada"
    autograde(paths, lab, ada, "my review")
    formgrade(paths, ada, 9)
    graded = paths.course_root / "autograded" / ada / LAB_ID / f"{LAB_ID}.ipynb"
    nb = nbformat.read(graded, as_version=4)
    next(c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") == "write-up").source = "edited"
    nbformat.write(nb, graded)  # the notebook the formgrader shows is not the one that was autograded
    with pytest.raises(UsageError, match="has no automatic entry in the record"):
        record(settings, paths, n)
    # a criteria comment that does not add up to the score is refused too
    autograde(paths, lab, ada, "my review")
    formgrade(paths, ada, 9, CRITERIA)  # the criteria add up to 8
    with pytest.raises(UsageError, match=f"{ada}: formgrader comment: the criteria add up to 8, the score is 9"):
        record(settings, paths, n)
    assert rubric_entries(settings, n) == []


def test_an_unanswered_write_up_still_needs_a_graders_score(cohort):
    """ladderlab rebuilds each submission from the instructor's cells, so nbgrader cannot tell an untouched
    write-up (no checksum): the trainer grades it (0) like any other, and then it is recorded."""
    settings, paths, lab, n = cohort
    ada = f"{n}-ada"
    released = nbformat.read(paths.course_root / "release" / LAB_ID / f"{LAB_ID}.ipynb", as_version=4)
    blank = next(c for c in released.cells if c.metadata.get("nbgrader", {}).get("grade_id") == "write-up").source
    autograde(paths, lab, ada, blank)
    with pytest.raises(UsageError, match="has not been graded"):
        record(settings, paths, n)
    formgrade(paths, ada, 0)
    rows = record(settings, paths, n)
    assert rows["ada"].state == "recorded" and not rows["ada"].evidence.passed


def test_a_lab_without_a_rubric_has_no_manual_grades_to_record(cohort):
    import dataclasses

    from ladderlab.course import load_course
    from ladderlab.ladder.recording import record_rubric_grades

    settings, paths, lab, n = cohort
    plain = dataclasses.replace(lab, spec=lab.spec.model_copy(update={"rubric": None}))
    with pytest.raises(UsageError, match="has no manually graded part"):
        record_rubric_grades(settings, load_course(settings.course_file), plain, paths.course_root,
                             Store.open(settings), [f"{n}-ada"], "trainer-1")
    with pytest.raises(UsageError, match="grader 'a b'"):
        cohorts.record_rubric(settings, paths, n, LAB_ID, "a b")


def test_criteria_lines_in_a_comment():
    from ladderlab.course.labs import RubricSpec

    spec = RubricSpec.model_validate(RUBRIC_YAML)
    assert criteria_from_comment("Nice work.", spec) == (None, "")
    assert criteria_from_comment(CRITERIA, spec) == (
        {"blameless": 3, "causal-clarity": 2, "prevention": 2, "audience": 1}, "")
    assert criteria_from_comment("- blameless: 3/3\n* causal-clarity: 3\nprevention:2\naudience : 2 / 2", spec)[0] \
        == {"blameless": 3, "causal-clarity": 3, "prevention": 2, "audience": 2}
    assert criteria_from_comment("blameless: 3\n", spec)[1] == \
        "the comment gives points for some criteria but not causal-clarity, prevention, audience"
    assert "above their maximum: blameless 4 > 3" in criteria_from_comment(
        "blameless: 4\ncausal-clarity: 2\nprevention: 2\naudience: 1", spec)[1]
    assert "twice" in criteria_from_comment("blameless: 1\nblameless: 2", spec)[1]


def graded_in_ledger(paths, learner, passed=True):
    """The grading service's ledger says ``learner``'s hand-in was graded (as ``cohort grade`` leaves it)."""
    from ladderlab.service.ledger import GRADED, Ledger

    key = f"{learner}+{LAB_ID}+2026-11-01 10:00:00.000000 UTC"
    ledger = Ledger(paths.ledger_db)
    ledger.add(key)
    ledger.claim(key)
    ledger.finish(key, GRADED, score=10 if passed else 4, max_score=10, passed=passed)


def test_cohort_status_shows_hand_ins_awaiting_their_manual_grade(cohort, capsys):
    """A lab with a manual part is not passed on its automatic checks alone: ``cohort status`` says so."""
    settings, paths, lab, n = cohort
    ada, bo, chen = f"{n}-ada", f"{n}-bo", f"{n}-chen"
    for x in (ada, bo):
        autograde(paths, lab, x, f"{x}'s review")
        graded_in_ledger(paths, x)

    def status():
        assert main(["cohort", "status", n, "--lab", LAB_ID, "--json"]) == 0
        printed = json.loads(capsys.readouterr().out)
        return {r["learner"].split("-", 1)[1]: r for r in printed["states"]}, printed["pass_rates"][LAB_ID]

    rows, rate = status()
    assert {x: (r["state"], r["passed"]) for x, r in rows.items()} == {
        "ada": ("awaiting rubric", None), "bo": ("awaiting rubric", None), "chen": ("not submitted", None)}
    assert f"ladderlab cohort record-rubric {n} {LAB_ID}" in rows["ada"]["note"]
    assert rate == {"learners": 3, "graded": 0, "awaiting_rubric": 2, "passed": 0, "pass_rate": 0.0}
    # the trainer grades both (bo below the pass mark) and records: graded, and passed only with both parts
    formgrade(paths, ada, 8, CRITERIA)
    formgrade(paths, bo, 4)
    record(settings, paths, n)
    rows, rate = status()
    assert {x: (r["state"], r["passed"]) for x, r in rows.items()} == {
        "ada": ("graded", True), "bo": ("graded", False), "chen": ("not submitted", None)}
    assert "manual rubric (grader trainer-1" in rows["ada"]["note"] and "below its pass mark" in rows["bo"]["note"]
    assert rate == {"learners": 3, "graded": 2, "awaiting_rubric": 0, "passed": 1, "pass_rate": 0.333}
    # a hand-in whose automatic part failed is graded and failed, with no manual grade to wait for
    graded_in_ledger(paths, chen, passed=False)
    rows, _ = status()
    assert (rows["chen"]["state"], rows["chen"]["passed"]) == ("graded", False)
    # and the table says the same in words
    assert main(["cohort", "status", n, "--lab", LAB_ID]) == 0
    assert "1/3 passed" in capsys.readouterr().out
