"""The trainer's loop on one machine, through the CLI a trainer types: a cohort of 12 from a roster, the lab
released through nbgrader's exchange, hand-ins on the learners' behalf (solutions, decoys, untouched and
broken notebooks), collected, graded with two workers, feedback released, status read, the cohort report
built; then grading again counts nothing twice. Faults (a daemon restart, a host never ready, a killed
run): test_cohort_faults.py."""

from __future__ import annotations

import copy
import json
import uuid

import nbformat
import pytest

from tests.integration.conftest import leftovers_for_learner, run

LAB = "sec-1-iptables-hardening"
pytestmark = [pytest.mark.slow]


def _notebooks(settings, tmp_path):
    """(learner suffix, notebook path, expected score) for 12 learners."""
    from ladderlab.course import load_course
    from ladderlab.course.labs import load_lab
    from ladderlab.grading.checks import load_graders
    from ladderlab.grading.selftest import released, with_cells, with_decoy

    lab = load_lab(settings, load_course(settings.course_file), LAB, registry=load_graders(settings.root))
    points = {c.id: c.spec.points for c in lab.checks}
    out = []

    def put(name, nb, expected):
        path = tmp_path / "handins" / name / f"{LAB}.ipynb"
        path.parent.mkdir(parents=True)
        nbformat.write(nb, str(path))
        out.append((name, path, expected))

    put("sol-a", lab.source, 10)
    put("sol-b", lab.source, 10)
    other = lab.solutions[0]
    put("sol-other", with_cells(lab, other.spec.cells), 10)
    no_checks = copy.deepcopy(lab.source)  # check cells deleted: the grader restores the instructor's
    no_checks.cells = [c for c in no_checks.cells if "lab.check(" not in c.source]
    put("sol-no-check-cells", no_checks, 10)
    for name in ("metrics-open-to-all", "not-persisted", "ssh-only", "udp-left-open"):
        decoy = next(d for d in lab.decoys if d.name == name)
        put(f"decoy-{name}", with_decoy(lab, decoy), 10 - sum(points[c] for c in decoy.spec.must_fail))
    put("untouched-a", released(lab), 0)
    put("untouched-b", released(lab), 0)
    broken = copy.deepcopy(lab.source)
    for cell in broken.cells:
        if cell.cell_type == "code" and "### BEGIN SOLUTION" in cell.source:
            cell.source = "this is not python ((("
    put("broken-syntax", broken, 0)
    raising = copy.deepcopy(lab.source)  # every answer cell gives up (later cells still run, so all of them)
    for cell in raising.cells:
        if cell.cell_type == "code" and "### BEGIN SOLUTION" in cell.source:
            cell.source = "raise SystemExit('I give up')"
    put("broken-exit", raising, 0)
    return out, lab.threshold * lab.max_score


