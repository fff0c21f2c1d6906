"""The judging table's logic (service/judging.py) on SQLite: one claim per version, the judgement carried whole,
faults and silent graders never turned into verdicts. The same table between machines on PostgreSQL is
tests/integration/test_remote_grader.py."""

from __future__ import annotations

import threading
import time

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from ladderlab.errors import UsageError
from ladderlab.grading.pipeline import CheckOutcome, GradeReport
from ladderlab.service import judging
from ladderlab.service.judging import JudgingFault, JudgingTable


@pytest.fixture
def table(tmp_path):
    t = JudgingTable(f"sqlite:///{tmp_path / 'judging.db'}")
    t.create()
    yield t
    t.close()


def _report(student="ada", lab="sec-1") -> GradeReport:
    return GradeReport(lab=lab, student=student, score=3.0, max_score=5.0, passed=False,
                       checks=[CheckOutcome("c1", 3.0, 3.0, True, "ok"),
                               CheckOutcome("c2", 0.0, 2.0, False, "port 22 open", status="failed")],
                       env_id="e1", seed="s", timings={"up": 1.5}, problems=["p"], threshold=4.0,
                       submission_hash="abc", image_digests={"web": "sha256:1"}, check_suite_hash="h")


def _nb() -> str:
    return nbformat.writes(new_notebook(cells=[new_code_cell("print(1)")]))


def test_report_round_trips_whole():
    report = _report()
    again = judging.report_from_json(judging.report_to_json(report))
    assert again == report
    assert again.checks[1].status == "failed" and again.submission_hash == "abc"


def test_one_claim_per_version_oldest_first(table):
    table.post("ada+sec-1+t1", "sec-1", "ada", _nb())
    time.sleep(0.01)
    table.post("bob+sec-1+t2", "sec-1", "bob", _nb())
    first, second = table.claim("g1"), table.claim("g2")
    assert (first.key, second.key) == ("ada+sec-1+t1", "bob+sec-1+t2")
    assert first.attempts == 1
    assert table.claim("g3") is None
    assert table.state(first.key)["grader"] == first.claimant and first.claimant.startswith("g1#")


def test_only_the_claimant_may_finish(table):
    table.post("k", "sec-1", "ada", _nb())
    job = table.claim("g1")
    late = judging.report_to_json(_report())
    assert not table.finish(job.key, "g1", late, _nb()), "the claim's name counts, not the grader's"
    assert not table.beat(job.key, "g2#0")
    assert table.beat(job.key, job.claimant)
    assert table.finish(job.key, job.claimant, judging.report_to_json(_report()), _nb())
    assert table.state("k")["status"] == judging.JUDGED


def _grader(table, outcome, name="g1", delay=0.2):
    """A grader thread that claims the first version and answers ``outcome`` ("judge" or "fault")."""
    def run():
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            job = table.claim(name)
            if job is None:
                time.sleep(0.05)
                continue
            time.sleep(delay)
            if outcome == "judge":
                table.finish(job.key, job.claimant, judging.report_to_json(_report(job.student, job.lab)), job.notebook)
            else:
                table.fault(job.key, job.claimant, "the engine did not answer")
            return
    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def test_judge_waits_for_the_judgement_and_drops_the_row(table):
    _grader(table, "judge")
    notes: list[str] = []
    report, graded = table.judge("ada+sec-1+t1", "sec-1", "ada", _nb(), timeout=10, note=notes.append, poll=0.05)
    assert report.score == 3.0 and report.student == "ada"
    assert graded.cells[0].source == "print(1)"
    assert any("judged by g1" in n for n in notes)
    assert table.state("ada+sec-1+t1") is None


def test_a_fault_is_never_a_verdict(table):
    _grader(table, "fault")
    with pytest.raises(JudgingFault, match=r"grader g1#[0-9a-f]{8}: the engine did not answer"):
        table.judge("k", "sec-1", "ada", _nb(), timeout=10, poll=0.05)
    assert table.state("k") is None


def test_no_grader_is_a_fault_not_a_verdict(table):
    with pytest.raises(JudgingFault, match=r"no grader judged it within 0\.3 s"):
        table.judge("k", "sec-1", "ada", _nb(), timeout=0.3, poll=0.05)


def test_a_silent_grader_loses_its_claim_to_another(table):
    notes: list[str] = []
    silent = threading.Thread(target=lambda: table.claim("dead"), daemon=True)
    result: dict = {}

    def wait():
        result["out"] = table.judge("k", "sec-1", "ada", _nb(), timeout=10, note=notes.append, poll=0.05,
                                    stale=0.5)

    waiter = threading.Thread(target=wait, daemon=True)
    waiter.start()
    while table.state("k") is None:
        time.sleep(0.01)
    silent.start()
    silent.join()
    assert table.state("k")["grader"].startswith("dead#")
    while table.state("k")["status"] != judging.QUEUED:  # taken back after 0.5 s without a beat
        time.sleep(0.05)
    _grader(table, "judge", name="alive", delay=0)
    waiter.join(10)
    assert result["out"][0].score == 3.0
    assert any(n.startswith("grader dead#") and "stopped answering" in n for n in notes), notes
    assert any("judged by alive" in n for n in notes), notes


