"""What the learner can put in a notebook must not change a verdict (no Docker here).

``prepare`` rebuilds the notebook to grade from the instructor's source; the
sandbox never sees a check cell; only sanitised outputs of learner cells come
back; verdicts are written in the form nbgrader scores. The same paths run for
real in tests/integration/test_grading.py."""

from __future__ import annotations

import copy

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_output

from ladderlab.course import load_course
from ladderlab.course.labs import AnswerSpec, is_check_cell, load_lab, nbg
from ladderlab.grading.checks import load_graders
from ladderlab.grading.pipeline import (
    CheckOutcome,
    clean_answers,
    learner_part,
    merge_outputs,
    prepare,
    sanitize_outputs,
    write_verdict,
)

LAB = "sec-1-iptables-hardening"


@pytest.fixture(scope="module")
def lab(settings):
    return load_lab(settings, load_course(settings.course_file), LAB, registry=load_graders(settings.root))


def trusted_checks(nb):
    return {nbg(c)["grade_id"]: c.source for c in nb.cells if is_check_cell(c)}


def test_prepare_restores_every_check_cell_whatever_the_learner_did(lab):
    expected = {c.grade_id: lab.source_cell(c.grade_id).source for c in lab.checks}
    nb = copy.deepcopy(lab.source)
    cells = nb.cells
    by_gid = {nbg(c).get("grade_id"): c for c in cells}
    by_gid["check-default-deny"].source = 'print("\u2713 default-deny")\n2'          # edited source
    by_gid["check-ssh-http-allowed"].metadata["nbgrader"]["points"] = 100           # edited points
    by_gid["check-loopback-allowed"].cell_type = "markdown"                         # changed type
    by_gid["check-loopback-allowed"].pop("outputs")
    by_gid["check-loopback-allowed"].pop("execution_count")
    by_gid["check-metrics-monitor-only"].metadata["tags"] = ["raises-exception", "skip"]
    cells.remove(by_gid["check-rules-persisted"])                                   # deleted
    del by_gid["check-unwanted-port-closed"].metadata["nbgrader"]                   # stripped metadata
    fake = new_code_cell("print(10)")                                               # a grade cell of its own
    fake.metadata["nbgrader"] = {"grade": True, "grade_id": "check-bonus", "points": 50, "solution": False,
                                 "locked": True, "schema_version": 3}
    dup = copy.deepcopy(by_gid["check-established-allowed"])                        # duplicated
    dup.source = "pass"
    cells.insert(3, dup)
    cells.append(fake)
    ready = prepare(lab, nb)
    assert trusted_checks(ready) == expected
    points = {nbg(c)["grade_id"]: nbg(c)["points"] for c in ready.cells if is_check_cell(c)}
    assert points == {c.grade_id: c.spec.points for c in lab.checks}
    assert all(nbg(c).get("grade_id") != "check-bonus" for c in ready.cells)
    assert sum(1 for c in ready.cells if nbg(c).get("grade_id") == "check-established-allowed") == 1


def test_a_learner_cannot_turn_an_answer_cell_into_a_grade_cell(lab):
    nb = copy.deepcopy(lab.source)
    for c in nb.cells:
        if nbg(c).get("grade_id") == "persist":
            c.metadata["nbgrader"].update({"grade": True, "points": 99})
            c.source = "print('my work')"
    ready = prepare(lab, nb)
    cell = next(c for c in ready.cells if nbg(c).get("grade_id") == "persist")
    assert nbg(cell)["grade"] is False and "points" not in nbg(cell)
    assert cell.source == "print('my work')"  # the learner's work stays theirs


def test_the_sandbox_never_sees_a_check_cell(lab):
    ready = prepare(lab, lab.source)
    learner_nb, positions = learner_part(ready)
    assert not any(is_check_cell(c) for c in learner_nb.cells)
    assert not any("lab.check(" in c.source for c in learner_nb.cells if c.cell_type == "code")
    assert [ready.cells[i].source for i in positions] == [c.source for c in learner_nb.cells]