def test_a_cohort_of_twelve_graded_with_two_workers(trainer, settings, client, images, tmp_path):
    env, cache = trainer
    tag = uuid.uuid4().hex[:5]
    handins, pass_mark = _notebooks(settings, tmp_path)
    assert len(handins) == 12
    roster = tmp_path / "roster.csv"
    roster.write_text("id,name,email,team\n" + "".join(
        f"{name}-{tag},Learner {i},l{i}@example.org,team-{i % 3}\n" for i, (name, _, _) in enumerate(handins)))
    run(env, "cohort", "create", "autumn")
    r = run(env, "cohort", "add", "autumn", "--roster", str(roster))
    assert "12 learner(s) added" in r.stderr
    run(env, "cohort", "release", "autumn", LAB)
    before = json.loads(run(env, "cohort", "status", "autumn", "--lab", LAB, "--json").stdout)
    assert {s["state"] for s in before["states"]} == {"not submitted"}
    for name, path, _ in handins:
        run(env, "submit", LAB, "--notebook", str(path), "--learner", f"{name}-{tag}", "--no-wait")
    submitted = json.loads(run(env, "cohort", "status", "autumn", "--lab", LAB, "--json").stdout)
    assert {s["state"] for s in submitted["states"]} == {"submitted"}

    r = run(env, "cohort", "grade", "autumn", LAB, "--jobs", "2")
    assert "2 workers (--jobs)" in r.stderr
    status = json.loads(run(env, "cohort", "status", "autumn", "--lab", LAB, "--json").stdout)
    got = {s["learner"]: (s["state"], s["score"], s["passed"]) for s in status["states"]}
    for name, _, expected in handins:
        assert got[f"{name}-{tag}"] == ("graded", expected, expected >= pass_mark - 1e-9), name
    passed = sum(1 for _, _, e in handins if e >= pass_mark - 1e-9)
    assert status["pass_rates"][LAB] == {"learners": 12, "graded": 12, "awaiting_rubric": 0, "passed": passed,
                                         "pass_rate": round(passed / 12, 3)}
    for name, _, _ in handins:  # a log file per submission
        logs = list((cache / "service" / "logs").glob(f"{name}-{tag}+*.log"))
        assert len(logs) == 1 and "graded:" in logs[0].read_text()

    # gradebook and evidence: each learner exactly once, with the score above
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{cache / 'service' / 'course' / 'gradebook.db'}") as gb:
        for name, _, expected in handins:
            assert gb.find_submission(LAB, f"{name}-{tag}").score == expected
    ladder = json.loads(run(env, "ladder", "--cohort", "autumn", "--json").stdout)
    assert len(ladder["learners"]) == 12

    # feedback is the trainer's to release: none yet, then one page per learner
    feedback = cache / "service" / "exchange" / "ladderlab-sre" / "feedback"
    assert not list(feedback.glob("*.html"))
    r = run(env, "cohort", "feedback", "autumn", LAB)
    assert "released to 12 learner(s)" in r.stderr
    assert len(list(feedback.glob("*.html"))) == 12

    # the walkthrough's last step: the cohort report (heatmap, engineer pages, exports) from the signed record
    site = tmp_path / "site"
    r = run(env, "report", "--cohort", "autumn", "--out", str(site))
    report = json.loads((site / "report.json").read_text())
    assert report["verification"]["ok"] is True, report["verification"]
    assert {row["learner"] for row in report["learners"]} == {f"{name}-{tag}" for name, _, _ in handins}
    assert [(lab["learners"], lab["passed"]) for lab in report["labs"] if lab["lab"] == LAB] == [(12, passed)]
    assert all(lab["learners"] == 0 for lab in report["labs"] if lab["lab"] != LAB)
    assert all((site / "engineer" / f"{name}-{tag}.html").is_file() for name, _, _ in handins), \
        sorted(p.name for p in site.rglob("*.html"))[:20]

    # grading again does nothing (each version once); --regrade replaces, never adds. A first grading that met a
    # fault was retried (attempts 2, one verdict): the second run must not add an attempt to any version
    first = {s["key"]: s["attempts"] for s in json.loads(run(env, "service", "status", "--json").stdout)["submissions"]}
    r = run(env, "cohort", "grade", "autumn", LAB, "--jobs", "2")
    again = json.loads(run(env, "service", "status", "--json").stdout)["submissions"]
    assert len(again) == 12 and {s["key"]: s["attempts"] for s in again} == first
    assert sum(n > 1 for n in first.values()) <= 1, first  # a fault now and then is retried; more is a defect
    for name, _, _ in handins:
        assert not leftovers_for_learner(client, f"{name}-{tag}")


def test_bad_roster_rows_import_nothing(trainer, tmp_path):
    env, _ = trainer
    run(env, "cohort", "create", "spring")
    roster = tmp_path / "bad.csv"
    roster.write_text("id,name,email,team\nada,Ada L,ada@example.org,red\nbad id!,Bo,bo@example,blue\n"
                      "ada,Ada again,,red\n")
    r = run(env, "cohort", "add", "spring", "--roster", str(roster), ok=False)
    assert r.returncode == 2
    assert "line 3.id" in r.stderr and "line 3.email" in r.stderr and "line 4.id" in r.stderr
    status = json.loads(run(env, "cohort", "status", "spring", "--lab", LAB, "--json").stdout)
    assert status["learners"] == []
