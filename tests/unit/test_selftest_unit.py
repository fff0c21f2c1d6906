"""The self-test's plan (no Docker): which learners, which gradings; other correct solutions load or fail clearly."""

from __future__ import annotations

import shutil

import pytest
import yaml

from ladderlab.config import Settings
from ladderlab.course import load_course
from ladderlab.course.labs import load_lab
from ladderlab.errors import ConfigError
from ladderlab.grading.checks import load_graders
from ladderlab.grading.selftest import Learner, choose_learners, env_choices, learners_for, plan, uncovered

LAB = "sec-1-iptables-hardening"


def fake_draws(table):
    """Learner ``selftest-<n>`` draws ``table[n - 1]`` (else the first row)."""
    def draws(learner):
        n = int(learner.rsplit("-", 1)[1])
        return table[n - 1] if n <= len(table) else table[0]
    return draws


def test_learners_are_chosen_to_cover_every_choice_value():
    choices = {"fault": ["a", "b", "c"], "port": ["1", "2"]}
    # selftest-1..3 all draw fault a; b first appears at 4, c at 6: the greedy choice finds them.
    table = [{"fault": "a", "port": "1"}, {"fault": "a", "port": "1"}, {"fault": "a", "port": "2"},
             {"fault": "b", "port": "1"}, {"fault": "a", "port": "1"}, {"fault": "c", "port": "2"}]
    chosen = choose_learners(choices, fake_draws(table), 3, candidates=6)
    drawn = [fake_draws(table)(lid) for lid in chosen]
    assert {d["fault"] for d in drawn} == {"a", "b", "c"}
    assert {d["port"] for d in drawn} == {"1", "2"}
    assert chosen == ["selftest-1", "selftest-6", "selftest-4"]  # ties go to the lowest number
    assert chosen == choose_learners(choices, fake_draws(table), 3, candidates=6)  # the same every time


def test_a_cover_the_greedy_choice_misses_is_found():
    """Most-new-values-first takes selftest-1 (3 new values), then 2 and 3, and never draws q=2; 2, 3, 4 draw all."""
    choices = {"p": ["1", "2", "3"], "q": ["1", "2", "3"], "r": ["1", "2"]}
    table = [{"p": "3", "q": "1", "r": "2"}, {"p": "2", "q": "1", "r": "1"}, {"p": "1", "q": "3", "r": "2"},
             {"p": "3", "q": "2", "r": "2"}, {"p": "1", "q": "2", "r": "2"}]
    chosen = choose_learners(choices, fake_draws(table), 3, candidates=5)
    assert sorted(chosen) == ["selftest-2", "selftest-3", "selftest-4"]
    assert uncovered(choices, [Learner(lid, "s", fake_draws(table)(lid)) for lid in chosen]) == []
    # with no cover among the candidates, the greedy choice stands and reports what is undrawn
    assert len(choose_learners(choices, fake_draws(table[:3]), 3, candidates=3)) == 3


def test_too_few_seeds_report_what_is_not_covered():
    choices = {"fault": ["a", "b", "c"]}
    table = [{"fault": "a"}, {"fault": "b"}, {"fault": "c"}]
    chosen = choose_learners(choices, fake_draws(table), 2, candidates=3)
    learners = [Learner(lid, "s", fake_draws(table)(lid)) for lid in chosen]
    assert len(uncovered(choices, learners)) == 1
    assert uncovered(choices, [Learner(f"selftest-{i}", "s", row) for i, row in enumerate(table, 1)]) == []


def test_without_choices_the_first_learners_are_taken():
    assert choose_learners({}, lambda _l: {}, 3) == ["selftest-1", "selftest-2", "selftest-3"]
    with pytest.raises(ValueError):
        choose_learners({}, lambda _l: {}, 0)


def test_real_seeds_cover_the_real_choices(settings):
    """With as many seeds as a lab's largest choice has values, every value is drawn (course secret keyed)."""
    course = load_course(settings.course_file)
    registry = load_graders(settings.root)
    for entry in course.labs:
        if entry.status != "published":
            continue
        lab = load_lab(settings, course, entry.id, registry=registry)
        choices = env_choices(settings, lab)
        k = max((len(v) for v in choices.values()), default=1)
        learners = learners_for(settings, lab, k)
        assert len({lr.id for lr in learners}) == k
        assert uncovered(choices, learners) == [], (lab.id, [lr.params for lr in learners])


