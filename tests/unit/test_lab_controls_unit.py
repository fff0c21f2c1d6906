"""The lab controls' logic without Docker: hints (sequence, log, evidence, engineer page), the environment's
lifetime (extension bounds, the effective expiry the reaper uses, the warning once per threshold) and what
``lab.reset`` refuses or shows. Real environments: tests/integration/test_lab_controls.py."""

from __future__ import annotations

import csv
import json
import shutil
import time

import pytest
import yaml

from ladderlab.config import Settings
from ladderlab.course import load_course
from ladderlab.course.model import Policies
from ladderlab.environments import labels as L
from ladderlab.environments import runtime
from ladderlab.environments.connection import Connection, HostEntry
from ladderlab.environments.transports.base import CommandResult
from ladderlab.grading.pipeline import CheckOutcome, GradeReport
from ladderlab.lab import (
    Lab,
    LabError,
    _Backend,
    expiry_level,
    extended_expiry,
    format_left,
    hint_log_path,
    hints_used,
    use_hint,
)
from ladderlab.ladder.evidence import Entry, Evidence
from ladderlab.ladder.recording import evidence_from_report, record
from ladderlab.ladder.store import Store
from ladderlab.reports.data import build, outcome_label
from ladderlab.reports.site import write_site

from .test_ladder_unit import ev

LAB = "sec-1-iptables-hardening"
HINTS = {"default-deny": ["Which policy does the INPUT chain have?", "iptables -P INPUT DROP, after the allows."],
         "rules-persisted": ["A reboot forgets rules that live only in the kernel."]}


class Quiet(_Backend):
    def __init__(self):
        self.ran = []

    def run(self, host, command, timeout):
        self.ran.append(command)
        return CommandResult(command, 0, "", "", host=host)


@pytest.fixture
def course_root(settings, tmp_path):
    """A course root with the real course.yaml and the lab's lab.yaml plus hints (one of them for a hidden
    check): the labs' own hints are written by their authors, this test owns its own."""
    root = tmp_path / "course"
    (root / "labs" / LAB).mkdir(parents=True)
    (root / "environments").mkdir()
    shutil.copy(settings.course_file, root / "course.yaml")
    spec = yaml.safe_load((settings.root / "labs" / LAB / "lab.yaml").read_text())
    for check_id, texts in HINTS.items():
        spec["checks"][check_id]["hints"] = texts
    spec["checks"]["loopback-allowed"].pop("hints", None)
    (root / "labs" / LAB / "lab.yaml").write_text(yaml.safe_dump(spec))
    return Settings(root=root, cache_dir=tmp_path / "cache")


def conn(tmp_path, *, grading=False, expires=None):
    return Connection(lab=LAB, env_id="firewall-1", learner="ada", params={"metrics_port": 9137},
                      expires=time.time() + 3600 if expires is None else expires,
                      hosts={"target": HostEntry("10.0.0.2", "target", None, True)}, private_key="",
                      answers_path=str(tmp_path / "answers.json"), grading=grading)


class FakeEnv:
    """What a live Lab keeps of its environment: the record (a real EnvRecord saved in the state dir)."""

    def __init__(self, record):
        self.record = record
        self.downed = False

    def down(self):
        self.downed = True


def saved_record(settings, *, created, expires):
    record = runtime.EnvRecord(id="firewall-1", env="firewall", lab=LAB, learner="ada", seed="s", params={},
                               created=created, expires=expires, networks={},
                               hosts={"target": runtime.HostInfo("target", "target", "img", "c1"),
                                      "monitor": runtime.HostInfo("monitor", "probe", "img", "c2")})
    runtime._save_record(settings, record)
    return record


# --- hints ---------------------------------------------------------------------------------------------


def test_hint_log_gives_each_hint_once_in_order_then_none(tmp_path):
    path = hint_log_path(tmp_path, "ada", LAB)
    assert path == tmp_path / "hints" / "ada" / f"{LAB}.json"
    assert [use_hint(path, "default-deny", 2, now=1) for _ in range(4)] == [0, 1, None, None]
    assert use_hint(path, "rules-persisted", 1) == 0
    assert hints_used(tmp_path, "ada", LAB) == {"default-deny": 2, "rules-persisted": 1}
    log = json.loads(path.read_text())
    assert [e["hint"] for e in log["events"] if e["check"] == "default-deny"] == [1, 2]
    assert not list(path.parent.glob(".*.tmp"))  # replaced atomically, nothing left over
    assert hints_used(tmp_path, "bo", LAB) == {}


