"""Evidence kinds: automatic checks (``lab``) and a trainer's manual rubric grade (``rubric``).

The record keeps them apart and old entries intact; lab.yaml's ``rubric:`` is validated against the notebook;
the ladder rules count a lab with a rubric only when both parts passed for the same submission; and every view
(``ladder --json``, the table, the report, badges, xAPI) says which kinds stand behind a cell."""

from __future__ import annotations

import csv
import json
import shutil

import nbformat
import pytest
import yaml

from ladderlab.config import Settings
from ladderlab.course import load_course
from ladderlab.course.labs import lab_rubrics, load_lab
from ladderlab.errors import ConfigError
from ladderlab.grading.checks import load_graders
from ladderlab.ladder import xapi
from ladderlab.ladder.badges import issue, verify
from ladderlab.ladder.evidence import LAB, RUBRIC, CheckResult, Entry, Evidence, RubricGrade
from ladderlab.ladder.keys import load_or_create
from ladderlab.ladder.rules import ladder_for, progress
from ladderlab.ladder.store import Store
from ladderlab.ladder.views import ladder_json, ladder_rows, select
from ladderlab.reports.publish import publish

LAB_ID = "sec-1-iptables-hardening"
CELL = ("security", 1)
RUBRIC_YAML = {"version": "2026-11-1", "cell": "write-up", "pass_points": 6,
               "criteria": [{"id": "blameless", "title": "Blameless", "points": 3},
                            {"id": "causal-clarity", "title": "Causal clarity", "points": 3},
                            {"id": "prevention", "title": "Prevention", "points": 2},
                            {"id": "audience", "title": "Audience", "points": 2}]}


def manual_cell(points=10, grade_id="write-up", **meta):
    nbg = {"grade": True, "solution": True, "locked": False, "points": points, "grade_id": grade_id,
           "schema_version": 3, "task": False, **meta}
    return nbformat.v4.new_markdown_cell("Write the incident review here.", metadata={"nbgrader": nbg})


