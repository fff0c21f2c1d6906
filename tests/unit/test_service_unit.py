"""The grading service's logic without Docker: the ledger, the workspace's placement rule, intake,
retries, crash recovery and what the learner is shown. The pipeline's ``grade`` is replaced only where a
test needs the grader to fail to judge (a fault); everything else (nbgrader's release, submit, the
exchange, Huey's queue) is the real thing."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

from ladderlab.config import Settings
from ladderlab.service import handin, queue
from ladderlab.service.ledger import ERROR, GRADED, GRADING, QUEUED, Ledger, Submission, parse_key
from ladderlab.service.paths import ServicePaths
from ladderlab.service.workspace import _place
from ladderlab.testing import private_cache

LAB = "sec-1-iptables-hardening"


# --- the ledger ------------------------------------------------------------------------------------


def test_parse_key_takes_nbgraders_inbound_names_only():
    assert parse_key("ada+sec-1+2026-11-22 18:50:13.3 UTC+Xy") == ("ada", "sec-1", "2026-11-22 18:50:13.3 UTC")
    assert parse_key("ada+sec-1+ts") == ("ada", "sec-1", "ts")
    for bad in ("ada", "ada+sec-1", "+sec-1+ts", "a+b+c+d+e", "ada++ts"):
        with pytest.raises(ValueError):
            parse_key(bad)


def test_a_version_is_added_once_claimed_once_and_final_stays_final(tmp_path):
    ledger = Ledger(tmp_path / "ledger.db")
    key = "ada+lab-x+ts1+r"
    assert ledger.add(key) is True
    assert ledger.add(key) is False  # scanned again: not a second row
    first = ledger.claim(key)
    assert first is not None and first.status == GRADING and first.attempts == 1
    assert [s.key for s in ledger.unfinished()] == [key]
    ledger.requeue(key, "engine restarted")
    assert ledger.get(key).status == QUEUED and ledger.get(key).error == "engine restarted"
    assert ledger.claim(key).attempts == 2
    ledger.finish(key, GRADED, score=7, max_score=10, passed=False, checks=[{"id": "c", "status": "failed"}])
    assert ledger.claim(key) is None  # graded: never graded again
    assert ledger.unfinished() == []
    done = ledger.get(key)
    assert (done.status, done.score, done.passed, done.checks) == (GRADED, 7, False, [{"id": "c", "status": "failed"}])
    assert ledger.claim("nobody+lab+ts") is None


def test_latest_is_the_newest_version_and_readers_cannot_write(tmp_path):
    ledger = Ledger(tmp_path / "ledger.db")
    ledger.add("ada+lab-x+ts1+a")
    time.sleep(0.01)
    ledger.add("ada+lab-x+ts2+b")
    ledger.add("bob+lab-x+ts3+c")
    assert ledger.latest("ada", "lab-x").key == "ada+lab-x+ts2+b"
    reader = Ledger(tmp_path / "ledger.db", readonly=True)
    assert [s.key for s in reader.all("ada")] == ["ada+lab-x+ts1+a", "ada+lab-x+ts2+b"]
    with pytest.raises(Exception, match="readonly"):
        reader.add("eve+lab-x+ts4+d")


# --- the workspace: a changed lab never lands over the learner's work ----------------------------------


def test_placement_fetches_keeps_updates_untouched_and_puts_changed_labs_beside(tmp_path):
    handed: dict[str, str] = {}
    v1, v2 = tmp_path / "v1.ipynb", tmp_path / "v2.ipynb"
    v1.write_text('{"v": 1}')
    v2.write_text('{"v": 2}')
    mine = tmp_path / "ws" / LAB / f"{LAB}.ipynb"
    assert _place(v1, mine, handed, LAB) == "fetched" and mine.read_text() == '{"v": 1}'
    assert _place(v1, mine, handed, LAB) == "kept"
    assert _place(v2, mine, handed, LAB) == "updated" and mine.read_text() == '{"v": 2}'  # untouched: replaced
    mine.write_text('{"v": 2, "mine": true}')  # the learner starts working
    v3 = tmp_path / "v3.ipynb"
    v3.write_text('{"v": 3}')
    outcome = _place(v3, mine, handed, LAB)
    assert outcome.startswith("changed since you started")
    assert mine.read_text() == '{"v": 2, "mine": true}'
    beside = [p.name for p in mine.parent.iterdir() if p.name != mine.name]
    assert len(beside) == 1 and beside[0].startswith(f"{LAB}.updated-")
    assert _place(v3, mine, handed, LAB) == "kept"  # once beside is there, nothing more happens


# --- the service, on a real nbgrader course root and exchange --------------------------------------------


@pytest.fixture(scope="module")
def released(tmp_path_factory, settings):
    """A private cache (course root, exchange, queue, ledger) with every published lab released by nbgrader."""
    mine = private_cache(settings, tmp_path_factory.mktemp("cache"))
    paths = ServicePaths.of(mine, tmp_path_factory.mktemp("workspace"))
    course = handin.ensure_released(mine, paths)
    return mine, paths, course


def _scan_and_wait(service, key):
    """Start the service, let it take the exchange's hand-ins, wait for ``key`` to be final, stop."""
    service.start()
    try:
        service.scan()
        return service.wait(key, 60)
    finally:
        service.stop()


