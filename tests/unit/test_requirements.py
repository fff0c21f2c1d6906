"""The requirements audit of every published lab (no Docker).

Each lab.yaml lists the requirements its notebook's instructions state and the checks that judge each one.
Here, for every published lab:

* every check serves some requirement, and every graded requirement names at least one check;
* every graded requirement has at least one decoy that violates it (``violates: <id>``) and whose
  ``must_fail`` lies within that requirement's checks: the decoy breaks that requirement only;
* a requirement that cannot be judged from outside (``graded: false``) is marked "not graded" in the notebook;
* every check has at least one hint, and the lab has at least one other correct solution (``solutions/``).

That the decoys are really rejected and the solutions really graded full is the self-test's part
(``tests/labs/test_selftest.py``, Docker).
"""

from __future__ import annotations

import pytest

from ladderlab.config import Settings
from ladderlab.course import load_course
from ladderlab.course.labs import LabDef, load_lab
from ladderlab.grading.checks import load_graders
from tests.conftest import ROOT


def _published(settings: Settings) -> list[str]:
    return [lab.id for lab in load_course(settings.course_file).labs if lab.status == "published"]


PUBLISHED = _published(Settings.from_env(ROOT))


@pytest.fixture(scope="module")
def registry(settings):
    return load_graders(settings.root)


@pytest.fixture(params=PUBLISHED)
def lab(request, settings, registry) -> LabDef:
    return load_lab(settings, load_course(settings.course_file), request.param, registry=registry)


def test_there_are_published_labs():
    assert PUBLISHED


def test_every_check_serves_a_requirement(lab):
    assert lab.spec.requirements, f"{lab.id}: lab.yaml lists no requirements"
    served = {c for r in lab.spec.requirements for c in r.checks}
    assert set(lab.spec.checks) - served == set(), f"{lab.id}: checks judging no stated requirement"


def test_every_graded_requirement_has_a_check(lab):
    for req in lab.spec.requirements:
        if req.graded:
            assert req.checks, f"{lab.id}: requirement {req.id} has no check"
            assert set(req.checks) <= set(lab.spec.checks), (lab.id, req.id)


def test_every_graded_requirement_has_a_decoy_violating_only_it(lab):
    by_req: dict[str, list[str]] = {}
    for decoy in lab.decoys:
        if decoy.spec.violates is None:
            continue
        req = next(r for r in lab.spec.requirements if r.id == decoy.spec.violates)
        assert req.graded, f"{lab.id}: decoy {decoy.name} violates {req.id}, which is not graded"
        outside = set(decoy.spec.must_fail) - set(req.checks)
        assert not outside, (f"{lab.id}: decoy {decoy.name} violates {req.id} but must fail {sorted(outside)}, "
                             f"which judge other requirements")
        by_req.setdefault(req.id, []).append(decoy.name)
    missing = [r.id for r in lab.spec.requirements if r.graded and r.id not in by_req]
    assert missing == [], f"{lab.id}: graded requirements with no decoy violating only them"


def test_ungraded_requirements_say_so_in_the_notebook(lab):
    markdown = "\n".join(c.source for c in lab.source.cells if c.cell_type == "markdown").lower()
    for req in lab.spec.requirements:
        if not req.graded:
            assert "not graded" in markdown, f"{lab.id}: {req.id} is graded: false, the notebook must say so"


def test_every_check_has_a_hint(lab):
    bare = [cid for cid, spec in lab.spec.checks.items() if not spec.hints]
    assert bare == [], f"{lab.id}: checks without hints"


def test_hints_never_give_a_seeded_value_away(lab, settings):
    """A hint is the same text for every learner: it may name a parameter, never hold a value drawn for one."""
    from ladderlab.environments.runtime import load_spec

    params = load_spec(settings, lab.environment).params
    for cid, spec in lab.spec.checks.items():
        for hint in spec.hints:
            assert "{" not in hint or not any(f"{{{p}}}" in hint for p in params), (lab.id, cid, hint)


def test_every_lab_has_another_correct_solution(lab):
    assert lab.solutions, f"{lab.id}: no solutions/*.yaml (a correct solution in another style)"
    sources = {gid: lab.source_cell(gid).source for s in lab.solutions for gid in s.spec.cells}
    for s in lab.solutions:
        assert any(code.strip() != sources[gid].strip() for gid, code in s.spec.cells.items()), \
            f"{lab.id}: solution {s.name} is the source notebook's"