def test_only_sanitised_outputs_of_learner_cells_come_back(lab):
    ready = prepare(lab, lab.source)
    learner_nb, positions = learner_part(ready)
    executed = copy.deepcopy(learner_nb)
    for c in executed.cells:
        if c.cell_type == "code":
            c.outputs = [new_output("display_data", data={"text/html": "<script>steal()</script>",
                                                          "application/javascript": "steal()",
                                                          "text/plain": "fine"}),
                         new_output("stream", name="stdout", text="x" * 100_000)]
            c.execution_count = 7
    executed.cells[0].metadata["nbgrader"] = {"grade": True, "points": 99}   # ignored: only outputs cross
    executed.cells[0].source = "evil"
    merge_outputs(ready, positions, executed)
    for i in positions:
        cell = ready.cells[i]
        if cell.cell_type != "code":
            continue
        kinds = [list(o.get("data", {})) for o in cell.outputs if o.output_type == "display_data"]
        assert kinds == [["text/plain"]]
        assert "[output truncated]" in cell.outputs[1].text and len(cell.outputs[1].text) < 70_000
    assert ready.cells[0].source == lab.source.cells[0].source
    assert "points" not in nbg(ready.cells[0])
    # a notebook with a different shape is not merged at all
    fresh = prepare(lab, lab.source)
    executed.cells.append(new_markdown_cell("extra"))
    merge_outputs(fresh, positions, executed)
    assert all(not c.get("outputs") for c in fresh.cells if c.cell_type == "code")


def test_sanitize_drops_malformed_outputs():
    assert sanitize_outputs("nope") == []
    assert sanitize_outputs([{"output_type": "stream", "name": "stdin", "text": "x"}, 3,
                             {"output_type": "error", "ename": "E", "evalue": "v", "traceback": [1, "t"]}]) == \
        [new_output("error", ename="E", evalue="v", traceback=["t"])]


@pytest.mark.parametrize(("passed", "points", "expected"), [(True, 2.0, 2.0), (False, 0.0, 0.0), (False, 0.5, 0.5)])
def test_verdicts_are_written_in_the_form_nbgrader_scores(passed, points, expected):
    from nbgrader.utils import determine_grade

    cell = new_code_cell('lab.check("x")')
    cell.metadata["nbgrader"] = {"grade": True, "solution": False, "points": 2, "grade_id": "check-x",
                                 "locked": True, "schema_version": 3}
    write_verdict(cell, CheckOutcome("x", points, 2.0, passed, "feedback line"))
    assert determine_grade(cell) == (expected, 2.0)
    nbformat.validate(nbformat.v4.new_notebook(cells=[cell]))


def test_answers_are_only_the_declared_ones_of_the_declared_type():
    declared = {"errno": AnswerSpec(type="choice", choices=["ENOENT", "EACCES"]),
                "port": AnswerSpec(type="int"), "path": AnswerSpec(type="text", max_length=10)}
    raw = {"errno": "ENOENT", "port": True, "path": "x" * 11, "extra": "1"}
    assert clean_answers(raw, declared) == {"errno": "ENOENT"}
    assert clean_answers({"errno": "EPERM", "port": 8, "path": "/a"}, declared) == {"port": 8, "path": "/a"}


def test_the_operators_cell_limit_lowers_a_labs_never_raises_it(monkeypatch, settings, lab):
    from ladderlab.config import Settings
    from ladderlab.errors import UsageError
    from ladderlab.grading.sandbox import Sandbox

    own = lab.spec.sandbox.cell_timeout
    assert own == 60
    monkeypatch.delenv("LADDERLAB_MAX_CELL_TIMEOUT", raising=False)
    assert Settings.from_env(settings.root).max_cell_timeout is None
    for raw, limit in (("", own), ("7", 7.0), (" 2.5 ", 2.5), (str(own + 1), own)):
        monkeypatch.setenv("LADDERLAB_MAX_CELL_TIMEOUT", raw)
        box = Sandbox(Settings.from_env(settings.root), None, lab.spec.sandbox)  # type: ignore[arg-type]
        assert box.limits.cell_timeout == limit, raw
        assert box.limits.model_dump(exclude={"cell_timeout"}) == lab.spec.sandbox.model_dump(exclude={"cell_timeout"})
    assert lab.spec.sandbox.cell_timeout == own  # the lab's own spec is left as it was
    for raw in ("0", "0.5", "-3", "soon"):
        monkeypatch.setenv("LADDERLAB_MAX_CELL_TIMEOUT", raw)
        with pytest.raises(UsageError, match="LADDERLAB_MAX_CELL_TIMEOUT"):
            Settings.from_env(settings.root)