def _hand_in(paths, course, learner):
    source = paths.settings.root / "labs" / LAB / f"{LAB}.ipynb"
    return handin.hand_in(paths, course.id, LAB, source, learner)


def test_a_fault_is_retried_then_shown_as_not_graded_and_nothing_is_recorded(released, monkeypatch):
    settings, paths, course = released
    calls = []

    def cannot_judge(settings, client, lab, nb, student, **kw):
        from ladderlab.grading.pipeline import GradeReport

        calls.append(student)
        return GradeReport(lab.id, student, 0, lab.max_score, False, [], status="error",
                           error="EnvError: the engine went away"), nb

    monkeypatch.setattr("ladderlab.grading.pipeline.grade", cannot_judge)
    key = _hand_in(paths, course, "fault-ada")
    service = queue.GradingService(settings, paths, retries=1, retry_delay=0.2)
    service._client = object()  # never used: grade is replaced
    sub = _scan_and_wait(service, key)
    assert calls == ["fault-ada", "fault-ada"]  # the first attempt and one retry
    assert sub.status == ERROR and sub.attempts == 2 and "engine went away" in sub.error
    assert sub.score is None and sub.passed is None
    assert "could not be graded, try again" in handin.describe(sub)[0]
    assert "not a failure" in handin.describe(sub)[0]
    # nbgrader's gradebook has no grade for the learner and there is no evidence
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{paths.course_root / 'gradebook.db'}") as gb:
        assert "fault-ada" not in {s.id for s in gb.students}
    assert not (paths.course_root / "autograded" / "fault-ada").exists()
    # the learner's Fetch Feedback finds a page that says so
    pages = list((paths.exchange / course.id / "feedback").glob("*.html"))
    assert any("could not be graded, try again" in p.read_text() and "engine went away" in p.read_text()
               for p in pages)


def test_a_grading_left_half_done_by_a_crash_is_picked_up_once(released, monkeypatch):
    settings, paths, course = released
    seen = []

    def fault(settings, client, lab, nb, student, **kw):
        from ladderlab.grading.pipeline import GradeReport

        seen.append(student)
        return GradeReport(lab.id, student, 0, lab.max_score, False, [], status="error", error="boom"), nb

    monkeypatch.setattr("ladderlab.grading.pipeline.grade", fault)
    key = _hand_in(paths, course, "crash-bob")
    ledger = Ledger(paths.ledger_db)
    ledger.add(key)
    ledger.claim(key)  # a worker had it when the process died
    service = queue.GradingService(settings, paths, retries=0, retry_delay=0.1)
    service._client = object()
    assert key in service.recover()
    assert ledger.get(key).status == QUEUED
    sub = _scan_and_wait(service, key)  # already in the ledger: the scan does not queue it a second time
    assert seen == ["crash-bob"]
    assert sub.status == ERROR and sub.attempts == 2  # the crashed attempt counts


def test_intake_waits_for_nbgrader_to_finish_writing_and_ignores_strangers(released):
    settings, paths, course = released
    inbound = paths.exchange / course.id / "inbound"
    half = inbound / "eve+sec-1-iptables-hardening+ts+half"
    half.mkdir(parents=True)
    (half / f"{LAB}.ipynb").write_text("{}")  # no submission secret yet: nbgrader is still copying
    (inbound / "not-a-submission").mkdir()
    (inbound / "eve+lab+ts+file").write_text("a file, not a hand-in")
    service = queue.GradingService(settings, paths)
    try:
        assert service.scan() == []
        (half / "submission_secret.txt").write_text("s3cret")
        past = time.time() - 5
        for p in half.iterdir():
            os.utime(p, (past, past))
        assert service.scan() == [half.name]
        assert service.scan() == []
    finally:
        service.huey.flush()
        Ledger(paths.ledger_db).finish(half.name, ERROR, error="test cleanup")
        shutil.rmtree(half)


def test_hand_in_refuses_what_is_not_a_notebook_or_not_a_learner(released, tmp_path):
    settings, paths, course = released
    bogus = tmp_path / "x.ipynb"
    bogus.write_text("not json")
    with pytest.raises(Exception, match="not a valid notebook"):
        handin.hand_in(paths, course.id, LAB, bogus, "ada")
    with pytest.raises(Exception, match="no such notebook"):
        handin.hand_in(paths, course.id, LAB, tmp_path / "missing.ipynb", "ada")
    source = settings.root / "labs" / LAB / f"{LAB}.ipynb"
    with pytest.raises(Exception, match="learner id"):
        handin.hand_in(paths, course.id, LAB, source, "ada+admin")


