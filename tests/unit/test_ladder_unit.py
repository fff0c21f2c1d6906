"""The ladder rules and the evidence chain on SQLite (PostgreSQL: tests/integration/test_ladder_postgres.py)."""

from __future__ import annotations

import sqlite3

import pytest

from ladderlab.config import Settings
from ladderlab.course import load_course
from ladderlab.ladder.evidence import CheckResult, Entry, Evidence
from ladderlab.ladder.rules import ladder_for, progress
from ladderlab.ladder.store import Store


@pytest.fixture(scope="module")
def course(settings):
    return load_course(settings.course_file)


def ev(learner="ada", lab="sec-1-iptables-hardening", passed=True, score=None, submission="s1", at="2026-11-01"):
    score = 10.0 if passed and score is None else (score or 0.0)
    return Evidence(course="ladderlab-sre", learner=learner, lab=lab,
                    checks=(CheckResult("default-deny", 2.0 if passed else 0.0, 2.0, passed),),
                    score=score, max_score=10.0, passed=passed, threshold=1.0, seed="ab" * 32,
                    submission_hash=submission, image_digests={"target": "sha256:1"}, check_suite_hash="c",
                    grader_version="0.1.0", recorded_at=at)


def entries(*items):
    return [Entry(i + 1, e, "", "") for i, e in enumerate(items)]


def test_levels_need_every_lower_cell_that_has_labs(course):
    sec1, sec2 = "sec-1-iptables-hardening", "sec-2-tls-server"
    only_l2 = progress(course, "ada", entries(ev(lab=sec2)), manual=())
    assert only_l2.cells[("security", 2)].demonstrated and only_l2.levels["security"] == 0
    both = progress(course, "ada", entries(ev(lab=sec1), ev(lab=sec2)), manual=())
    assert both.levels["security"] == 2
    # SRE: a level with no labs does not block, one with labs does (which levels have labs: read from course.yaml,
    # so that adding a lab does not break this test)
    on = {lvl: [lab.id for lab in course.labs if any(r.track == "sre" and r.level == lvl for r in lab.cells)]
          for lvl in range(1, 7)}
    assert "sre-2-golden-signal-alerts" in on[2] and on[4] and "sre-5-strace-debugging" in on[5]
    # passed L2 and L5, not L4
    sre = progress(course, "ada", entries(*(ev(lab=lab) for lab in on[2] + on[5])), manual=())
    assert sre.levels["sre"] == (0 if on[1] else 2)
    above = 3 if on[3] else 4
    assert sre.next_rung("sre").level == above and sre.next_rung("sre").missing == on[above]
    assert progress(course, "ada", [], manual=()).levels == {t.id: 0 for t in course.ladder.tracks}


def test_failed_partial_reattempted_and_superseded(course):
    lab = "sec-1-iptables-hardening"
    partial = progress(course, "ada", entries(ev(passed=False, score=8.0)), manual=())
    assert not partial.labs[lab].passed and partial.levels["security"] == 0
    reattempt = progress(course, "ada", entries(ev(passed=False, submission="s1"), ev(passed=True, submission="s2")),
                         manual=())
    assert reattempt.labs[lab].passed and reattempt.labs[lab].best.seq == 2
    later_fail = progress(course, "ada", entries(ev(passed=True, submission="s1"), ev(passed=False, submission="s2")),
                          manual=())
    assert later_fail.labs[lab].passed  # a demonstration is not taken back by a later attempt
    regraded = progress(course, "ada", entries(ev(passed=True, submission="s1"), ev(passed=False, submission="s1")),
                        manual=())
    assert not regraded.labs[lab].passed  # the same submission regraded: the latest grading counts
    assert [e.seq for e in regraded.labs[lab].attempts] == [2]
    others = ladder_for(course, entries(ev(learner="bo"), ev(learner="ada", passed=False)), manual=())
    assert others["bo"].levels["security"] == 1 and others["ada"].levels["security"] == 0


def course_with(course, extra_labs=(), clauses=None):
    """The course with more labs appended, or one lab's clauses on its (first) cell replaced."""
    from ladderlab.course import Course

    data = course.model_dump(mode="json")
    for lab in data["labs"]:
        if clauses and lab["id"] in clauses:
            lab["cells"][0]["clauses"] = clauses[lab["id"]]
    data["labs"] += [{"environment": "dns-tls", "points": 10, **lab} for lab in extra_labs]
    return Course.model_validate(data)