def test_hint_log_refuses_path_tricks_and_survives_garbage(tmp_path):
    assert hint_log_path(tmp_path, "../x", LAB) is None and hint_log_path(tmp_path, "ada", "../../etc") is None
    assert hints_used(tmp_path, "../x", LAB) == {}
    path = hint_log_path(tmp_path, "ada", LAB)
    path.parent.mkdir(parents=True)
    path.write_text("{not json")
    assert hints_used(tmp_path, "ada", LAB) == {}
    path.write_text(json.dumps({"used": {"default-deny": 1, "Bad Id": 3, "x": True, "y": -1, "z": 10 ** 6}}))
    assert hints_used(tmp_path, "ada", LAB) == {"default-deny": 1}
    assert use_hint(path, "default-deny", 3) == 1  # carries on from the readable part


def test_lab_hint_shows_the_next_one_and_records_it(course_root, tmp_path, capsys):
    lab = Lab(LAB, conn(tmp_path), Quiet(), live=(course_root, FakeEnv(None)))
    lab.hint("default-deny")
    out = capsys.readouterr().out
    assert out.startswith(f"hint 1 of 2 for default-deny: {HINTS['default-deny'][0]}\n")
    lab.hint("default-deny")
    assert capsys.readouterr().out.startswith(f"hint 2 of 2 for default-deny: {HINTS['default-deny'][1]}")
    lab.hint("default-deny")
    out = capsys.readouterr().out
    assert out.startswith("no more hints for default-deny: you have seen all 2:") and HINTS["default-deny"][1] in out
    lab.hint("rules-persisted")  # a hidden check: its hints are written for learners too
    assert "hint 1 of 1 for rules-persisted" in capsys.readouterr().out
    lab.hint("loopback-allowed")
    assert capsys.readouterr().out == "there are no hints for loopback-allowed\n"
    with pytest.raises(LabError, match=r"no check 'nope' \(checks: default-deny, .*rules-persisted"):
        lab.hint("nope")
    assert lab.hints_used() == {"default-deny": 2, "rules-persisted": 1}
    assert hints_used(course_root.state_dir, "ada", LAB) == {"default-deny": 2, "rules-persisted": 1}


def test_no_hints_while_grading_and_nothing_recorded(course_root, tmp_path, capsys):
    lab = Lab(LAB, conn(tmp_path, grading=True), Quiet())
    lab.hint("default-deny")
    assert "none are shown while the grader runs" in capsys.readouterr().out
    assert not (course_root.state_dir / "hints").exists()


# --- evidence and the report ------------------------------------------------------------------------------


def report(student="ada", passed=True):
    checks = [CheckOutcome("default-deny", 2.0 if passed else 0.0, 2.0, passed, ""),
              CheckOutcome("rules-persisted", 2.0, 2.0, True, "")]
    return GradeReport(lab=LAB, student=student, score=10.0 if passed else 8.0, max_score=10.0, passed=passed,
                       checks=checks, seed="ab" * 32, threshold=1.0, submission_hash="h1")


def test_recording_carries_the_hints_and_old_entries_still_verify(course_root, tmp_path):
    path = hint_log_path(course_root.state_dir, "ada", LAB)
    use_hint(path, "default-deny", 2)
    use_hint(path, "default-deny", 2)
    use_hint(path, "other-lab-check", 2)  # not a check of this report: not evidence of this grading
    url = f"sqlite:///{tmp_path / 'ladder.sqlite'}"
    store = Store.open(course_root, url)
    old = ev("bo")  # an entry as written before hints were recorded: no "hints" key in its payload
    assert old.hints is None and "hints" not in json.loads(old.payload())
    store.append(old)
    seq = record(course_root, "ladderlab-sre", report(), url)
    record(course_root, "ladderlab-sre", report("chen"), url)
    entries = {e.seq: e.evidence for e in store.entries()}
    assert entries[seq].hints == {"default-deny": 2} and entries[seq].hints_total == 2
    assert entries[seq + 1].hints == {} and entries[seq + 1].hints_total == 0  # recorded: none used
    assert entries[1].hints is None and entries[1].hints_total is None
    assert store.verify().ok
    # The old payload round-trips byte for byte (its hash stays right if it is ever recomputed).
    assert Evidence.from_json(json.loads(old.payload())).payload() == old.payload()
    with pytest.raises(ValueError, match="hints"):
        Evidence.from_json({**json.loads(old.payload()), "hints": {"default-deny": "two"}})
    assert evidence_from_report("c", report()).hints == {}