def test_plan_grades_every_learner_and_the_release_once(settings):
    lab = load_lab(settings, load_course(settings.course_file), LAB, registry=load_graders(settings.root))
    learners = [Learner("selftest-1", "s1", {}), Learner("selftest-2", "s2", {})]
    runs = [run for run, _nb in plan(lab, learners)]
    per_learner = 1 + len(lab.solutions) + len(lab.decoys)
    assert len(runs) == 2 * per_learner + 1
    assert [r.learner for r in runs if r.kind == "untouched"] == ["selftest-1"]
    only = [(r.kind, r.name) for r, _nb in plan(lab, learners, only=["untouched", lab.decoys[0].name])]
    assert only == [("untouched", "untouched"), ("decoy", lab.decoys[0].name), ("decoy", lab.decoys[0].name)]
    # decoys once: every learner's solutions, each decoy for the first learner only
    once = [(r.kind, r.name, r.learner) for r, _nb in plan(lab, learners, decoys_once=True)]
    assert len(once) == 2 * (1 + len(lab.solutions)) + 1 + len(lab.decoys)
    assert {(n, lr) for k, n, lr in once if k == "decoy"} == {(d.name, "selftest-1") for d in lab.decoys}
    assert {lr for k, _n, lr in once if k == "solution"} == {"selftest-1", "selftest-2"}