def test_the_learner_sees_hidden_checks_by_title_only():
    sub = Submission(key="k", student="ada", lab=LAB, timestamp="t", status=GRADED, score=8, max_score=10,
                     passed=True, checks=[
                         {"id": "visible", "title": "ssh is open", "status": "passed", "hidden": False,
                          "feedback": "from outsider: 22 accepts"},
                         {"id": "secret", "title": "metrics answer the monitor only", "status": "failed",
                          "hidden": True, "feedback": ""}])
    lines = handin.describe(sub)
    assert lines[0] == f"{LAB}: 8/10, passed"
    assert "from outsider: 22 accepts" in lines[1]
    assert lines[2].endswith("secret: metrics answer the monitor only (hidden check)")


def test_unsaved_cells_names_code_the_kernel_ran_that_the_file_lacks(tmp_path):
    import nbformat
    from nbformat.v4 import new_code_cell, new_notebook

    nb = new_notebook(cells=[new_code_cell("lab.sh('target', 'iptables -S')"), new_code_cell("x = 1")])
    path = tmp_path / "n.ipynb"
    nbformat.write(nb, str(path))
    assert handin.unsaved_cells(path, ["x = 1", "lab.sh('target', 'iptables -S')", "lab.submit()"]) == []
    assert handin.unsaved_cells(path, ["x = 1", "y = 2"]) == ["y = 2"]


def test_service_paths_follow_the_environment(tmp_path, monkeypatch):
    settings = Settings(root=tmp_path, cache_dir=tmp_path / ".cache")
    monkeypatch.delenv("LADDERLAB_WORKSPACE", raising=False)
    assert ServicePaths.of(settings).workspace == (tmp_path / "workspace").resolve()
    monkeypatch.setenv("LADDERLAB_WORKSPACE", str(tmp_path / "elsewhere"))
    assert ServicePaths.of(settings).workspace == (tmp_path / "elsewhere").resolve()
    assert ServicePaths.of(settings, Path(tmp_path / "given")).workspace == (tmp_path / "given").resolve()


def test_retries_back_off_exponentially_up_to_a_ceiling():
    assert [queue.backoff(n, 5.0, 120.0) for n in range(1, 8)] == [5.0, 10.0, 20.0, 40.0, 80.0, 120.0, 120.0]
    assert queue.backoff(0, 5.0) == 5.0  # an attempt count the ledger has not raised yet: the first delay


def test_an_exception_in_the_graders_own_code_is_retried_then_an_error_never_a_stuck_row(released, monkeypatch):
    settings, paths, course = released
    calls = []

    def crashes(settings, client, lab, nb, student, **kw):
        calls.append(student)
        raise RuntimeError("a bug of ours")

    monkeypatch.setattr("ladderlab.grading.pipeline.grade", crashes)
    key = _hand_in(paths, course, "bug-cy")
    service = queue.GradingService(settings, paths, retries=1, retry_delay=0.1)
    service._client = object()
    sub = _scan_and_wait(service, key)
    assert calls == ["bug-cy", "bug-cy"]
    assert sub.status == ERROR and "the grader failed: RuntimeError: a bug of ours" in sub.error
    log = Path(sub.log).read_text()
    assert "Traceback" in log and "a bug of ours" in log


def test_the_latest_of_many_pairs_is_the_latest_of_each(tmp_path):
    """Ledger.latest_of (one query for a cohort) answers what Ledger.latest answers pair by pair: the newest
    version by timestamp that is not superseded, for the learners and labs asked only; also read-only."""
    import random

    rng = random.Random(3)
    ledger = Ledger(tmp_path / "ledger.sqlite")
    students, labs = [f"s{i}" for i in range(6)], ["lab-a", "lab-b", "lab-c"]
    for _ in range(60):
        key = f"{rng.choice(students)}+{rng.choice(labs)}+2026-11-{rng.randint(10, 28)} 10:00:0{rng.randint(0, 9)}"
        if ledger.add(key):
            what = rng.random()
            if what < 0.4:
                ledger.finish(key, GRADED, score=1.0, max_score=2.0, passed=False)
            elif what < 0.6:
                ledger.supersede(key, "newer")
    asked_students, asked_labs = students[:5], labs[:2]
    want = {(s, lab): sub for s in asked_students for lab in asked_labs if (sub := ledger.latest(s, lab))}
    assert want and any(sub.status == GRADED for sub in want.values())
    assert ledger.latest_of(asked_students, asked_labs) == want
    assert Ledger(tmp_path / "ledger.sqlite", readonly=True).latest_of(asked_students, asked_labs) == want
    assert ledger.latest_of([], labs) == {}