TLS_CLAUSES = ["basic-cryptography", "tls-configuration", "key-sizes-algorithms-versions"]


def test_a_demonstrated_cell_claims_only_the_clauses_its_labs_show(course):
    ada = progress(course, "ada", entries(ev(lab="sec-1-iptables-hardening"), ev(lab="sec-2-tls-server")), manual=())
    tls = ada.cells[("security", 2)]
    assert tls.demonstrated and tls.partial and tls.claim == "3 of 8 clauses"
    assert tls.evidenced == TLS_CLAUSES
    assert tls.not_evidenced == ["ssh-configuration", "authentication-and-authorization",
                                 "encryption-in-transit-and-at-rest", "encrypted-networking", "reliability-reasoning"]
    assert tls.shown_by == {"sec-2-tls-server": TLS_CLAUSES}
    assert ada.cells[("security", 1)].evidenced == ["iptables"]
    assert ada.levels["security"] == 2  # the level shown is computed as before: a cell shown in part counts
    # a cell that is not demonstrated claims nothing, even for the clauses of a lab it did not pass
    failed = progress(course, "bo", entries(ev(learner="bo", lab="sec-2-tls-server", passed=False)), manual=())
    cell = failed.cells[("security", 2)]
    assert not cell.demonstrated and not cell.partial and cell.evidenced == [] and cell.claim == "no clause"
    assert cell.not_evidenced == course.track("security").clause_ids(2)
    # a cell no lab maps to: no claim either
    assert ada.cells[("security", 3)].evidenced == [] and not ada.cells[("security", 3)].demonstrated


def test_a_cell_claims_the_union_of_its_labs_clauses_once_every_lab_passed(course):
    ssh = {"id": "sec-2-ssh-server", "title": "Harden sshd", "status": "planned",
           "cells": [{"track": "security", "level": 2,
                      "clauses": ["key-sizes-algorithms-versions", "ssh-configuration"]}]}
    two = course_with(course, [ssh])
    tls_only = progress(two, "ada", entries(ev(lab="sec-2-tls-server")), manual=())
    assert not tls_only.cells[("security", 2)].demonstrated and tls_only.cells[("security", 2)].evidenced == []
    both = progress(two, "ada", entries(ev(lab="sec-2-tls-server"), ev(lab="sec-2-ssh-server")), manual=())
    cell = both.cells[("security", 2)]
    assert cell.evidenced == ["basic-cryptography", "ssh-configuration", "tls-configuration",
                              "key-sizes-algorithms-versions"]  # in the cell's order, each once
    assert cell.claim == "4 of 8 clauses" and cell.partial
    everything = course_with(course, clauses={"sec-2-tls-server": two.track("security").clause_ids(2)})
    full = progress(everything, "ada", entries(ev(lab="sec-2-tls-server")), manual=()).cells[("security", 2)]
    assert full.demonstrated and not full.partial and full.not_evidenced == [] and full.claim == "all 8 clauses"


@pytest.fixture
def store(tmp_path):
    settings = Settings(root=tmp_path, cache_dir=tmp_path / ".cache")
    return Store.open(settings, f"sqlite:///{tmp_path / 'ladder.sqlite'}")


def raw(tmp_path):
    conn = sqlite3.connect(tmp_path / "ladder.sqlite")
    conn.execute("DROP TRIGGER ladder_evidence_no_update")
    conn.execute("DROP TRIGGER ladder_evidence_no_delete")
    return conn


def test_chain_appends_and_verifies(store):
    for i in range(5):
        store.append(ev(learner=f"l{i}"))
    v = store.verify()
    assert v.ok and v.entries == 5
    got = store.entries()
    assert [e.seq for e in got] == [1, 2, 3, 4, 5] and got[1].prev_hash == got[0].hash
    assert [e.evidence.learner for e in store.entries(learner="l3")] == ["l3"]


def test_the_table_refuses_updates_and_deletes(store, tmp_path):
    store.append(ev())
    conn = sqlite3.connect(tmp_path / "ladder.sqlite")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        conn.execute("UPDATE ladder_evidence SET learner = 'eve'")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        conn.execute("DELETE FROM ladder_evidence")


