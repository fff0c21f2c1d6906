"""Hostile data crossing to the trusted side (issue 10, findings 4 and 6).

What the sandbox hands back (the executed notebook, the answers) and what a
check reads from a learner's host are the learner's: a forged notebook in an
old format, answers nested a hundred thousand levels deep, a 4 GB sparse
file where a check reads a config. Each is graded (the learner's failure,
with one line saying why), never a crash and never a runaway read.
"""

from __future__ import annotations

import copy
import resource
import time

import pytest
from nbformat.v4 import new_code_cell

from ladderlab.course import load_course
from ladderlab.course.labs import load_lab
from ladderlab.grading.checks import load_graders
from ladderlab.grading.pipeline import grade

LAB = "sec-1-iptables-hardening"

FORGE_OLD_NOTEBOOK = r'''
import json, os
old = {"nbformat": 3, "nbformat_minor": 0, "metadata": {}, "worksheets": [{"cells": [
    {"cell_type": "code", "input": "print(1)", "outputs": [{"output_type": "pyout", "text": "10"}]}]}]}
with open("/work/out.ipynb.tmp", "w") as fh:
    json.dump(old, fh)
os.replace("/work/out.ipynb.tmp", "/work/out.ipynb")
import time; time.sleep(30)
'''

DEEP_ANSWERS = r'''
with open("/work/answers.json", "w") as fh:
    fh.write("[" * 30000 + "]" * 30000)
'''

SPARSE_RULES = 'lab.sh("target", "truncate -s 4G /etc/iptables/rules.v4", check=True)'


@pytest.fixture(scope="module")
def lab(settings):
    return load_lab(settings, load_course(settings.course_file), LAB, registry=load_graders(settings.root))


def with_cell(lab, code):
    """The solution, then ``code`` as the learner's last cell."""
    nb = copy.deepcopy(lab.source)
    nb.cells.append(new_code_cell(code))
    return nb


def test_a_forged_notebook_in_an_old_format_is_the_learners_failure(images, client, settings, lab):
    report, graded = grade(settings, client, lab, with_cell(lab, FORGE_OLD_NOTEBOOK), "forger-v3")
    assert report.status == "graded", report.to_json()
    assert any("not an nbformat 4 notebook" in p for p in report.problems), report.problems
    # the forged outputs never reach the graded notebook
    assert not any(o.get("text") == "10" for c in graded.cells for o in c.get("outputs", []))


def test_answers_nested_too_deep_are_dropped_not_a_crash(images, client, settings, lab):
    report, _ = grade(settings, client, lab, with_cell(lab, DEEP_ANSWERS), "deep-answers")
    assert report.status == "graded", report.to_json()
    assert any("nests deeper than" in p for p in report.problems), report.problems
    assert report.passed  # the work itself was done; the junk answers are simply not answers


def test_a_sparse_4gb_file_where_a_check_reads_is_read_no_further_than_the_limit(images, client, settings, lab):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.monotonic()
    report, _ = grade(settings, client, lab, with_cell(lab, SPARSE_RULES), "sparse-4g")
    took = time.monotonic() - t0
    grew_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert report.status == "graded" and not report.passed, report.to_json()
    persisted = next(c for c in report.checks if c.id == "rules-persisted")
    assert persisted.status == "failed" and ("over the limit" in persisted.feedback or "stopped" in persisted.feedback)
    assert grew_mib < 200, f"the grader's memory grew by {grew_mib:.0f} MiB"
    assert took < 120, f"grading took {took:.0f}s"
