"""Formative feedback: the learner's ``lab.check(...)`` while they work, in their own environment.

It evaluates the lab's *visible* checks with the same trusted context and the same checks as grading
(never the hidden ones: feedback on those would be an oracle) and decides nothing: no score, no record.

>>> for passed, check_id, text in live_feedback(settings, env, "sec-1-iptables-hardening", [], {}):  # doctest: +SKIP
...     print(line(passed, check_id, text))
✓ default-deny: INPUT drops by default
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ladderlab.config import Settings
from ladderlab.course import load_course
from ladderlab.course.labs import load_lab
from ladderlab.environments import runtime
from ladderlab.environments.images import tool_image
from ladderlab.grading.checks import is_disruptive, load_graders
from ladderlab.grading.context import LiveContext
from ladderlab.grading.marks import FAIL, PASS, line
from ladderlab.grading.pipeline import clean_answers, judge

__all__ = ["FAIL", "PASS", "line", "live_feedback"]


def live_feedback(settings: Settings, env: runtime.Environment, lab_id: str, only: list[str],
                  answers: Mapping[str, Any]) -> list[tuple[bool | None, str, str]]:
    """(passed, check id, feedback line) for each visible check named in ``only`` (all of them when empty).

    A disruptive check (one that restarts hosts) runs only when named: left out of an unnamed run, it is
    listed with ``passed`` None and how to run it.

    ValueError when ``only`` names a check that is not a visible check of the lab.
    """
    course = load_course(settings.course_file, "course.yaml")
    lab = load_lab(settings, course, lab_id, registry=load_graders(settings.root))
    visible = [c.id for c in lab.checks if not c.hidden]
    unknown = [c for c in only if c not in visible]
    if unknown:
        raise ValueError(f"no visible check {', '.join(unknown)} in this lab (checks you can run: "
                         f"{', '.join(visible)}; the others are run by the grader)")
    skipped = [] if only else [c for c in lab.checks if not c.hidden and is_disruptive(c.fn)]
    run = only or [cid for cid in visible if cid not in {c.id for c in skipped}]
    ctx = LiveContext(env, tool_image(settings, env.client, "probe"), clean_answers(answers, lab.spec.answers))
    try:
        done: dict[str, tuple[bool | None, str, str]] = {
            c.id: (v.passed, c.id, v.feedback) for c, v in judge(ctx, lab, env.params, run) if run}
    finally:
        ctx.close()
    for c in skipped:
        done[c.id] = (None, c.id, f"not run: it acts on your environment ({c.spec.title}); "
                                  f"lab.check({c.id!r}) runs it")
    return [done[c.id] for c in lab.checks if c.id in done]