def add_rubric(root, rubric=RUBRIC_YAML, cell=None):
    """Give the course copy's sec-1 lab a manually graded cell and a lab.yaml rubric for it."""
    lab_dir = root / "labs" / LAB_ID
    if rubric is not None:
        data = yaml.safe_load((lab_dir / "lab.yaml").read_text())
        data["rubric"] = rubric
        (lab_dir / "lab.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    path = lab_dir / f"{LAB_ID}.ipynb"
    nb = nbformat.read(path, as_version=4)
    nb.cells.insert(16, cell if cell is not None else manual_cell())
    nbformat.write(nb, path)


@pytest.fixture
def course_root(tmp_path, root):
    """A throwaway course root: the real course.yaml and graders, sec-1 with a rubric (a lab of my own)."""
    shutil.copy(root / "course.yaml", tmp_path / "course.yaml")
    (tmp_path / "environments").mkdir()
    shutil.copytree(root / "graders", tmp_path / "graders", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(root / "labs" / LAB_ID, tmp_path / "labs" / LAB_ID)
    return tmp_path


def settings_of(tmp):
    return Settings(root=tmp, cache_dir=tmp / ".cache")


def load(tmp):
    settings = settings_of(tmp)
    return load_lab(settings, load_course(tmp / "course.yaml"), LAB_ID, registry=load_graders(tmp))


def auto(learner="ada", passed=True, submission="s1", at="2026-11-01T10:00:00+00:00"):
    return Evidence(course="ladderlab-sre", learner=learner, lab=LAB_ID,
                    checks=(CheckResult("default-deny", 2.0 if passed else 0.0, 2.0, passed),),
                    score=10.0 if passed else 4.0, max_score=10.0, passed=passed, threshold=1.0, seed="ab" * 32,
                    submission_hash=submission, image_digests={"target": "sha256:1"}, check_suite_hash="c",
                    grader_version="0.1.0", recorded_at=at, hints={})


def manual(learner="ada", points=8.0, submission="s1", version="2026-11-1", grader="trainer-1", criteria=None):
    return Evidence(course="ladderlab-sre", learner=learner, lab=LAB_ID, checks=(), score=points, max_score=10.0,
                    passed=points >= 6, threshold=0.6, seed="ab" * 32, submission_hash=submission,
                    check_suite_hash="r", grader_version="0.1.0", recorded_at="2026-11-02T09:00:00+00:00",
                    source="gradebook", kind=RUBRIC,
                    rubric=RubricGrade(version, grader, "write-up", 6.0, criteria))


def entries(*items):
    return [Entry(i + 1, e, "", f"{i + 1:064x}") for i, e in enumerate(items)]


# --- the record ----------------------------------------------------------------------------------------------

#: An entry exactly as ladderlab wrote it before evidence kinds existed (no ``kind``, no ``rubric``).
OLD_PAYLOAD = ('{"check_suite_hash":"c","checks":[{"id":"default-deny","max_points":2.0,"passed":true,"points":2.0}],'
               '"course":"ladderlab-sre","grader_version":"0.1.0","hints":{},"image_digests":{"target":"sha256:1"},'
               '"lab":"sec-1-iptables-hardening","learner":"ada","max_score":10.0,"passed":true,'
               '"recorded_at":"2026-11-01T10:00:00+00:00","schema":1,"score":10.0,"seed":"' + "ab" * 32 + '",'
               '"source":"grading","submission_hash":"s1","threshold":1.0}')


def test_an_entry_from_before_kinds_reads_as_lab_and_serialises_byte_identically():
    old = Evidence.from_json(json.loads(OLD_PAYLOAD))
    assert old.kind == LAB and old.rubric is None and not old.is_manual
    assert old.payload() == OLD_PAYLOAD
    assert auto().payload() == OLD_PAYLOAD  # a lab entry written today has the same form


def test_a_rubric_entry_round_trips_with_grader_version_and_criteria():
    ev = manual(criteria={"blameless": 3.0, "causal-clarity": 2.0, "prevention": 2.0, "audience": 1.0})
    data = json.loads(ev.payload())
    assert data["kind"] == "rubric"
    assert data["rubric"] == {"version": "2026-11-1", "grader": "trainer-1", "cell": "write-up", "pass_points": 6.0,
                              "criteria": {"blameless": 3.0, "causal-clarity": 2.0, "prevention": 2.0,
                                           "audience": 1.0}}
    back = Evidence.from_json(data)
    assert back == ev and back.payload() == ev.payload()


@pytest.mark.parametrize("change", [
    {"kind": "attestation"},                      # not a kind this record knows
    {"kind": "rubric"},                           # a rubric entry without its grade
    {"kind": "lab"},                              # lab entries are written without a kind
    {"kind": "rubric", "rubric": {"version": "v", "grader": "", "cell": "c", "pass_points": 1}},
    {"kind": "rubric", "rubric": {"version": "v", "grader": "t", "cell": "c", "pass_points": 1, "who": "x"}},
    {"rubric": {"version": "v", "grader": "t", "cell": "c", "pass_points": 1}},  # a lab entry with a grade
])
def test_malformed_kinds_do_not_parse(change):
    with pytest.raises((ValueError, TypeError)):
        Evidence.from_json({**json.loads(OLD_PAYLOAD), **change})


def test_the_chain_holds_both_kinds_and_verifies(tmp_path):
    store = Store.open(settings_of(tmp_path), f"sqlite:///{tmp_path / 'ladder.sqlite'}")
    store.append(Evidence.from_json(json.loads(OLD_PAYLOAD)))
    store.append(manual())
    assert store.verify().ok
    first, second = store.entries()
    assert first.evidence.kind == LAB and second.evidence.kind == RUBRIC
    assert second.evidence.rubric is not None and second.evidence.rubric.grader == "trainer-1"
    import sqlite3

    with sqlite3.connect(tmp_path / "ladder.sqlite") as db:
        assert db.execute("select payload from ladder_evidence where seq = 1").fetchone()[0] == OLD_PAYLOAD


# --- the rules -----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def course(settings):
    return load_course(settings.course_file)


def lab_of(course, *items, needs=True):
    p = progress(course, "ada", entries(*items), manual={LAB_ID} if needs else ())
    return p.labs[LAB_ID], p.cells[CELL], p.levels["security"]


def test_a_lab_with_a_rubric_needs_both_parts_for_the_same_submission(course):
    status, cell, level = lab_of(course, auto())
    assert not status.passed and status.awaiting_rubric and not cell.demonstrated and level == 0
    assert status.basis == "automatic checks"
    status, cell, level = lab_of(course, auto(), manual())
    assert status.passed and cell.demonstrated and level == 1
    assert status.kinds == [LAB, RUBRIC] and cell.kinds == [LAB, RUBRIC]
    assert status.basis == "automatic checks + manual rubric (grader trainer-1, rubric 2026-11-1, 8/10)"
    assert status.best is not None and status.best.seq == 1 and status.rubric is not None and status.rubric.seq == 2


def test_a_rubric_grade_counts_only_for_its_own_submission_and_when_it_passes(course):
    status, cell, _ = lab_of(course, auto(submission="s1"), manual(submission="s2"))  # another notebook's grade
    assert not status.passed and not cell.demonstrated and status.awaiting_rubric
    status, cell, _ = lab_of(course, auto(), manual(points=5.0))  # below the pass mark
    assert not status.passed and not cell.demonstrated and not status.awaiting_rubric
    assert "below its pass mark" in status.basis
    status, _, _ = lab_of(course, auto(passed=False), manual(points=10.0))  # the automatic part failed
    assert not status.passed
    alone = progress(course, "ada", entries(manual()), manual={LAB_ID})  # a manual grade alone is nothing
    assert LAB_ID not in alone.labs and not alone.cells[CELL].demonstrated


def test_the_latest_manual_grade_of_a_submission_counts_and_never_supersedes_the_automatic_one(course):
    status, _, _ = lab_of(course, auto(), manual(points=8.0), manual(points=4.0, version="2026-12-1"))
    assert not status.passed  # graded again (a new rubric version) below the mark
    status, _, _ = lab_of(course, auto(), manual(points=4.0), manual(points=9.0, version="2026-12-1"))
    assert status.passed and status.rubric is not None and status.rubric.evidence.rubric.version == "2026-12-1"
    # two submissions: the first passed both parts, a later one only the automatic part: still demonstrated
    status, _, _ = lab_of(course, auto(submission="s1"), manual(submission="s1"), auto(submission="s2"))
    assert status.passed and status.best.evidence.submission_hash == "s1"


def test_a_lab_without_a_rubric_is_judged_by_its_checks_alone(course):
    status, cell, level = lab_of(course, auto(), needs=False)
    assert status.passed and cell.kinds == [LAB] and level == 1 and not status.manual
    status, cell, _ = lab_of(course, auto(), manual(points=0.0), needs=False)  # a stray grade changes nothing
    assert status.passed and cell.kinds == [LAB]


# --- lab.yaml ``rubric:`` --------------------------------------------------------------------------------------


def test_a_lab_with_a_rubric_loads(course_root):
    add_rubric(course_root)
    lab = load(course_root)
    assert lab.rubric is not None and lab.rubric.max_points == 10 and lab.rubric.cell == "write-up"
    assert lab.max_score == 10  # the automatic part alone: course.yaml's points
    found = lab_rubrics(settings_of(course_root), load_course(course_root / "course.yaml"))
    assert list(found) == [LAB_ID] and found[LAB_ID].version == "2026-11-1"


def _crit(points):
    return [{"id": f"c{i}", "title": "t", "points": p} for i, p in enumerate(points)]


@pytest.mark.parametrize(("rubric", "cell", "message"), [
    ({**RUBRIC_YAML, "pass_points": 11}, None,
     "lab.yaml: rubric.pass_points: 11 is more than the criteria's 10 points"),
    ({**RUBRIC_YAML, "cell": "nope"}, None,
     "lab.yaml: rubric.cell: no cell with grade_id 'nope' in the notebook (manually graded answer cells: write-up)"),
    (RUBRIC_YAML, manual_cell(points=8),
     "cells[16].metadata.nbgrader.points: 8 but the lab.yaml rubric's criteria add up to 10"),
    ({**RUBRIC_YAML, "cell": "task-deny"}, None,
     "rubric.cell: cells[8] ('task-deny') is not a manually graded answer cell"),
    ({**RUBRIC_YAML, "criteria": [*RUBRIC_YAML["criteria"][:3], {**RUBRIC_YAML["criteria"][0], "points": 2}]}, None,
     "rubric.criteria[3].id: duplicate criterion 'blameless'"),
    ({**RUBRIC_YAML, "version": 3}, None, "rubric.version: input should be a valid string"),
    ({**RUBRIC_YAML, "criteria": []}, None, "rubric.criteria: list should have at least 1 item"),
    ({**RUBRIC_YAML, "extra": 1}, None, "rubric.extra: unknown field"),
    (None, None, "a manually graded cell ('write-up') that no lab.yaml rubric names"),
    ({**RUBRIC_YAML, "cell": "other", "criteria": _crit([5, 5])}, manual_cell(grade_id="other"),
     "cells[16].metadata.nbgrader: a manually graded cell ('write-up') that no lab.yaml rubric names"),
])
def test_a_bad_rubric_names_file_and_field(course_root, rubric, cell, message):
    add_rubric(course_root, rubric, cell)
    if rubric is not None and rubric.get("cell") == "other":
        add_rubric(course_root, None)  # a second manual cell, named by no rubric
    with pytest.raises(ConfigError) as info:
        load(course_root)
    assert message in str(info.value)
    assert f"labs/{LAB_ID}/" in str(info.value)


def test_the_ladder_readers_refuse_a_bad_rubric_rather_than_guess(course_root):
    add_rubric(course_root, {**RUBRIC_YAML, "pass_points": "six"})
    with pytest.raises(ConfigError, match=r"labs/sec-1-iptables-hardening/lab.yaml: rubric.pass_points"):
        lab_rubrics(settings_of(course_root), load_course(course_root / "course.yaml"))


# --- what the views show -----------------------------------------------------------------------------------


@pytest.fixture
def recorded(course_root):
    """The course copy with sec-1's rubric, and a record: ada passed both parts, bo only the automatic one."""
    add_rubric(course_root)
    settings = settings_of(course_root)
    store = Store.open(settings)
    store.append(auto("ada"))
    store.append(manual("ada", criteria={"blameless": 3.0, "causal-clarity": 2.0, "prevention": 2.0,
                                         "audience": 1.0}))
    store.append(auto("bo"))
    return settings, store


def test_ladder_json_and_table_say_which_kinds_stand_behind_a_cell(recorded):
    settings, store = recorded
    view = select(settings, store=store)
    assert view.manual == {LAB_ID: "2026-11-1"}
    data = {p["learner"]: p for p in ladder_json(view)["learners"]}
    assert data["ada"]["levels"]["security"] == 1 and data["bo"]["levels"]["security"] == 0
    assert data["ada"]["tracks"]["security"]["kinds"] == {"1": ["lab", "rubric"]}
    lab = data["ada"]["labs"][LAB_ID]
    assert lab["kinds"] == ["lab", "rubric"] and lab["rubric"]["grader"] == "trainer-1"
    assert lab["rubric"]["version"] == "2026-11-1" and lab["rubric"]["points"] == 8.0
    assert data["bo"]["labs"][LAB_ID] | {"awaiting_rubric": True, "passed": False, "rubric": None} == \
        data["bo"]["labs"][LAB_ID]
    _header, rows = ladder_rows(view)
    by = {r[0]: r for r in rows}
    assert by["ada"][-1] == f"{LAB_ID} (+rubric: trainer-1)" and by["bo"][-1] == "-"


def test_the_report_shows_the_kinds_per_cell_and_lab(recorded, tmp_path):
    settings, store = recorded
    site = publish(select(settings, store=store), store, tmp_path / "site")
    assert site.verification.ok
    index = (tmp_path / "site" / "index.html").read_text()
    assert 'class="c demo part manual" title="ada: sec L1' in index  # sec-1 shows 1 of L1's 7 clauses
    assert "automatic checks + manual rubric (grader trainer-1, rubric 2026-11-1, 8/10)" in index
    assert "automatic checks passed, awaiting the manual rubric: sec-1-iptables-hardening" in index  # bo
    page = (tmp_path / "site" / "engineer" / "ada.html").read_text()
    assert "Evidence: automatic checks and a manual rubric" in page
    assert "manual rubric 2026-11-1: 8/10 (pass mark 6)" in page and "graded by trainer-1" in page
    assert "criteria: audience: 1, blameless: 3, causal-clarity: 2, prevention: 2 <span" in page
    rows = {r["learner"]: r for r in csv.DictReader((tmp_path / "site" / "evidence.csv").open())}
    assert rows["ada"]["kinds"] == "lab+rubric" and rows["ada"]["rubric_grader"] == "trainer-1"
    assert rows["ada"]["rubric_entry"] == "2" and rows["bo"]["kinds"] == "lab" and rows["bo"]["passed"] == "False"
    report = json.loads((tmp_path / "site" / "report.json").read_text())
    ada = next(learner for learner in report["learners"] if learner["learner"] == "ada")
    assert ada["kinds"] == {"security:1": ["lab", "rubric"]}


def test_badges_list_the_manual_grade_as_evidence_and_still_verify(recorded, tmp_path):
    settings, store = recorded
    view = select(settings, store=store)
    key = load_or_create(settings)
    issued = issue(view.course, view.ladder, key, tmp_path / "badges")
    assert [(i.learner, i.track, i.level) for i in issued] == [("ada", "security", 1)]
    credential = verify(issued[0].path.read_text().strip(), key.public_key())
    evidence = credential["evidence"]
    assert len(evidence) == 2
    assert evidence[0]["genre"].startswith("Graded lab") and evidence[1]["genre"].startswith("Manual rubric")
    assert "graded by trainer-1" in evidence[1]["description"] and "rubric 2026-11-1" in evidence[1]["description"]
    assert "automatic checks + manual rubric (grader trainer-1" in \
        credential["credentialSubject"]["achievement"]["criteria"]["narrative"]


def test_xapi_names_the_grader_of_a_manual_grade(recorded):
    settings, store = recorded
    course = load_course(settings.course_file)
    statements = [xapi.statement(course, e) for e in store.entries()]
    assert statements[0]["context"]["extensions"]["urn:ladderlab:kind"] == "lab"
    assert "instructor" not in statements[0]["context"]
    assert statements[1]["context"]["instructor"]["account"]["name"] == "trainer-1"
    assert statements[1]["context"]["extensions"]["urn:ladderlab:rubric"]["version"] == "2026-11-1"


def test_every_reader_of_the_ladder_knows_which_labs_need_a_rubric(recorded, monkeypatch):
    """The rules need the labs with a rubric: the views, the report and the learner's own ladder pass them
    (a reader that did not would count bo's automatic pass alone)."""
    from ladderlab.lab.ladder_view import my_ladder

    settings, store = recorded
    view = select(settings, store=store)
    assert not view.ladder["bo"].cells[CELL].demonstrated
    # what leaving them out would do
    assert ladder_for(view.course, view.entries, manual=())["bo"].cells[CELL].demonstrated
    monkeypatch.setenv("LADDERLAB_ROOT", str(settings.root))
    monkeypatch.setenv("LADDERLAB_CACHE_DIR", str(settings.cache_dir))
    bo, ada = my_ladder("bo"), my_ladder("ada")
    assert bo.progress.levels["security"] == 0 and ada.progress.levels["security"] == 1
    assert "(automatic part passed; awaiting the trainer's manual grade)" in repr(bo)
    assert "automatic checks + a trainer&#39;s manual rubric grade" in (ada._repr_html_() or "")