@pytest.mark.parametrize("where", [1, 3, 5])
def test_one_changed_byte_is_found(store, tmp_path, where):
    for i in range(5):
        store.append(ev(learner=f"l{i}"))
    conn = raw(tmp_path)
    payload = conn.execute("SELECT payload FROM ladder_evidence WHERE seq = ?", (where,)).fetchone()[0]
    conn.execute("UPDATE ladder_evidence SET payload = ? WHERE seq = ?",
                 (payload.replace('"score":10.0', '"score":10.5'), where))
    conn.commit()
    v = store.verify()
    assert not v.ok and v.first_broken == where and "was changed" in v.reason


def test_rewriting_hashes_too_breaks_the_next_link_or_the_anchor(store, tmp_path):
    from ladderlab.ladder.evidence import chain_hash

    for i in range(3):
        store.append(ev(learner=f"l{i}"))
    conn = raw(tmp_path)
    prev, payload = conn.execute("SELECT prev_hash, payload FROM ladder_evidence WHERE seq = 2").fetchone()
    forged = payload.replace('"passed":true', '"passed":false')
    conn.execute("UPDATE ladder_evidence SET payload = ?, hash = ? WHERE seq = 2", (forged, chain_hash(prev, forged)))
    conn.commit()
    v = store.verify()
    assert not v.ok and v.first_broken == 3 and "does not follow" in v.reason
    # rewrite the whole tail consistently: the signed anchor still catches it
    h2 = chain_hash(prev, forged)
    p3 = conn.execute("SELECT payload FROM ladder_evidence WHERE seq = 3").fetchone()[0]
    conn.execute("UPDATE ladder_evidence SET prev_hash = ?, hash = ? WHERE seq = 3", (h2, chain_hash(h2, p3)))
    conn.commit()
    v = store.verify()
    assert not v.ok and v.first_broken == 3 and "rewritten" in v.reason


def test_deleted_entries_are_found(store, tmp_path):
    for i in range(4):
        store.append(ev(learner=f"l{i}"))
    conn = raw(tmp_path)
    conn.execute("DELETE FROM ladder_evidence WHERE seq = 2")
    conn.commit()
    v = store.verify()
    assert not v.ok and v.first_broken == 2 and "missing" in v.reason
    conn.execute("DELETE FROM ladder_evidence WHERE seq >= 3")
    conn.commit()
    v = store.verify()
    assert not v.ok and v.first_broken == 4 and "deleted" in v.reason


def test_a_forged_anchor_is_refused(store, tmp_path):
    import json

    store.append(ev())
    data = json.loads(store.anchor.read_text())
    data["seq"] = 7
    store.anchor.write_text(json.dumps(data))
    v = store.verify()
    assert not v.ok and "not signed by the course key" in v.reason


def test_the_course_key_is_private(store, tmp_path):
    from ladderlab.ladder.keys import key_file

    store.append(ev())
    path = key_file(store.settings)
    assert path.stat().st_mode & 0o777 == 0o600 and path.parent.stat().st_mode & 0o777 == 0o700


def test_concurrent_appends_keep_one_chain_and_one_anchor(store):
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(lambda i: store.append(ev(learner=f"w{i}")), range(40)))
    v = store.verify()
    assert v.ok and v.entries == 40
    assert not list(store.anchor.parent.glob("*.tmp"))


def test_claim_labels():
    from ladderlab.ladder.rules import CellStatus

    def cell(clauses, evidenced, demonstrated=True):
        return CellStatus("t", 1, ["lab"], demonstrated, [] if demonstrated else ["lab"], clauses, evidenced)

    assert cell(["a"], ["a"]).claim == "the one clause" and not cell(["a"], ["a"]).partial
    assert cell(["a", "b", "c"], ["a", "b", "c"]).claim == "all 3 clauses"
    assert cell(["a", "b", "c"], ["b"]).claim == "1 of 3 clauses" and cell(["a", "b", "c"], ["b"]).partial
    assert cell(["a", "b"], [], demonstrated=False).claim == "no clause"
    assert not cell(["a", "b"], [], demonstrated=False).partial
