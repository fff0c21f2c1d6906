"""The lab controls on real environments, through the learner API: extend (the reaper honours it, the course
limit holds), reset after locking yourself out with iptables (a fresh environment, same values, working),
and hints: used while working, refused quietly in the grading sandbox, recorded with the graded submission's
evidence and shown on the engineer page."""

from __future__ import annotations

import copy
import shutil
import time

import pytest
from nbformat.v4 import new_code_cell

import ladderlab
from ladderlab.course import load_course
from ladderlab.course.labs import load_lab
from ladderlab.environments import runtime
from ladderlab.environments.reaper import reap
from ladderlab.grading.checks import load_graders
from ladderlab.lab import LabError, hints_used
from ladderlab.ladder.recording import record
from ladderlab.ladder.store import Store, anchor_path
from ladderlab.reports.data import build
from ladderlab.reports.site import page_name, write_site

from .conftest import leftovers

LAB = "sec-1-iptables-hardening"
TTL_MINUTES = 0.3  # the expiry label passes during the test: only the extension keeps the environment


def reach(lab, host, port):
    """Whether ``host`` can open a TCP connection to target:port (from inside the lab network)."""
    probe = f"timeout 3 bash -c 'exec 3<>/dev/tcp/{lab.address('target')}/{port}' && echo open || echo closed"
    return lab.sh(host, probe).stdout.strip() == "open"


def test_extend_lockout_reset_and_hints_on_the_engineer_page(images, client, settings, monkeypatch, tmp_path,
                                                             capsys):
    learner = f"ctl-{tmp_path.name[-8:].replace('_', '')}"
    monkeypatch.setenv("LADDERLAB_LEARNER", learner)
    monkeypatch.setenv("LADDERLAB_TTL_MINUTES", str(TTL_MINUTES))
    monkeypatch.delenv("LADDERLAB_CONNECT", raising=False)
    course = load_course(settings.course_file)
    lab_def = load_lab(settings, course, LAB, registry=load_graders(settings.root))
    url = f"sqlite:///{tmp_path / 'ladder.sqlite'}"
    lab = ladderlab.start(LAB, show=False)
    old_id, params = lab.env_id, lab.params
    envs = [old_id]
    try:
        # --- extend: within the limit, refused beyond it; the reaper honours it once the label expires
        lab.extend(5)
        with pytest.raises(LabError, match="can be extended by"):
            lab.extend(course.policies.environment_limit_minutes)
        created = runtime.load_record(settings, old_id).created
        time.sleep(max(0.0, created + TTL_MINUTES * 60 + 1 - time.time()))
        assert reap(settings, client, dry_run=True).removed.get(old_id) is None
        again = ladderlab.start(LAB, show=False)
        assert again.env_id == old_id  # reattaches: not expired
        again._backend.close()

        # --- lock yourself out, then reset
        assert reach(lab, "monitor", 22)
        lab.sh("target", "iptables -F INPUT && iptables -P INPUT DROP", check=True)
        assert not reach(lab, "monitor", 22)
        capsys.readouterr()
        lab.reset()
        notice = capsys.readouterr().out
        assert f"removes environment {old_id}" in notice and "lab.reset(confirm=True)" in notice
        assert lab.env_id == old_id and not reach(lab, "monitor", 22)  # nothing happened without confirm
        lab.reset(confirm=True)
        envs.append(lab.env_id)
        assert lab.env_id != old_id and lab.params == params
        assert leftovers(client, old_id) == ([], []) and runtime.load_record(settings, old_id) is None
        assert lab.sh("target", "iptables -S INPUT").stdout.startswith("-P INPUT ACCEPT")
        assert reach(lab, "monitor", 22) and reach(lab, "outsider", 80)
        assert lab._live[1].host("target", "ssh").run("hostname").stdout.strip() == "target"  # its new key works
        lab.extend(5)  # a fresh environment has its own clock (and the test's short TTL)

        # --- hints while working
        hints = lab_def.spec.checks["default-deny"].hints
        assert len(hints) >= 2, "sec-1's lab.yaml gives default-deny progressive hints"
        capsys.readouterr()
        lab.hint("default-deny")
        lab.hint("default-deny")
        out = capsys.readouterr().out
        assert f"hint 1 of {len(hints)} for default-deny: {hints[0]}" in out
        assert f"hint 2 of {len(hints)} for default-deny: {hints[1]}" in out
        with pytest.raises(LabError, match="no check 'nope'"):
            lab.hint("nope")
    finally:
        lab.stop()
    for env_id in envs:
        assert leftovers(client, env_id) == ([], [])

    try:
        # --- grading: hints refused quietly in the sandbox; the evidence carries the hints used while working
        nb = copy.deepcopy(lab_def.source)
        nb.cells.append(new_code_cell('lab.hint("default-deny")'))
        from ladderlab.grading.pipeline import grade

        report, graded = grade(settings, client, lab_def, nb, learner)
        assert report.status == "graded" and report.passed, report.to_json()
        texts = [o.get("text", "") for c in graded.cells for o in c.get("outputs", [])]
        assert any("none are shown while the grader runs" in t for t in texts), texts
        assert hints_used(settings.state_dir, learner, LAB) == {"default-deny": 2}  # the sandbox recorded nothing
        seq = record(settings, course.id, report, url)
        store = Store.open(settings, url)
        entry = next(e for e in store.entries() if e.seq == seq)
        assert entry.evidence.hints == {"default-deny": 2} and store.verify().ok
        site = tmp_path / "site"
        write_site(build(course, store.entries(), None, "now", manual=()), site)
        page = (site / "engineer" / page_name(learner)).read_text()
        assert "passed, 2 hints" in page and "default-deny: 2" in page
    finally:
        shutil.rmtree(settings.state_dir / "hints" / learner, ignore_errors=True)
        anchor = anchor_path(settings, url)
        anchor.unlink(missing_ok=True)
        anchor.with_suffix(".lock").unlink(missing_ok=True)