def test_engineer_page_and_exports_show_the_hints(settings, tmp_path):
    course = load_course(settings.course_file)
    with_hints = Evidence(**{**ev("ada").__dict__, "hints": {"default-deny": 1, "rules-persisted": 1}})
    record_ = [Entry(1, with_hints, "", "1" * 64), Entry(2, ev("bo"), "", "2" * 64),
               Entry(3, Evidence(**{**ev("chen").__dict__, "hints": {}}), "", "3" * 64)]
    assert [outcome_label(e.evidence) for e in record_] == ["passed, 2 hints", "passed", "passed, no hints"]
    assert outcome_label(Evidence(**{**ev("x", passed=False).__dict__, "hints": {"a": 1}})) == "not passed, 1 hint"
    write_site(build(course, record_, None, "now", manual=()), tmp_path)
    ada = (tmp_path / "engineer" / "ada.html").read_text()
    assert "passed, 2 hints" in ada and "default-deny: 1, rules-persisted: 1" in ada
    assert "passed, no hints" in (tmp_path / "engineer" / "chen.html").read_text()
    assert "hint" not in (tmp_path / "engineer" / "bo.html").read_text()  # recorded before hints: not known
    rows = {r["learner"]: r for r in csv.DictReader((tmp_path / "evidence.csv").open())}
    assert (rows["ada"]["hints"], rows["bo"]["hints"], rows["chen"]["hints"]) == ("2", "", "0")
    learners = {x["learner"]: x for x in json.loads((tmp_path / "report.json").read_text())["learners"]}
    assert learners["ada"]["hints"] == {LAB: 2} and learners["bo"]["hints"] == {LAB: None}


# --- the environment's lifetime ---------------------------------------------------------------------------


def test_extension_arithmetic_and_bounds():
    created, now = 1000.0, 1000.0 + 3600
    expires = created + 240 * 60
    assert extended_expiry(created, expires, 30, 480, now) == expires + 1800
    assert extended_expiry(created, expires, 240, 480, now) == created + 480 * 60  # exactly to the limit
    with pytest.raises(ValueError, match=r"live 8h00m from its start; this one can be extended by 240 more minutes"):
        extended_expiry(created, expires, 241, 480, now)
    with pytest.raises(ValueError, match="by 0 more minutes"):
        extended_expiry(created, created + 480 * 60, 1, 480, now)
    with pytest.raises(ValueError, match="expired"):
        extended_expiry(created, now - 1, 10, 480, now)
    assert (format_left(0), format_left(59), format_left(3600 + 5 * 60)) == ("expired", "0h01m", "1h05m")
    assert (expiry_level(601), expiry_level(599), expiry_level(0)) == (None, "low", "expired")


def test_course_limit_policy():
    assert Policies().environment_limit_minutes == 480  # twice the TTL when unset
    assert Policies(environment_ttl_minutes=60, environment_max_minutes=90).environment_limit_minutes == 90
    assert Policies(environment_ttl_minutes=6000).environment_limit_minutes == 7 * 24 * 60
    with pytest.raises(ValueError, match="shorter than environment_ttl_minutes"):
        Policies(environment_ttl_minutes=240, environment_max_minutes=60)


def test_the_reaper_honours_an_extension_within_bounds():
    created = time.time() - 3600
    label = created + 600
    assert L.effective_expiry(label, created, None) == label
    assert L.effective_expiry(label, created, label + 900) == label + 900  # extended: the record's expiry
    assert L.effective_expiry(label, created, label - 5) == label  # a record never shortens the label
    assert L.effective_expiry(label, created, created + 10 * L.MAX_LIFETIME) == created + L.MAX_LIFETIME
    summary = runtime.EnvSummary("e", "firewall", LAB, "ada", ["target"], 1, created,
                                 L.effective_expiry(label, created, time.time() + 300), "o", True)
    assert summary.status == "ready"  # the label alone says expired
    assert runtime.EnvSummary("e", "firewall", LAB, "ada", ["target"], 1, created, label, "o", True).status == \
        "expired"


