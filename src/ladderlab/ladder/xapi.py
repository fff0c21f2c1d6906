"""xAPI statements for graded attempts (one per evidence entry, automatic or manual), for a learning record store."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable
from typing import Any

from ladderlab.course import Course
from ladderlab.ladder.evidence import Entry

PASSED = {"id": "http://adlnet.gov/expapi/verbs/passed", "display": {"en-US": "passed"}}
FAILED = {"id": "http://adlnet.gov/expapi/verbs/failed", "display": {"en-US": "failed"}}
ASSESSMENT = "http://adlnet.gov/expapi/activities/assessment"
NAMESPACE = uuid.UUID("6f1f5d2c-8a55-4d2e-9a53-6c1b0f7e2f11")


def statement(course: Course, entry: Entry) -> dict[str, Any]:
    e = entry.evidence
    titles = {lab.id: lab.title for lab in course.labs}
    out: dict[str, Any] = {
        "id": str(uuid.uuid5(NAMESPACE, entry.hash)),  # stable: re-exporting sends the same statement
        "actor": {"objectType": "Agent", "account": {"homePage": f"urn:ladderlab:{course.id}", "name": e.learner}},
        "verb": PASSED if e.passed else FAILED,
        "object": {"objectType": "Activity", "id": f"urn:ladderlab:{course.id}:lab:{e.lab}",
                   "definition": {"type": ASSESSMENT, "name": {"en-US": titles.get(e.lab, e.lab)}}},
        "result": {"success": e.passed, "completion": True,
                   "score": {"raw": e.score, "min": 0, "max": e.max_score,
                             "scaled": round(e.score / e.max_score, 4) if e.max_score else 0}},
        "timestamp": e.recorded_at,
        "context": {"extensions": {
            "urn:ladderlab:evidence": {"seq": entry.seq, "hash": entry.hash},
            "urn:ladderlab:checks": [{"id": c.id, "passed": c.passed, "points": c.points} for c in e.checks],
            "urn:ladderlab:seed": e.seed, "urn:ladderlab:submission": e.submission_hash,
            "urn:ladderlab:kind": e.kind}},
    }
    if e.rubric is not None:  # a manual grade: the grader is the statement's instructor
        context: dict[str, Any] = out["context"]
        context["instructor"] = {"objectType": "Agent", "account": {"homePage": f"urn:ladderlab:{course.id}",
                                                                    "name": e.rubric.grader}}
        context["extensions"]["urn:ladderlab:rubric"] = {"version": e.rubric.version, "cell": e.rubric.cell,
                                                         "pass_points": e.rubric.pass_points,
                                                         "criteria": e.rubric.criteria}
    return out


def lines(course: Course, entries: Iterable[Entry]) -> str:
    return "".join(json.dumps(statement(course, e), sort_keys=True) + "\n" for e in entries)