@pytest.fixture
def course_copy(tmp_path, root):
    shutil.copy(root / "course.yaml", tmp_path / "course.yaml")
    (tmp_path / "environments").mkdir()
    shutil.copytree(root / "graders", tmp_path / "graders", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(root / "labs" / LAB, tmp_path / "labs" / LAB)
    return tmp_path


def load(tmp):
    return load_lab(Settings(root=tmp, cache_dir=tmp / ".cache"), load_course(tmp / "course.yaml"), LAB,
                    registry=load_graders(tmp))


def test_a_solution_replaces_solution_cells_and_is_graded_as_one(course_copy):
    folder = course_copy / "labs" / LAB / "solutions"
    folder.mkdir(exist_ok=True)
    (folder / "zz-extra.yaml").write_text(yaml.safe_dump({"description": "d", "cells": {"persist": "pass"}}))
    lab = load(course_copy)
    sol = next(s for s in lab.solutions if s.name == "zz-extra")
    runs = plan(lab, [Learner("selftest-1", "s", {})], only=["zz-extra"])
    (run, nb), = runs
    assert run.kind == "solution"
    assert [c.source for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") == "persist"] == ["pass"]
    assert sol.spec.cells == {"persist": "pass"}


@pytest.mark.parametrize(("data", "message"), [
    ({"description": "d", "cells": {"no-such-cell": "pass"}}, "cells.no-such-cell: no solution cell"),
    ({"description": "d", "cells": {"persist": "pass"}, "must_fail": ["default-deny"]}, "must_fail"),
    ({"cells": {"persist": "pass"}}, "description"),
])
def test_a_bad_solution_file_names_file_and_field(course_copy, data, message):
    folder = course_copy / "labs" / LAB / "solutions"
    folder.mkdir(exist_ok=True)
    (folder / "zz-bad.yaml").write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError) as exc:
        load(course_copy)
    assert f"labs/{LAB}/solutions/zz-bad.yaml" in str(exc.value)
    assert message in str(exc.value)


def test_seed_counts_take_a_default_and_per_lab_counts():
    from ladderlab.cli import _seed_counts

    labs = {LAB, "sre-5-strace-debugging"}
    assert _seed_counts(["1"], labs) == (1, {})
    assert _seed_counts(["2", "sre-5-strace-debugging=4"], labs) == (2, {"sre-5-strace-debugging": 4})
    assert _seed_counts([f"{LAB}=3", "5"], labs) == (5, {LAB: 3})


@pytest.mark.parametrize("given, said", [
    ("0", "at least 1"), ("x", "whole number"), ("sre-5-strace-debugging=0", "at least 1"),
    ("nope-lab=2", "nope-lab is not among the labs tested"), ("=2", "whole number"),
])
def test_bad_seed_counts_are_refused_with_what_was_given(given, said):
    from ladderlab.cli import _seed_counts
    from ladderlab.errors import UsageError

    with pytest.raises(UsageError) as err:
        _seed_counts([given], {LAB, "sre-5-strace-debugging"})
    assert f"--seeds {given}" in str(err.value) and said in str(err.value)


def test_a_decoy_must_fail_its_checks_and_may_fail_only_those_it_names(settings):
    """``must_fail`` must all fail; beyond them only ``may_fail`` may (a timing-dependent consequence)."""
    from ladderlab.grading.pipeline import CheckOutcome, GradeReport
    from ladderlab.grading.selftest import Run

    lab = load_lab(settings, load_course(settings.course_file), LAB, registry=load_graders(settings.root))
    ids = [c.id for c in lab.checks]

    def run(failed, may=()):
        checks = [CheckOutcome(c.id, 0 if c.id in failed else c.spec.points, c.spec.points, c.id not in failed, "")
                  for c in lab.checks]
        r = Run("decoy", "d", must_fail=[ids[0]], may_fail=list(may))
        r.report = GradeReport(LAB, "x", 0.0, lab.max_score, False, checks)  # below the pass mark
        return r.verdict(lab)

    assert run({ids[0]})
    assert not run({ids[0], ids[1]})               # an extra failure nobody declared
    assert run({ids[0], ids[1]}, may=[ids[1]])     # declared as a possible consequence: failing
    assert run({ids[0]}, may=[ids[1]])             # or passing
    assert not run({ids[1]}, may=[ids[1]])          # the violation's own check must fail


@pytest.mark.parametrize(("outcomes", "attempts", "ok"), [
    (["error", "graded"], 2, True),              # could not judge once: graded again, the verdict counts
    (["raise", "error", "graded"], 3, True),
    (["error", "error", "error"], 3, False),     # never judged: the self-test fails, after ATTEMPTS gradings
    (["failed"], 1, False),                      # a verdict is never graded again
])
def test_a_grading_that_could_not_judge_is_graded_again_and_a_verdict_never(settings, monkeypatch, outcomes, attempts,
                                                                            ok):
    from ladderlab.grading import selftest as st
    from ladderlab.grading.pipeline import CheckOutcome, GradeReport

    lab = load_lab(settings, load_course(settings.course_file), LAB, registry=load_graders(settings.root))
    given = iter(outcomes)

    def fake_grade(settings, client, lab_, nb, learner):
        what = next(given)
        if what == "raise":
            raise RuntimeError("the environment did not start")
        status = {"error": "error", "graded": "passed", "failed": "failed"}[what]
        checks = [CheckOutcome(c.id, c.spec.points if status == "passed" else 0, c.spec.points, status == "passed",
                               "the machine is overloaded" if status == "error" else "", status) for c in lab.checks]
        score = lab.max_score if status == "passed" else 0.0
        return GradeReport(LAB, learner, score, lab.max_score, status == "passed", checks), None

    monkeypatch.setattr(st, "grade", fake_grade)
    paused: list[float] = []
    monkeypatch.setattr(st.time, "sleep", paused.append)
    monkeypatch.setattr(st, "plan", lambda lab_, learners, only, decoys_once: [(st.Run("solution", "notebook"), {})])
    monkeypatch.setattr(st, "learners_for", lambda settings_, lab_, k: [])
    said: list[str] = []
    [result] = st.selftest(settings, None, [lab], jobs=1, say=said.append)  # type: ignore[arg-type]
    [run] = result.runs
    assert run.attempts == attempts and run.verdict(lab) is ok and run.to_json(lab)["attempts"] == attempts
    assert sum("could not be judged, graded again" in line for line in said) == attempts - 1, said
    assert next(given, None) is None, "every outcome given was graded"
    assert paused == [st.RETRY_PAUSE_S * k for k in range(1, attempts)], "a longer pause before each new attempt"


def test_decoys_once_names_every_lab_or_some_and_refuses_a_lab_not_tested():
    from ladderlab.cli import ALL_LABS, _decoys_once
    from ladderlab.errors import UsageError

    labs = [LAB, "sre-5-strace-debugging"]
    assert _decoys_once([], labs) == set()
    assert _decoys_once([ALL_LABS], labs) == set(labs)
    assert _decoys_once([LAB], labs) == {LAB}
    with pytest.raises(UsageError, match="--decoys-once nope-lab: not one of the labs under test"):
        _decoys_once([LAB, "nope-lab"], labs)


def test_the_gradings_are_interleaved_each_lab_spread_over_the_run_in_its_own_order():
    from types import SimpleNamespace

    from ladderlab.grading.selftest import interleave

    def lab(lab_id):
        return SimpleNamespace(id=lab_id)

    work = [(lab("slow"), f"slow{i}", None) for i in range(4)] + [(lab("fast"), f"fast{i}", None) for i in range(2)]
    order = [run for _, run, _ in interleave(work, ["slow", "fast"])]
    assert sorted(order) == sorted(run for _, run, _ in work), "every grading, once"
    assert order == ["slow0", "fast0", "slow1", "slow2", "fast1", "slow3"]
    # ties go to the lab named first; a lab not named comes after those that are
    assert [run for _, run, _ in interleave(work, ["fast"])][:2] == ["fast0", "slow0"]