def test_extend_writes_the_record_and_refuses_past_the_limit(course_root, tmp_path, capsys):
    now = time.time()
    rec = saved_record(course_root, created=now - 60, expires=now - 60 + 240 * 60)
    lab = Lab(LAB, conn(tmp_path, expires=rec.expires), Quiet(), live=(course_root, FakeEnv(rec)))
    lab.extend(30)
    assert "extended by 30 min" in capsys.readouterr().out
    on_disk = runtime.load_record(course_root, "firewall-1")
    assert on_disk.expires == pytest.approx(rec.created + 270 * 60)
    assert lab._conn.expires == on_disk.expires
    with pytest.raises(LabError, match="extended by 210 more minutes"):
        lab.extend(211)
    for bad in (0, -5, True, "10", float("nan"), float("inf")):
        with pytest.raises(LabError, match="positive number of minutes"):
            lab.extend(bad)
    assert runtime.load_record(course_root, "firewall-1").expires == on_disk.expires
    with pytest.raises(LabError, match="graded run cannot extend"):
        Lab(LAB, conn(tmp_path, grading=True), Quiet()).extend(10)


def test_status_panel_and_warning_once_per_threshold(course_root, tmp_path, capsys):
    now = time.time()
    rec = saved_record(course_root, created=now - 3000, expires=now + 300)
    shown = Lab(LAB, conn(tmp_path, expires=rec.expires), Quiet(), live=(course_root, FakeEnv(rec)))
    html = shown._repr_html_()
    assert "0h05m</b> left" in html and "5 minutes left in this lab environment: lab.extend(30)" in html
    assert "5 minutes left" in repr(shown)
    shown.sh("target", "true")
    assert capsys.readouterr().err == ""  # the panel showed it already
    lab = Lab(LAB, conn(tmp_path, expires=rec.expires), Quiet(), live=(course_root, FakeEnv(rec)))
    lab.sh("target", "true")
    assert "5 minutes left" in capsys.readouterr().err  # first noticed by a command
    assert "5 minutes left" in lab._repr_html_()  # the panel always shows it
    lab.sh("target", "true")
    lab.sh("target", "true")
    assert capsys.readouterr().err == ""  # not on every call
    lab.extend(3)  # another expiry: still under ten minutes, so one more warning
    capsys.readouterr()
    lab.sh("target", "true")
    assert "8 minutes left" in capsys.readouterr().err
    rec.expires = time.time() - 1  # another kernel (or time) moved it: read from the record
    runtime._save_record(course_root, rec)
    lab.sh("target", "true")
    assert "has expired" in capsys.readouterr().err
    lab.sh("target", "true")
    assert capsys.readouterr().err == ""
    quiet = Lab(LAB, conn(tmp_path, grading=True, expires=time.time() + 60), Quiet())
    quiet.sh("target", "true")
    assert capsys.readouterr().err == "" and "minutes left" not in quiet._repr_html_()
    roomy = Lab(LAB, conn(tmp_path, expires=time.time() + 7200), Quiet())
    roomy.sh("target", "true")
    assert capsys.readouterr().err == "" and "\u26a0" not in roomy._repr_html_()


# --- reset --------------------------------------------------------------------------------------------------


def test_reset_refuses_while_grading_and_over_ssh(tmp_path):
    with pytest.raises(LabError, match="a graded run never resets"):
        Lab(LAB, conn(tmp_path, grading=True), Quiet()).reset(confirm=True)
    with pytest.raises(LabError, match="over SSH: reset it where it runs"):
        Lab(LAB, conn(tmp_path), Quiet()).reset(confirm=True)


def test_reset_without_confirm_only_says_what_is_lost(course_root, tmp_path, capsys):
    now = time.time()
    env = FakeEnv(saved_record(course_root, created=now - 1800, expires=now + 3600))
    lab = Lab(LAB, conn(tmp_path), Quiet(), live=(course_root, env))
    lab.reset()
    out = capsys.readouterr().out
    assert "removes environment firewall-1" in out and "the hosts target, monitor" in out
    assert "(30 min ago)" in out and "kept: this notebook" in out and "lab.reset(confirm=True)" in out
    assert not env.downed