def test_stop_ends_the_wait(table):
    stop = threading.Event()
    threading.Timer(0.2, stop.set).start()
    with pytest.raises(JudgingFault, match="stopped"):
        table.judge("k", "sec-1", "ada", _nb(), timeout=10, stop=stop, poll=0.05)


def test_a_bad_url_names_the_database_without_its_password():
    with pytest.raises(UsageError) as err:
        JudgingTable("nosuchdb+nodriver://grader:s3cret@10.0.0.1/judging")
    assert "s3cret" not in str(err.value) and "grader:***@10.0.0.1" in str(err.value)


def test_a_claim_taken_back_is_no_longer_its_graders_even_in_the_same_process(table):
    table.post("k", "sec-1", "ada", _nb())
    slow = table.claim("g1")
    row = table.state("k")
    assert table.take_back("k", row["grader"], row["beat"])
    again = table.claim("g1")  # another thread of the same grader process
    assert again.key == "k" and again.claimant != slow.claimant and again.attempts == 2
    assert not table.beat("k", slow.claimant)
    assert not table.fault("k", slow.claimant, "late")
    assert not table.finish("k", slow.claimant, judging.report_to_json(_report()), _nb())
    assert table.state("k")["status"] == judging.JUDGING
    assert table.finish("k", again.claimant, judging.report_to_json(_report()), _nb())


def test_a_claim_that_beat_meanwhile_is_not_taken_back(table):
    table.post("k", "sec-1", "ada", _nb())
    job = table.claim("g1")
    seen = table.state("k")
    time.sleep(0.01)
    assert table.beat("k", job.claimant)
    assert not table.take_back("k", seen["grader"], seen["beat"])


def test_a_judgement_the_hub_cannot_read_is_a_fault(table):
    def garbled():
        while (job := table.claim("g1")) is None:
            time.sleep(0.02)
        table.finish(job.key, job.claimant, {"lab": "sec-1"}, "not a notebook")
    threading.Thread(target=garbled, daemon=True).start()
    with pytest.raises(JudgingFault, match="cannot read"):
        table.judge("k", "sec-1", "ada", _nb(), timeout=10, poll=0.05)


@pytest.fixture(scope="module")
def sec1():
    from ladderlab.config import Settings
    from ladderlab.course import load_course
    from ladderlab.course.labs import load_lab
    from ladderlab.grading.checks import load_graders

    settings = Settings.from_env()
    return settings, load_lab(settings, load_course(settings.course_file), "sec-1-iptables-hardening",
                              registry=load_graders(settings.root))


def test_the_hub_records_only_a_judgement_made_as_it_would_make_it(sec1, tmp_path):
    """A grading machine with another seed secret or another checkout, or a judgement of another hand-in: each is
    refused by name (Retry: could not judge, never a verdict)."""
    import dataclasses
    from types import SimpleNamespace

    from ladderlab.course.seeds import course_secret, derive_seed
    from ladderlab.grading.pipeline import ERROR, submission_hash
    from ladderlab.service.ledger import Submission
    from ladderlab.service.queue import GradingService, Retry

    settings, lab = sec1
    hub = SimpleNamespace(settings=dataclasses.replace(settings, cache_dir=tmp_path), course=lab.course)
    sub = Submission(key="k", student="ada", lab=lab.id, timestamp="t", status="grading")
    good = dataclasses.replace(
        _report("ada", lab.id), submission_hash=submission_hash(lab, lab.source), check_suite_hash=lab.suite_hash(),
        seed=derive_seed(lab.course.id, "ada", lab.id, secret=course_secret(hub.settings)))
    GradingService._trust(hub, good, sub, lab, lab.source)  # type: ignore[arg-type]
    wrong = {
        "another seed than this course's": dataclasses.replace(good, seed="0" * 64),
        "other checks than this course's": dataclasses.replace(good, check_suite_hash="old"),
        "another notebook": dataclasses.replace(good, submission_hash="x"),
        "names bob/": dataclasses.replace(good, student="bob"),
        "the engine stopped": dataclasses.replace(good, status=ERROR, error="the engine stopped"),
    }
    for why, report in wrong.items():
        with pytest.raises(Retry, match=why):
            GradingService._trust(hub, report, sub, lab, lab.source)  # type: ignore[arg-type]
